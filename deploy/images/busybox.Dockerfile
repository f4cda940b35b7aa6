# busybox:1.35 for examples/: Debian's busybox-static with every applet.
FROM scratch
COPY bin/ /bin/
ENV PATH=/bin
CMD ["sh"]
