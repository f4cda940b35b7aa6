# skiff/node: a node of the compose stack. The process runtime runs pods as processes in this
# container, so it carries busybox with every applet on the PATH (`--image-alias
# busybox=/bin/busybox` makes `image: busybox:1.35` run it).
ARG SKIFF_VERSION
FROM skiff/skiffd:${SKIFF_VERSION}
COPY bin/ /bin/
ENV PATH=/bin:/
ENTRYPOINT ["/skiffd"]
