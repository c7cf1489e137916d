#!/usr/bin/env bash
# Release artifacts from a built binary (`make dist` builds it first):
#   dist/aks-flex-node-<version>-linux-<arch>.tar.gz   aks-flex-node-<version>-linux-<arch>/{aks-flex-node,
#                                                      aks-flex-node-agent.service, README.md, install.sh,
#                                                      uninstall.sh[, LICENSE]}
#   dist/SHA256SUMS                                    sha256sum format, every tarball in dist/
#   dist/VERSION                                       the version, served as latest/download/VERSION
# Usage: packaging/dist.sh [RUST_TARGET]   (default: the host's; e.g. aarch64-unknown-linux-gnu)
# A glibc build whose newest GLIBC_ symbol version is above GLIBC_FLOOR (default 2.35, Ubuntu 22.04) is
# refused: it would not start on the oldest distribution we support.
set -euo pipefail

top="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$top"
target="${1:-}"
floor="${GLIBC_FLOOR:-2.35}"

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
[ -n "$version" ] || { echo "error: no version in Cargo.toml" >&2; exit 1; }

triple="${target:-$(rustc -vV | sed -n 's/^host: //p')}"
case "$triple" in
  x86_64-*) arch=amd64 ;;
  aarch64-*) arch=arm64 ;;
  *) echo "error: no release architecture for $triple" >&2; exit 1 ;;
esac
bin="target/${target:+$target/}release/aks-flex-node"
[ -x "$bin" ] || { echo "error: $bin is missing: cargo build --release -p aks-flex-node${target:+ --target $target}" >&2; exit 1; }

case "$triple" in
  *-musl) echo "libc: musl, statically linked" ;;
  *)
    objdump_cmd=objdump
    [ "$arch" = amd64 ] || objdump_cmd=aarch64-linux-gnu-objdump
    command -v "$objdump_cmd" >/dev/null || { echo "error: $objdump_cmd is missing (binutils)" >&2; exit 1; }
    need="$("$objdump_cmd" -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)"
    echo "libc: glibc, needs GLIBC_$need or newer (floor GLIBC_$floor)"
    if [ "$(printf '%s\n%s\n' "$need" "$floor" | sort -V | tail -1)" != "$floor" ]; then
      echo "error: $bin needs glibc $need, newer than the floor $floor: build on an older distribution or for musl" >&2
      exit 1
    fi
    ;;
esac

name="aks-flex-node-$version-linux-$arch"
stage="$(mktemp -d "${TMPDIR:-/tmp}/aks-flex-node-dist.XXXXXXXX")"
trap 'rm -rf "$stage"' EXIT
mkdir "$stage/$name"
install -m 0755 "$bin" "$stage/$name/aks-flex-node"
install -m 0644 packaging/aks-flex-node-agent.service README.md "$stage/$name/"
install -m 0755 scripts/install.sh scripts/uninstall.sh "$stage/$name/"
[ ! -f LICENSE ] || install -m 0644 LICENSE "$stage/$name/"

# Reproducible: fixed owner, order and time (the last commit's), no gzip timestamp.
mtime="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
mkdir -p dist
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -C "$stage" -cf - "$name" |
  gzip -9n >"dist/$name.tar.gz.tmp"
mv -f "dist/$name.tar.gz.tmp" "dist/$name.tar.gz"
(cd dist && sha256sum -- *.tar.gz >SHA256SUMS.tmp && mv -f SHA256SUMS.tmp SHA256SUMS)
printf '%s\n' "$version" >dist/VERSION
echo "wrote dist/$name.tar.gz"
cat dist/SHA256SUMS
