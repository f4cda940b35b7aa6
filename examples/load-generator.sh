#!/bin/sh
# The book's load generator (`while true; do wget -q -O- http://php-apache; done`), run from
# the host: Skiff has no Service virtual IPs or cluster DNS yet, so the requests go through the
# API server's Service proxy, which spreads them over the Service's ready endpoints.
# Usage: examples/load-generator.sh [SECONDS] [PARALLEL]   (default 60 s, 2 streams)
set -eu
seconds=${1:-60}
parallel=${2:-2}
kubectl=${KUBECTL:-kubectl}
path=/api/v1/namespaces/${NAMESPACE:-default}/services/php-apache:80/proxy/cgi-bin/burn
end=$(( $(date +%s) + seconds ))
i=0
while [ "$i" -lt "$parallel" ]; do
  (
    while [ "$(date +%s)" -lt "$end" ]; do
      $kubectl get --raw "$path" >/dev/null 2>&1 || sleep 0.2
    done
  ) &
  i=$((i + 1))
done
wait
echo "load generator: ${parallel} streams for ${seconds}s done"
