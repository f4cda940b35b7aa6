# skiff/skiffd: the Skiff daemon (every component: `skiffd server`, `agent`, `log-collector`…)
# and the CLI, static binaries on an empty base; the log collector DaemonSet runs it. busybox is
# there for looking around. A Docker-runtime agent whose own skiffd differs re-imports this tag
# from its executable (without busybox): the compose stack runs skiff/node instead.
FROM scratch
COPY skiffd skiff /
COPY busybox /bin/busybox
ENV PATH=/
ENTRYPOINT ["/skiffd"]
