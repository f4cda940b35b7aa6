#!/usr/bin/env bash
# Build every image the compose stack uses, offline: static binaries (glibc, +crt-static) and
# images on an empty base. Nothing is pulled; only the optional Grafana service (a compose
# profile) needs a registry.
#
#   deploy/build-images.sh                      # release build, tag = the crate version
#   SKIFF_BUILD_PROFILE=dev-image deploy/build-images.sh   # quicker build (the compose test)
#
# Images: skiff/skiffd, skiff/node, skiff/pause, skiff/prometheus (all :$SKIFF_VERSION) and
# busybox:1.35 (for examples/). Needs: cargo, docker, /bin/busybox (Debian's busybox-static)
# and /usr/bin/prometheus (Debian's prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${SKIFF_BUILD_PROFILE:-release}"
version="${SKIFF_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}"
target="$(uname -m)-unknown-linux-gnu"
target_dir="${CARGO_TARGET_DIR:-target}"

for tool in docker cargo; do
  command -v "$tool" >/dev/null || { echo "build-images: $tool is not on the PATH" >&2; exit 1; }
done
for file in /bin/busybox /usr/bin/prometheus; do
  [ -x "$file" ] || { echo "build-images: $file is missing (apt-get install busybox-static prometheus)" >&2; exit 1; }
done

echo "== static binaries ($profile, $target)"
# --target keeps these flags off build scripts and proc macros, which run on the host.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --locked --profile "$profile" --target "$target" \
  -p skiffd -p skiff-cli -p skiff-pause
profile_dir="$profile"
[ "$profile" = dev ] && profile_dir=debug
bin="$target_dir/$target/$profile_dir"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
images=deploy/images

# One build context per image, holding only what that image copies.
build() {
  local tag="$1" dockerfile="$2" dir="$3"
  shift 3
  echo "== $tag"
  local out
  # The output only matters when the build fails (it also carries the legacy builder's notice).
  if ! out="$(docker build --pull=false -t "$tag" -f "$images/$dockerfile" "$@" "$dir" 2>&1)"; then
    echo "$out" >&2
    return 1
  fi
}

busybox_applets() {
  local dir="$1"
  mkdir -p "$dir"
  cp /bin/busybox "$dir/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/$applet"
  done
}

mkdir -p "$context/skiffd"
# Stripped: the release profile keeps line tables (hundreds of MB in skiffd).
strip_copy() {
  cp "$1" "$2"
  if command -v strip >/dev/null; then strip "$2"; fi
}
for b in skiffd skiff; do
  strip_copy "$bin/$b" "$context/skiffd/$b"
done
cp /bin/busybox "$context/skiffd/busybox"
# The label a Docker-runtime agent compares with its own executable (size and mtime, which COPY
# keeps) before importing skiff/skiffd from itself: the agents in skiff/node find this image
# current and leave it alone.
build_label="$(stat -c '%s-%Y' "$context/skiffd/skiffd")"
build "skiff/skiffd:$version" skiffd.Dockerfile "$context/skiffd" --label "dev.skiff.build=$build_label"

busybox_applets "$context/node/bin"
build "skiff/node:$version" node.Dockerfile "$context/node" --build-arg "SKIFF_VERSION=$version"

busybox_applets "$context/busybox/bin"
build busybox:1.35 busybox.Dockerfile "$context/busybox"

mkdir -p "$context/pause"
strip_copy "$bin/skiff-pause" "$context/pause/skiff-pause"
build "skiff/pause:$version" pause.Dockerfile "$context/pause"

# Prometheus: Debian's dynamically linked binary and the libraries ldd lists, at their paths.
root="$context/prometheus/rootfs"
mkdir -p "$root/usr/bin" "$root/tmp" "$root/etc"
cp /usr/bin/prometheus "$root/usr/bin/prometheus"
for lib in $(ldd /usr/bin/prometheus | grep -o '/[^ ]*'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
build "skiff/prometheus:$version" prometheus.Dockerfile "$context/prometheus"

echo "built: skiff/skiffd skiff/node skiff/pause skiff/prometheus (:$version) and busybox:1.35"
