#!/usr/bin/env bash
# Installs the Debian packages the real-component tests and the demo use, when they are missing:
# containerd, runc and the CNI plugins (real binaries the tests start and the demo bundles), iproute2
# (network namespaces), iptables (the bridge plugin's masquerading), curl (benchmark floor, demo), the
# script checker that make lint and the install-script tests run, and systemd (systemd-analyze and the
# system units the install-script tests verify the agent's unit against).
# As root it installs them; otherwise it says what is missing and leaves it to you.
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iproute2 iptables curl shellcheck systemd)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "note: missing Debian packages ${missing[*]}: the tests that use them fail (make test, make e2e) and make demo will not run." >&2
  echo "      install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 0
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
