# skiff/pause: the pod sandbox of the Docker runtime (holds the pod's network namespace).
FROM scratch
COPY skiff-pause /pause
ENTRYPOINT ["/pause"]
