#!/usr/bin/env bash
# Builds the node's root filesystem once: a debootstrapped Debian bookworm (minbase) with systemd as init,
# D-Bus, and what a plain Ubuntu/Debian server has that the agent relies on (iptables, iproute2, mount,
# ca-certificates). No kmod on purpose: the host kernel has overlay and br_netfilter built in, and the agent
# must cope with a missing modprobe. Cached as a tarball keyed by this script's contents, so only a fresh
# machine (or a change here) pays for it (~2 min). Prints the tarball's path on stdout.
set -euo pipefail
cache=${E2E_CACHE:-/var/cache/aks-flex-node-e2e}
log() { printf 'e2e: %s\n' "$*" >&2; }
pkgs=systemd,systemd-sysv,dbus,iptables,iproute2,mount,ca-certificates,procps,util-linux
key=$( (cat "$0"; echo "$pkgs") | sha256sum | cut -c1-12)
out="$cache/rootfs-bookworm-$key.tar"
if [ -s "$out" ]; then echo "$out"; exit 0; fi
command -v debootstrap >/dev/null || { log "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
log "debootstrapping the node's rootfs (first time only, ~2 min)"
start=$SECONDS
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
debootstrap --variant=minbase --include="$pkgs" bookworm "$tmp/root" http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1 ||
  { tail -n 20 "$tmp/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
r=$tmp/root
# A machine identity and a hostname of its own; no getty on the console (nspawn runs it headless).
: >"$r/etc/machine-id"
echo flex-e2e-node >"$r/etc/hostname"
ln -sf /dev/null "$r/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$r/etc/systemd/system/getty@.service"
# The host's network is shared (no --private-network): nothing inside may manage it.
ln -sf /dev/null "$r/etc/systemd/system/systemd-networkd.service"
ln -sf /dev/null "$r/etc/systemd/system/systemd-resolved.service"
rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"*
tar -C "$r" --numeric-owner -cf "$out.tmp" .
mv "$out.tmp" "$out"
log "rootfs ready in $((SECONDS - start)) s: $out"
echo "$out"
