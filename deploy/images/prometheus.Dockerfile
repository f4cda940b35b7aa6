# skiff/prometheus: Debian's Prometheus binary with the shared libraries it links (the context
# holds them at their host paths).
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/usr/bin/prometheus"]
