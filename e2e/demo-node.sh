#!/usr/bin/env bash
# `make demo-node`: a real node for a new user, no Azure account needed. Runs the suite's fresh-node scenario
# and leaves the control plane and the node up to explore; `make demo-node-down` (this script with `down`)
# tears everything down and restores the host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=e2e/lib.sh
source "$here/lib.sh"

if [ "${1:-}" = down ]; then
  K8S_BIN=$(find "$E2E_CACHE/kubernetes" -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort | tail -n1)
  K8S_BIN=${K8S_BIN:-/nonexistent}
  e2e_down
  rm -f "$E2E_WORK/.lock"
  echo "demo node and control plane stopped; host restored."
  exit 0
fi

if reason=$(e2e_cannot_run) && [ -n "$reason" ]; then
  echo "make demo-node cannot run here: $reason" >&2
  exit 2
fi
cat <<TXT
What is real:     systemd (PID 1 of a Debian node booted with systemd-nspawn), the kernel, containerd, runc,
                  the CNI plugins, etcd, and Kubernetes $KUBE_VERSION (API server, controller manager, kubelet)
                  built from Debian's source; the agent is this checkout's release build under its systemd unit.
What is emulated: Azure (flexnode-emulator on 127.0.0.1:$HIMDS_PORT): Entra ID, ARM, Arc HIMDS, azcmagent,
                  and AKS's Entra ID authentication of the API server (TokenReview/SubjectAccessReview webhooks).
First run on a machine: builds Kubernetes from source (~10-18 min) and a Debian rootfs (~2 min), cached.
TXT
mkdir -p "$E2E_WORK"
exec 9>"$E2E_WORK/.lock"
flock -n 9 || { echo "a demo node or an e2e run is already up: make demo-node-down first" >&2; exit 2; }
e2e_deps
e2e_inputs
mkdir -p "$E2E_WORK/logs" "$E2E_WORK/pids"
trap 'echo "failed; tearing down" >&2; e2e_down' ERR
e2e_record_host
e2e_log "control plane"
e2e_control_plane_up
e2e_scenario
# shellcheck source=e2e/scenarios/10-fresh-node.sh
source "$here/scenarios/10-fresh-node.sh"
scenario_10_fresh_node
trap - ERR
cat <<TXT

The node is up and Ready. Try:
  $K8S_BIN/kubectl --kubeconfig $E2E_WORK/pki/admin.kubeconfig get nodes -o wide
  $K8S_BIN/kubectl --kubeconfig $E2E_WORK/pki/admin.kubeconfig get pods -o wide
  nsenter -t \$(pgrep -P \$(cat $E2E_WORK/pids/node) systemd) -a systemctl status aks-flex-node-agent kubelet
  nsenter -t \$(pgrep -P \$(cat $E2E_WORK/pids/node) systemd) -a env FLEXNODE_EMULATOR_URL=http://127.0.0.1:$HIMDS_PORT aks-flex-node plan
(FLEXNODE_EMULATOR_URL is for the emulator's azcmagent stand-in only; a real Arc agent needs none.)
Logs: $E2E_WORK/logs; Azure requests: $E2E_WORK/requests.jsonl
Tear it all down: make demo-node-down
TXT
