#!/usr/bin/env bash
# Builds, without the image hub, the local stand-ins of Flower's official images: a Debian
# bookworm root file system from the Debian package archive (debootstrap), loaded with
# `docker import`, then Python's venv with the pinned flwr from the package index and Flower's
# own entry points (docker/base.Dockerfile). Where the hub is reachable none of this is needed:
# docker/Dockerfile builds FROM flwr/superexec by default.
#   fedattack-debian:bookworm        the imported root file system (python3 3.11)
#   fedattack-flwr-base:1.42.0       + venv /python/venv with flwr, user app, WORKDIR /app
#   fedattack-superlink:1.42.0       ENTRYPOINT flower-superlink
#   fedattack-supernode:1.42.0       ENTRYPOINT flower-supernode
#   fedattack-superexec-base:1.42.0  ENTRYPOINT flower-superexec (BASE_IMAGE of docker/Dockerfile)
# Images that exist are kept (pass -f to rebuild the root file system as well).
# Usage: docker/build-base.sh [-f] [-m DEBIAN_MIRROR]
# Needs root (debootstrap), debootstrap and a running docker engine.
set -euo pipefail
cd "$(dirname "$0")/.."

FLWR_VERSION=1.42.0
DEBIAN_IMAGE=fedattack-debian:bookworm
mirror=http://deb.debian.org/debian force=0
while getopts "fm:h" opt; do
  case $opt in
    f) force=1 ;;
    m) mirror=$OPTARG ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
docker info >/dev/null 2>&1 || { echo "error: no docker engine answers (start dockerd)" >&2; exit 2; }
# Both runners the way a 2-core machine shared with others wants them.
slow() { nice -n 10 ionice -c 3 "$@"; }

start=$SECONDS
if [ "$force" = 1 ] || ! docker image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root" >&2; exit 2; }
  rootfs=$(mktemp -d /var/tmp/fedattack-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap bookworm from $mirror into $rootfs"
  slow debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" > "$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  # What the image never needs: apt's package lists and caches.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | slow docker import -c 'CMD ["/bin/bash"]' - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs"; trap - EXIT
  echo "imported $DEBIAN_IMAGE after $((SECONDS - start)) s"
fi

# The build context: the host's CA bundle (the package index's certificate chain verifies with
# it, not with Debian's inside a container here) and the base Dockerfile.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp docker/base.Dockerfile "$context/Dockerfile"
cp /etc/ssl/certs/ca-certificates.crt "$context/ca-certificates.crt"
for target in superlink supernode superexec; do
  tag=fedattack-$target:$FLWR_VERSION
  [ "$target" = superexec ] && tag=fedattack-superexec-base:$FLWR_VERSION
  slow docker build -q --target "$target" --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
    --build-arg FLWR_VERSION="$FLWR_VERSION" -t "$tag" "$context" >/dev/null
  echo "built $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
done
echo "base images ready after $((SECONDS - start)) s"
