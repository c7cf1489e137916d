#!/usr/bin/env bash
# `make demo`: bootstrap a sandbox node against the built-in Azure emulator — no Azure account, no network.
#
# What happens:
#   1. build aks-flex-node and flexnode-emulator;
#   2. start the emulator on 127.0.0.1 (Entra ID, ARM, Arc HIMDS) with its demo scenario, and put its
#      azcmagent stand-in on PATH;
#   3. build an offline artifact bundle: runc, containerd and the CNI plugins are Debian's real binaries;
#      kubelet/kubectl/kubeadm and node-problem-detector have no Debian package, so the bundle carries
#      small stand-in scripts for them, clearly marked (the sandbox records service starts, it never runs them);
#   4. `plan`, `bootstrap`, a second `bootstrap` (converged: writes nothing), then `unbootstrap`,
#      showing what changed on the sandbox root and in the emulator's Azure state at each stage.
# Everything happens under .demo/ (the sandbox root is .demo/root); nothing else on the machine changes.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
demo=$top/.demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

for p in containerd runc containernetworking-plugins; do
  if ! dpkg -s "$p" >/dev/null 2>&1; then
    echo "make demo needs Debian's $p package for real binaries: sudo apt-get install -y containerd runc containernetworking-plugins" >&2
    exit 2
  fi
done

say "building"
cargo build -q -p aks-flex-node -p azure-emulator
bin=$top/target/debug

rm -rf "$demo"
mkdir -p "$demo"/{root,bin,keys,bundle,stage}

# --- the sandbox machine: a small Ubuntu-like root with swap on ---------------------------------------
root=$demo/root
mkdir -p "$root"/{etc/sysctl.d,proc,var/lib,var/log,run}
printf 'UUID=0a1b / ext4 defaults 0 1\n/swap.img\tnone\tswap\tsw\t0\t0\n' >"$root/etc/fstab"
printf 'Filename\tType\tSize\tUsed\tPriority\n/swap.img file 2097148 0 -2\n' >"$root/proc/swaps"

# --- the emulator --------------------------------------------------------------------------------------
# The built-in demo scenario grants the service principal the roles the seed README asks for. Deleting the
# Arc machine on unbootstrap needs more (as in real Azure): add Azure Connected Machine Resource Administrator.
"$bin/flexnode-emulator" scenario --example | python3 -c '
import json, sys
s = json.load(sys.stdin)
sp = s["service_principals"][0]["object_id"]
rg = s["clusters"][0]["resource_group"]
sub = s["subscriptions"][0]["id"]
s["role_assignments"].append({"principal_id": sp, "role": "Azure Connected Machine Resource Administrator",
                              "scope": f"/subscriptions/{sub}/resourceGroups/{rg}", "name": None})
json.dump(s, sys.stdout, indent=2)' >"$demo/scenario.json"
ln -s "$bin/flexnode-emulator" "$demo/bin/azcmagent"
"$bin/flexnode-emulator" serve --listen 127.0.0.1:0 --scenario "$demo/scenario.json" --himds-key-dir "$demo/keys" \
  --request-log "$demo/requests.jsonl" >"$demo/urls.json" 2>"$demo/emulator.log" &
emu_pid=$!
trap 'kill $emu_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$demo/urls.json" ] && break; sleep 0.1; done
j() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }
arm=$(j "$demo/urls.json" "d['arm']"); login=$(j "$demo/urls.json" "d['login']")
himds=$(j "$demo/urls.json" "d['himds']"); control=$(j "$demo/urls.json" "d['control']")
echo "emulator: $arm (Entra ID, ARM and HIMDS on one loopback port)"
sc=$demo/scenario.json
tenant=$(j "$sc" "d['tenants'][0]['id']")
sub=$(j "$sc" "d['subscriptions'][0]['id']")
client_id=$(j "$sc" "d['service_principals'][0]['client_id']")
client_secret=$(j "$sc" "d['service_principals'][0]['secret']")
cluster_rg=$(j "$sc" "d['clusters'][0]['resource_group']")
cluster_name=$(j "$sc" "d['clusters'][0]['name']")

# --- the offline artifact bundle -----------------------------------------------------------------------
arch=$(dpkg --print-architecture)
k8s=1.30.6
ctd=$(dpkg-query -W -f='${Version}' containerd | sed 's/[~+-].*//')
runc_v=$(dpkg-query -W -f='${Version}' runc | sed 's/[~+-].*//')
cni=$(dpkg-query -W -f='${Version}' containernetworking-plugins | sed 's/[~+-].*//')
npd=v1.35.1
b=$demo/bundle; s=$demo/stage
cp "$(command -v runc || echo /usr/sbin/runc)" "$b/runc.$arch"
mkdir -p "$s/ctd/bin"
for f in containerd containerd-shim-runc-v2 ctr; do cp "/usr/bin/$f" "$s/ctd/bin/"; done
tar -C "$s/ctd" -czf "$b/containerd-$ctd-linux-$arch.tar.gz" bin
tar -C /usr/lib/cni -czf "$b/cni-plugins-linux-$arch-v$cni.tgz" .
standin() { # a clearly marked stand-in for a binary Debian does not ship
  printf '#!/bin/sh\n# aks-flex-node DEMO STAND-IN for %s %s (no Debian package exists); never run in the sandbox.\necho "%s"\n' "$1" "$2" "$3"
}
for k in kubelet kubectl kubeadm; do standin "$k" "v$k8s" "Kubernetes v$k8s" >"$b/$k"; chmod 755 "$b/$k"; done
mkdir -p "$s/npd/bin" "$s/npd/config"
standin node-problem-detector "$npd" "node-problem-detector $npd" >"$s/npd/bin/node-problem-detector"
chmod 755 "$s/npd/bin/node-problem-detector"
echo '{"plugin":"kmsg","logPath":"/dev/kmsg","lookback":"5m","bufferSize":10,"source":"kernel-monitor","conditions":[],"rules":[]}' >"$s/npd/config/kernel-monitor.json"
tar -C "$s/npd" -czf "$b/node-problem-detector-$npd-linux_$arch.tar.gz" bin config
python3 - "$b" "$arch" "$k8s" "$ctd" "$runc_v" "$cni" "$npd" <<'PY'
import hashlib, json, os, sys
b, arch, k8s, ctd, runc, cni, npd = sys.argv[1:]
entries = [("runc", runc, f"runc.{arch}"), ("containerd", ctd, f"containerd-{ctd}-linux-{arch}.tar.gz"),
           ("cni", cni, f"cni-plugins-linux-{arch}-v{cni}.tgz"), ("kubelet", k8s, "kubelet"),
           ("kubectl", k8s, "kubectl"), ("kubeadm", k8s, "kubeadm"),
           ("npd", npd, f"node-problem-detector-{npd}-linux_{arch}.tar.gz")]
arts = [{"component": c, "version": v, "arch": arch, "file": f,
         "sha256": hashlib.sha256(open(os.path.join(b, f), "rb").read()).hexdigest()} for c, v, f in entries]
json.dump({"apiVersion": "aks-flex-node/v1", "kind": "ArtifactBundle", "artifacts": arts},
          open(os.path.join(b, "manifest.json"), "w"), indent=2)
PY
echo "bundle: $b (containerd $ctd, runc $runc_v, CNI $cni from Debian; Kubernetes $k8s and NPD $npd stand-ins)"

# --- the config: the original's format, pointed at the emulator ----------------------------------------
cat >"$demo/config.json" <<EOF
{
  "azure": {
    "subscriptionId": "$sub",
    "tenantId": "$tenant",
    "cloud": "AzurePublicCloud",
    "resourceManagerEndpoint": "$arm",
    "activeDirectoryEndpoint": "$login",
    "servicePrincipal": { "clientId": "$client_id", "clientSecretFile": "$demo/sp-secret" },
    "arc": { "machineName": "demo-edge-node", "tags": { "environment": "demo" }, "resourceGroup": "$cluster_rg", "location": "westus" },
    "targetCluster": {
      "resourceId": "/subscriptions/$sub/resourceGroups/$cluster_rg/providers/Microsoft.ContainerService/managedClusters/$cluster_name",
      "location": "westus"
    }
  },
  "kubernetes": { "version": "$k8s" },
  "containerd": { "version": "$ctd" },
  "runc": { "version": "$runc_v" },
  "cni": { "version": "$cni" },
  "npd": { "version": "$npd" },
  "networking": { "podCIDR": "10.244.7.0/24" },
  "bootstrap": { "offlineArtifacts": { "source": "$b" } },
  "agent": { "logLevel": "info", "logDir": "/var/log/aks-flex-node", "nodeName": "demo-edge-node" }
}
EOF
( umask 077; printf '%s\n' "$client_secret" >"$demo/sp-secret" )

export PATH="$demo/bin:$PATH" FLEXNODE_EMULATOR_URL="$control" FLEXNODE_EMULATOR_HOST=default
export IDENTITY_ENDPOINT="$himds/metadata/identity/oauth2/token" IMDS_ENDPOINT="$himds"
# The emulator writes HIMDS key files to $demo/keys; the (debug) agent reads them only from the directory
# named here, or /var/opt/azcmagent/tokens (release builds: always).
export AKS_FLEX_NODE_TEST_HIMDS_KEY_DIR="$demo/keys"
agent() { "$bin/aks-flex-node" --root "$root" --config "$demo/config.json" --no-color "$@"; }
azure_state() {
  curl -s "$control/state" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("  Arc machines:     ", [m.get("name") for m in s.get("machines", [])])
print("  role assignments: ", len(s.get("role_assignments", [])), "(5 of them seeded for the demo principal and user)")'
}

say "config validate"
agent config validate
say "Azure before"
azure_state
say "plan (changes nothing)"
agent plan | sed -n '1,60p'
say "bootstrap"
agent bootstrap
say "files written under the sandbox root"
(cd "$root" && find . -type f -newer "$demo/config.json" ! -path './var/log/*' | sort | sed 's/^/  /')
say "Azure after bootstrap"
azure_state
say "second bootstrap: converged, writes nothing"
agent bootstrap
say "unbootstrap"
agent unbootstrap
say "Azure after unbootstrap"
azure_state
say "left on the sandbox root (besides what was there before and the agent's log)"
(cd "$root" && find . ! -path './var/log*' ! -path . | sort | sed 's/^/  /')
echo
echo "Demo finished. Sandbox root: $root; emulator request log: $demo/requests.jsonl"
