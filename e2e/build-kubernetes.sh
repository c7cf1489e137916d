#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kubectl from Debian's
# `kubernetes` source package with Debian's Go, offline, and the pause binary from the same source.
# The result is cached by source version under $E2E_CACHE/kubernetes/<version>/bin, so only a fresh
# machine pays for the build (~10-18 min on 2 cores). Prints the bin directory on stdout.
set -euo pipefail
cache=${E2E_CACHE:-/var/cache/aks-flex-node-e2e}
log() { printf 'e2e: %s\n' "$*" >&2; }

work="$cache/kubernetes-src"
mkdir -p "$work/aptsrc/lists/partial"
printf 'deb-src http://deb.debian.org/debian bookworm main\ndeb-src http://deb.debian.org/debian-security bookworm-security main\n' \
  >"$work/aptsrc/sources.list"
apto=(-o "Dir::Etc::sourcelist=$work/aptsrc/sources.list" -o Dir::Etc::sourceparts=/nonexistent
      -o "Dir::State::Lists=$work/aptsrc/lists" -o Debug::NoLocking=1)

# The version is whatever Debian's source index says, so a security update rebuilds once.
if [ ! -s "$work/aptsrc/lists/version" ] || [ -n "$(find "$work/aptsrc/lists/version" -mmin +1440 2>/dev/null)" ]; then
  apt-get "${apto[@]}" update -qq >&2
  apt-cache "${apto[@]}" showsrc kubernetes | awk '/^Version:/ {print $2}' | sort -V | tail -n1 >"$work/aptsrc/lists/version"
fi
version=$(cat "$work/aptsrc/lists/version")
[ -n "$version" ] || { log "could not find Debian's kubernetes source version"; exit 1; }
out="$cache/kubernetes/$version"
want=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl pause)
ok=1
for b in "${want[@]}"; do [ -x "$out/bin/$b" ] || ok=0; done
if [ "$ok" = 1 ]; then echo "$out/bin"; exit 0; fi

log "building Kubernetes $version from Debian's source (cold cache: ~10-18 min on 2 cores)"
start=$SECONDS
src="$work/build"
rm -rf "$src" && mkdir -p "$src"
( cd "$src" && apt-get "${apto[@]}" source --download-only kubernetes >&2 )
dsc=$(find "$src" -maxdepth 1 -name "kubernetes_*.dsc" | head -n1)
( cd "$src" && dpkg-source -x "$dsc" k8s >&2 )
cd "$src/k8s"
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
export GOPATH=$PWD/.go CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor GOCACHE="$cache/gocache"
nice -n 5 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kubectl" >&2
tmp="$out.tmp"
rm -rf "$tmp" && mkdir -p "$tmp/bin"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
  install -m 0755 "_output/bin/$b" "$tmp/bin/$b"
done
# The pause container's binary, static, so pods need no registry.
gcc -Os -static -o "$tmp/bin/pause" build/pause/linux/pause.c
strip "$tmp/bin/pause" || true
rm -rf "$out" && mv "$tmp" "$out"
rm -rf "$src"
log "built Kubernetes $version in $((SECONDS - start)) s"
echo "$out/bin"
