#!/usr/bin/env bash
# Build the sandbox image without an image registry: debootstrap a minimal root
# file system of the host's Debian release from the host's own apt mirror, then
# `docker import` it. Sites with a registry can use the Dockerfile next to this.
#
# Usage: infra/sandbox/build-image.sh [--force] [--image NAME] [--mirror URL]
#   --force    rebuild even if the image exists (default: keep the cached one)
#   --image    image name (default: $SWITCHBOARD_SANDBOX_IMAGE or switchboard-sandbox:latest)
#   --mirror   Debian mirror URL (default: the first one in the host's apt sources)
# Needs: root, debootstrap, a running Docker daemon. Takes a few minutes once.
set -euo pipefail

image="${SWITCHBOARD_SANDBOX_IMAGE:-switchboard-sandbox:latest}"
force=0
mirror=""
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --image) image="$2"; shift ;;
    --mirror) mirror="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

packages="git,python3,python3-pip,python3-pytest,ca-certificates,patch,ripgrep,procps"
sandbox_uid=1000

if [ "$force" = 0 ] && docker image inspect "$image" >/dev/null 2>&1; then
  echo "sandbox image $image exists (use --force to rebuild)"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
docker info >/dev/null 2>&1 || { echo "no Docker daemon answers" >&2; exit 1; }

suite="$(. /etc/os-release && echo "${VERSION_CODENAME:?the host is not Debian-like}")"
if [ -z "$mirror" ]; then
  # deb822 sources first (Debian 12+), then the one-line format.
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)"
  fi
fi
[ -n "$mirror" ] || { echo "no apt mirror found; pass --mirror URL" >&2; exit 1; }

root="$(mktemp -d /tmp/switchboard-sandbox-root.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "debootstrap $suite from $mirror into $root"
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror"

chroot "$root" groupadd --gid "$sandbox_uid" sandbox
chroot "$root" useradd --uid "$sandbox_uid" --gid "$sandbox_uid" --no-create-home \
  --home-dir /tmp --shell /bin/sh sandbox
mkdir -p "$root/workspace"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/tmp/*

tar --numeric-owner -C "$root" -c . | docker import \
  --change 'USER sandbox' \
  --change 'WORKDIR /workspace' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["sleep", "infinity"]' \
  --message "switchboard sandbox: $suite minbase + $packages" \
  - "$image"
echo "built $image"
