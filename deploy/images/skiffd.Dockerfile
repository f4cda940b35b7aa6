# skiff/skiffd: the Skiff daemon (every component: `skiffd server`, `agent`, `log-collector`…)
# and the CLI, static binaries on an empty base. busybox is there for the compose healthcheck
# and for looking around (`docker-compose exec control-plane /bin/busybox sh`).
FROM scratch
COPY skiffd skiff /
COPY busybox /bin/busybox
ENV PATH=/
ENTRYPOINT ["/skiffd"]
