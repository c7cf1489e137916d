# shellcheck shell=bash
# The real-node suite's machinery, sourced by e2e/run.sh and e2e/demo-node.sh.
#
# What is real: systemd (PID 1 of a debootstrapped Debian booted with systemd-nspawn), the kernel, Debian's
# containerd/runc/CNI plugins, etcd, and kube-apiserver/controller-manager/kubelet/kubectl 1.20.2 built from
# Debian's source. What is emulated: Azure (flexnode-emulator: Entra ID, ARM, Arc HIMDS, azcmagent, and AKS's
# Entra authentication of the API server as TokenReview/SubjectAccessReview webhooks).
#
# The node shares the host's network namespace and cgroup tree (as the feasibility notes describe), so
# everything the node's kubelet and CNI plugins change on the host is recorded first and undone by e2e_down:
# iptables chains, the cni0 bridge, pod network namespaces, sysctls, mounts and cgroups.

E2E_CACHE=${E2E_CACHE:-/var/cache/aks-flex-node-e2e}
E2E_WORK=${E2E_WORK:-/var/tmp/aks-flex-node-e2e}
E2E_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APISERVER_PORT=16443
ETCD_PORT=23790
HIMDS_PORT=40342
NODE_NAME=flex-e2e-node
# The node's pod range: a /24 used nowhere else on this machine.
POD_CIDR=10.213.7.0/24
TOKENS_DIR=/var/opt/azcmagent/tokens
KUBE_VERSION=1.20.2

e2e_log() { printf '\033[1me2e:\033[0m %s\n' "$*" >&2; }
e2e_die() { printf '\033[1;31me2e: FAILED:\033[0m %s\n' "$*" >&2; exit 1; }

# Why this machine cannot run the suite, or nothing.
e2e_cannot_run() {
  [ "$(id -u)" -eq 0 ] || { echo "not root (the node is a systemd-nspawn container)"; return; }
  command -v systemd-nspawn >/dev/null || { echo "systemd-nspawn is missing (apt-get install systemd-container)"; return; }
  [ -d /sys/fs/cgroup ] || { echo "no cgroup filesystem"; return; }
  if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    # The node shares the host's cgroup tree; a host systemd would fight the node's over it.
    echo "the host runs systemd as PID 1 (the suite binds the host cgroup tree into the node; run it in a VM or container without systemd)"
    return
  fi
}

# Debian packages the suite needs (installed when missing; we are root here).
e2e_deps() {
  local pkgs=(systemd-container debootstrap etcd-server golang-go dpkg-dev rsync jq openssl iptables iproute2
              containerd runc containernetworking-plugins python3 curl lintian)
  local missing=() p
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  e2e_log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Everything the node is built from: Kubernetes binaries, the rootfs tarball, the release binaries, the
# offline artifact bundle and the pause image.
e2e_inputs() {
  K8S_BIN=$(bash "$E2E_TOP/e2e/build-kubernetes.sh")
  ROOTFS_TAR=$(bash "$E2E_TOP/e2e/rootfs.sh")
  e2e_log "building the release binaries"
  (cd "$E2E_TOP" && cargo build -q --release -p aks-flex-node -p azure-emulator)
  AGENT_BIN=$E2E_TOP/target/release/aks-flex-node
  EMU_BIN=$E2E_TOP/target/release/flexnode-emulator
  mkdir -p "$E2E_WORK"
  e2e_bundle "$E2E_WORK/bundle"
  e2e_pause_image "$E2E_WORK/pause-image.tar"
}

# An offline bundle (the agent's air-gapped source) from Debian's containerd, runc and CNI plugins and the
# kubelet/kubectl built from Debian's source.
e2e_bundle() {
  local b=$1 s arch
  arch=$(dpkg --print-architecture)
  CTD_VERSION=$(dpkg-query -W -f='${Version}' containerd | sed 's/[~+-].*//')
  RUNC_VERSION=$(dpkg-query -W -f='${Version}' runc | sed 's/[~+-].*//')
  CNI_VERSION=$(dpkg-query -W -f='${Version}' containernetworking-plugins | sed 's/[~+-].*//')
  rm -rf "$b" && mkdir -p "$b"
  s=$(mktemp -d)
  cp "$(command -v runc || echo /usr/sbin/runc)" "$b/runc.$arch"
  mkdir -p "$s/ctd/bin"
  for f in containerd containerd-shim-runc-v2 ctr; do cp "/usr/bin/$f" "$s/ctd/bin/"; done
  tar -C "$s/ctd" -czf "$b/containerd-$CTD_VERSION-linux-$arch.tar.gz" bin
  tar -C /usr/lib/cni -czf "$b/cni-plugins-linux-$arch-v$CNI_VERSION.tgz" .
  cp "$K8S_BIN/kubelet" "$K8S_BIN/kubectl" "$b/"
  rm -rf "$s"
  python3 - "$b" "$arch" "$KUBE_VERSION" "$CTD_VERSION" "$RUNC_VERSION" "$CNI_VERSION" <<'PY'
import hashlib, json, os, sys
b, arch, k8s, ctd, runc, cni = sys.argv[1:]
entries = [("runc", runc, f"runc.{arch}"), ("containerd", ctd, f"containerd-{ctd}-linux-{arch}.tar.gz"),
           ("cni", cni, f"cni-plugins-linux-{arch}-v{cni}.tgz"), ("kubelet", k8s, "kubelet"),
           ("kubectl", k8s, "kubectl")]
def digest(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
arts = [{"component": c, "version": v, "arch": arch, "file": f, "sha256": digest(os.path.join(b, f))}
        for c, v, f in entries]
json.dump({"apiVersion": "aks-flex-node/v1", "kind": "ArtifactBundle", "artifacts": arts},
          open(os.path.join(b, "manifest.json"), "w"), indent=2)
PY
}

# The pause image as an OCI image layout tarball, built from the pause binary compiled from the Kubernetes
# source, named as the agent's containerd config expects it, so pods need no registry.
E2E_PAUSE_IMAGE=mcr.microsoft.com/oss/kubernetes/pause:3.6
e2e_pause_image() {
  python3 - "$K8S_BIN/pause" "$1" "$E2E_PAUSE_IMAGE" <<'PY'
import hashlib, io, json, sys, tarfile
pause, out, name = sys.argv[1:]
def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), data
layer_buf = io.BytesIO()
with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    data = open(pause, "rb").read()
    ti = tarfile.TarInfo("pause"); ti.size = len(data); ti.mode = 0o755; ti.mtime = 0
    t.addfile(ti, io.BytesIO(data))
layer_d, layer = blob(layer_buf.getvalue())
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "config": {"Entrypoint": ["/pause"], "User": "65535:65535"},
                     "rootfs": {"type": "layers", "diff_ids": [layer_d]}}).encode()
config_d, _ = blob(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_d, "size": len(layer)}]}).encode()
manifest_d, _ = blob(manifest)
index = json.dumps({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": manifest_d, "size": len(manifest),
    "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}).encode()
with tarfile.open(out, "w") as t:
    def add(path, data):
        ti = tarfile.TarInfo(path); ti.size = len(data); ti.mtime = 0
        t.addfile(ti, io.BytesIO(data))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", index)
    for d, data in ((layer_d, layer), (config_d, config), (manifest_d, manifest)):
        add("blobs/sha256/" + d.split(":")[1], data)
PY
}

# --- host state the node changes, recorded so e2e_down can undo it ---------------------------------------
E2E_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
             vm.overcommit_memory vm.swappiness kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
             kernel.keys.root_maxbytes fs.inotify.max_user_watches fs.inotify.max_user_instances
             net.ipv4.conf.all.forwarding net.ipv6.conf.all.forwarding net.ipv4.ip_local_reserved_ports)
e2e_record_host() {
  [ -s "$E2E_WORK/host-sysctls" ] && return 0
  local k v
  : >"$E2E_WORK/host-sysctls.tmp"
  for k in "${E2E_SYSCTLS[@]}"; do
    v=$(sysctl -n "$k" 2>/dev/null) || continue
    printf '%s\t%s\n' "$k" "$v" >>"$E2E_WORK/host-sysctls.tmp"
  done
  mv "$E2E_WORK/host-sysctls.tmp" "$E2E_WORK/host-sysctls"
  # The HIMDS key directory, shared with the node: remember which of its levels we create.
  local d=$TOKENS_DIR
  : >"$E2E_WORK/created-dirs"
  while [ ! -d "$d" ]; do echo "$d" >>"$E2E_WORK/created-dirs"; d=$(dirname "$d"); done
  mkdir -p "$TOKENS_DIR"
}

e2e_restore_host() {
  local k v
  if [ -s "$E2E_WORK/host-sysctls" ]; then
    while IFS=$'\t' read -r k v; do sysctl -q -w "$k=$v" >/dev/null 2>&1 || true; done <"$E2E_WORK/host-sysctls"
  fi
  # Chains the kubelet, kube-proxy-less CNI plugins (bridge ipMasq, portmap) created in the host namespace.
  local t c
  for t in filter nat mangle; do
    for c in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
      iptables -t "$t" -S 2>/dev/null | awk -v c="$c" '$1 == "-A" && $0 ~ ("-j " c "( |$)") {sub(/^-A/, "-D"); print}' |
        while read -r rule; do eval "iptables -t $t $rule" 2>/dev/null || true; done
    done
    for c in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
      iptables -t "$t" -F "$c" 2>/dev/null || true
    done
    for c in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/ {print $2}'); do
      iptables -t "$t" -X "$c" 2>/dev/null || true
    done
  done
  ip link del cni0 2>/dev/null || true
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  # Cgroups the node's systemd and kubelet made in the shared tree (deepest first; only empty ones go).
  find /sys/fs/cgroup -depth -type d \( -name 'kubepods*' -o -path '*kubepods*' -o -name 'system.slice' -o -name 'machine.slice' -o -name 'init.scope' -o -name 'user.slice' \) 2>/dev/null |
    while read -r d; do rmdir "$d" 2>/dev/null || true; done
  if [ -s "$E2E_WORK/created-dirs" ]; then
    while read -r d; do rm -rf "$d"; done <"$E2E_WORK/created-dirs"
  fi
  rm -f "$E2E_WORK/created-dirs"
  rm -f "$E2E_WORK/host-sysctls"
}

# --- PKI and control plane --------------------------------------------------------------------------------
e2e_pki() {
  local p=$E2E_WORK/pki
  # New keys every run (a second or two): nothing expires between runs on a long-lived machine.
  rm -rf "$p" && mkdir -p "$p" && chmod 700 "$p"
  (
    cd "$p" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3 -subj "/CN=e2e-cluster-ca" 2>/dev/null
    cat >apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc,IP:10.0.0.1
extendedKeyUsage=serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3 -extfile apiserver.ext 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=e2e-admin" 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 3 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    cat >admin.kubeconfig <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $p/ca.crt
users:
- name: admin
  user:
    client-certificate: $p/admin.crt
    client-key: $p/admin.key
contexts:
- name: admin
  context: {cluster: e2e, user: admin}
current-context: admin
EOF
  )
}

kadm() { "$K8S_BIN/kubectl" --kubeconfig "$E2E_WORK/pki/admin.kubeconfig" "$@"; }

# Start a background process, remembering its pid for e2e_down.
e2e_spawn() {
  local name=$1; shift
  "$@" >"$E2E_WORK/logs/$name.log" 2>&1 &
  echo "$!" >"$E2E_WORK/pids/$name"
}

e2e_stop() {
  local name=$1 pid
  [ -f "$E2E_WORK/pids/$name" ] || return 0
  pid=$(cat "$E2E_WORK/pids/$name")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$E2E_WORK/pids/$name"
}

e2e_wait() { # SECONDS WHAT COMMAND...
  local t=$1 what=$2; shift 2
  local end=$((SECONDS + t))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { e2e_log "timed out after ${t}s waiting for $what"; return 1; }
    sleep 1
  done
}

e2e_control_plane_up() {
  mkdir -p "$E2E_WORK/logs" "$E2E_WORK/pids"
  e2e_pki
  local p=$E2E_WORK/pki
  # AKS's Entra ID authentication of the API server, served by the emulator (started per scenario on the
  # HIMDS port; the webhook URL stays the same).
  "$EMU_BIN" webhook-config --url "http://127.0.0.1:$HIMDS_PORT" --out-dir "$p" >/dev/null
  rm -rf "$E2E_WORK/etcd"
  e2e_spawn etcd etcd --data-dir "$E2E_WORK/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls http://127.0.0.1:23800 \
    --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster default=http://127.0.0.1:23800
  e2e_spawn kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" --insecure-port 0 \
    --tls-cert-file "$p/apiserver.crt" --tls-private-key-file "$p/apiserver.key" --client-ca-file "$p/ca.crt" \
    --service-account-key-file "$p/sa.pub" --service-account-signing-key-file "$p/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.0.0.0/16 \
    --authentication-token-webhook-config-file "$p/authn-webhook.yaml" \
    --authorization-mode Node,Webhook,RBAC --authorization-webhook-config-file "$p/authz-webhook.yaml" \
    --authorization-webhook-cache-unauthorized-ttl 2s --authorization-webhook-cache-authorized-ttl 10s \
    --authentication-token-webhook-cache-ttl 10s \
    --enable-admission-plugins NodeRestriction --allow-privileged=true --profiling=false --v=1
  e2e_wait 90 "the API server" kadm get --raw /readyz || { tail -n 30 "$E2E_WORK/logs/kube-apiserver.log" >&2; return 1; }
  e2e_spawn kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig "$p/admin.kubeconfig" \
    --service-account-private-key-file "$p/sa.key" --root-ca-file "$p/ca.crt" --leader-elect=false \
    --port 0 --secure-port 0 --controllers '*,-nodeipam,-cloud-node-lifecycle,-route,-service' --v=1
  e2e_wait 60 "the default service account" kadm get serviceaccount default -n default
}

e2e_control_plane_down() {
  e2e_stop kube-controller-manager
  e2e_stop kube-apiserver
  e2e_stop etcd
  rm -rf "$E2E_WORK/etcd"
}

# --- the emulator (Azure) ---------------------------------------------------------------------------------
# A scenario whose cluster is the real API server above; $1 = JSON list of extra role assignment roles for
# nothing (reserved), the scenario is rewritten per test by e2e_emulator_up's callers through $E2E_WORK/scenario.json.
e2e_scenario() {
  "$EMU_BIN" scenario --example | python3 -c '
import json, sys
s = json.load(sys.stdin)
ca = open(sys.argv[1]).read()
c = s["clusters"][0]
c.update({"server_url": "https://127.0.0.1:" + sys.argv[2], "ca_pem": ca, "kubernetes_version": sys.argv[3]})
sp = s["service_principals"][0]["object_id"]
rg = c["resource_group"]
sub = s["subscriptions"][0]["id"]
# Deleting the Arc machine on unbootstrap needs more than onboarding, as in Azure.
s["role_assignments"].append({"principal_id": sp, "role": "Azure Connected Machine Resource Administrator",
                              "scope": f"/subscriptions/{sub}/resourceGroups/{rg}", "name": None})
json.dump(s, sys.stdout, indent=2)' "$E2E_WORK/pki/ca.crt" "$APISERVER_PORT" "$KUBE_VERSION" >"$E2E_WORK/scenario.json"
}

e2e_emulator_up() {
  e2e_stop emulator
  mkdir -p "$E2E_WORK/logs" "$E2E_WORK/pids"
  e2e_reserve_himds_port now
  rm -f "$E2E_WORK/requests.jsonl" "$E2E_WORK/emulator-urls.json"
  "$EMU_BIN" serve --listen "127.0.0.1:$HIMDS_PORT" --scenario "$E2E_WORK/scenario.json" \
    --himds-key-dir "$TOKENS_DIR" --request-log "$E2E_WORK/requests.jsonl" \
    >"$E2E_WORK/emulator-urls.json" 2>"$E2E_WORK/logs/emulator.log" &
  local pid=$!
  echo "$pid" >"$E2E_WORK/pids/emulator"
  local end=$((SECONDS + 20))
  until [ -s "$E2E_WORK/emulator-urls.json" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      e2e_log "the emulator exited at start: $(cat "$E2E_WORK/logs/emulator.log")"
      e2e_log "sockets on port $HIMDS_PORT: $(ss -Htanp "( sport = :$HIMDS_PORT )" 2>&1)"
      return 1
    fi
    [ $SECONDS -lt $end ] || { e2e_log "timed out after 20s waiting for the emulator"; return 1; }
    sleep 0.2
  done
}

# HIMDS's fixed port (40342) lies in Linux's ephemeral range. Reserve it before anything connects anywhere
# (the control plane's long-lived etcd/webhook connections included: an outgoing socket that took 40342 as its
# source port blocks the emulator's listen for as long as it lives, which failed every scenario of one CI run),
# then (`wait`, at the start of a run; `now` only reserves) wait for any socket that took it before the reservation to go away.
e2e_reserve_himds_port() {
  sysctl -q -w net.ipv4.ip_local_reserved_ports="$HIMDS_PORT" >/dev/null
  [ "${1:-}" = wait ] || return 0
  local end=$((SECONDS + 90))
  while ss -Htan "( sport = :$HIMDS_PORT )" 2>/dev/null | grep -qv TIME-WAIT; do
    if [ $SECONDS -ge $end ]; then
      e2e_log "port $HIMDS_PORT (HIMDS) is still held by another socket after 90 s:"
      ss -tanp "( sport = :$HIMDS_PORT )" >&2 || true
      return 1
    fi
    sleep 1
  done
}

# j FILE EXPR: a value from a JSON file (python expression over d).
j() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$1" "$2"; }

# --- the node -----------------------------------------------------------------------------------------------
NODE_DIR=$E2E_WORK/node
# node_config ROLES_JSON: the original's config format, pointed at the emulator and the offline bundle.
e2e_node_config() {
  local roles=${1:-null} sc=$E2E_WORK/scenario.json base="http://127.0.0.1:$HIMDS_PORT"
  local sub rg name tenant client_id
  tenant=$(j "$sc" "d['tenants'][0]['id']"); sub=$(j "$sc" "d['subscriptions'][0]['id']")
  client_id=$(j "$sc" "d['service_principals'][0]['client_id']")
  rg=$(j "$sc" "d['clusters'][0]['resource_group']"); name=$(j "$sc" "d['clusters'][0]['name']")
  python3 - "$roles" <<EOF
import json, sys
roles = json.loads(sys.argv[1])
cfg = {
  "azure": {
    "subscriptionId": "$sub", "tenantId": "$tenant", "cloud": "AzurePublicCloud",
    "resourceManagerEndpoint": "$base", "activeDirectoryEndpoint": "$base",
    "servicePrincipal": {"clientId": "$client_id", "clientSecretFile": "/etc/aks-flex-node/sp-secret"},
    "arc": {"machineName": "$NODE_NAME", "resourceGroup": "$rg", "location": "westus"},
    "targetCluster": {"resourceId": "/subscriptions/$sub/resourceGroups/$rg/providers/Microsoft.ContainerService/managedClusters/$name",
                      "location": "westus"},
  },
  "kubernetes": {"version": "$KUBE_VERSION"},
  "containerd": {"version": "$CTD_VERSION"},
  "runc": {"version": "$RUNC_VERSION"},
  "cni": {"version": "$CNI_VERSION"},
  "npd": {"enabled": False},
  "networking": {"podCIDR": "$POD_CIDR"},
  "node": {"kubelet": {"nodeIP": "127.0.0.1"}},
  "bootstrap": {"offlineArtifacts": {"source": "/opt/e2e-bundle"}},
  "agent": {"logLevel": "info", "logDir": "/var/log/aks-flex-node", "nodeName": "$NODE_NAME"},
}
if roles is not None:
    cfg["azure"]["arc"]["roles"] = roles
print(json.dumps(cfg, indent=2))
EOF
}

# e2e_node_create [ROLES_JSON]: a fresh rootfs with the agent installed the way an operator does: the binary,
# the packaged unit, the config; plus the azcmagent stand-in and the offline bundle.
e2e_node_create() {
  e2e_node_destroy
  mkdir -p "$NODE_DIR"
  tar -C "$NODE_DIR" -xf "$ROOTFS_TAR"
  local r=$NODE_DIR sc=$E2E_WORK/scenario.json
  # E2E_NO_AGENT=1: leave the agent's binary and unit out (scripts/install.sh puts them there).
  if [ "${E2E_NO_AGENT:-0}" != 1 ]; then
    install -m 0755 "$AGENT_BIN" "$r/usr/local/bin/aks-flex-node"
    install -m 0644 "$E2E_TOP/packaging/aks-flex-node-agent.service" "$r/etc/systemd/system/aks-flex-node-agent.service"
  fi
  install -m 0755 "$EMU_BIN" "$r/usr/local/bin/flexnode-emulator"
  ln -sf /usr/local/bin/flexnode-emulator "$r/usr/bin/azcmagent"
  mkdir -p "$r/etc/systemd/system/aks-flex-node-agent.service.d"
  cat >"$r/etc/systemd/system/aks-flex-node-agent.service.d/e2e.conf" <<EOF
# e2e only: the azcmagent stand-in finds the emulator here; a bounded wait for Ready.
[Service]
Environment=FLEXNODE_EMULATOR_URL=http://127.0.0.1:$HIMDS_PORT
Environment=AKS_FLEX_NODE_NODE_READY_TIMEOUT=${E2E_READY_TIMEOUT:-180}
EOF
  mkdir -p "$r/opt/e2e-bundle" "$r/etc/aks-flex-node" "$r/$TOKENS_DIR"
  cp "$E2E_WORK/bundle/"* "$r/opt/e2e-bundle/"
  chmod 0750 "$r/etc/aks-flex-node"
  e2e_node_config "${1:-null}" >"$r/etc/aks-flex-node/config.json"
  ( umask 077; j "$sc" "d['service_principals'][0]['secret']" >"$r/etc/aks-flex-node/sp-secret" )
  cp "$E2E_WORK/pause-image.tar" "$r/opt/pause-image.tar"
}

e2e_node_boot() {
  mkdir -p "$E2E_WORK/logs" "$E2E_WORK/pids"
  SYSTEMD_NSPAWN_API_VFS_WRITABLE=1 e2e_spawn node systemd-nspawn -D "$NODE_DIR" --boot --register=no --keep-unit \
    --console=passive -M "$NODE_NAME" --capability=all --system-call-filter='add_key keyctl request_key' \
    --bind=/dev/kmsg --bind=/sys/fs/cgroup --bind="$TOKENS_DIR"
  local end=$((SECONDS + 120)) state=
  while [ $SECONDS -lt $end ]; do
    if e2e_node_leader >/dev/null; then
      state=$(node_sh systemctl is-system-running 2>/dev/null || true)
      case $state in running|degraded) return 0 ;; esac
    fi
    sleep 1
  done
  e2e_log "the node did not boot (state: ${state:-unknown})"; tail -n 30 "$E2E_WORK/logs/node.log" >&2
  return 1
}

# The node's PID 1 as seen from the host.
e2e_node_leader() {
  local npid
  npid=$(cat "$E2E_WORK/pids/node" 2>/dev/null) || return 1
  kill -0 "$npid" 2>/dev/null || return 1
  local c
  for c in $(pgrep -P "$npid" || true); do
    [ "$(cat "/proc/$c/comm" 2>/dev/null)" = systemd ] && { echo "$c"; return 0; }
  done
  return 1
}

# A command on the node, as root in all its namespaces. FLEXNODE_EMULATOR_URL is for the azcmagent
# stand-in only (the agent's unit gets it from its e2e drop-in).
node_sh() {
  local l; l=$(e2e_node_leader) || return 1
  nsenter -t "$l" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb \
    FLEXNODE_EMULATOR_URL="http://127.0.0.1:$HIMDS_PORT" "$@"
}

# Power the node off (systemd stops every unit; the PID namespace's end kills what is left).
e2e_node_poweroff() {
  local npid
  npid=$(cat "$E2E_WORK/pids/node" 2>/dev/null) || return 0
  if kill -0 "$npid" 2>/dev/null; then
    node_sh systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 90); do kill -0 "$npid" 2>/dev/null || break; sleep 1; done
    kill -0 "$npid" 2>/dev/null && { kill -9 "$npid" 2>/dev/null || true; sleep 1; }
  fi
  rm -f "$E2E_WORK/pids/node"
  # Mounts the node's runtime left below its root, deepest first.
  if [ -d "$NODE_DIR" ]; then
    awk -v r="$NODE_DIR" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/self/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
}

e2e_node_destroy() {
  e2e_node_poweroff
  rm -rf "$NODE_DIR"
}

# Is the node Ready on the API server?
e2e_node_ready() {
  [ "$(kadm get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# Everything down and the host as it was.
e2e_down() {
  e2e_node_destroy
  e2e_stop emulator
  e2e_control_plane_down
  e2e_restore_host
}

# --- helpers for scenarios ------------------------------------------------------------------------------------
# The agent's resident memory on the node: total, anonymous and file-backed (code pages), from /proc; its
# mappings go to logs/agent-smaps.txt (which mapping holds the memory).
e2e_agent_rss() {
  local pid
  pid=$(node_sh systemctl show -p MainPID --value aks-flex-node-agent)
  node_sh cat "/proc/$pid/smaps" >"$E2E_WORK/logs/agent-smaps.txt" 2>/dev/null || true
  node_sh cat "/proc/$pid/status" | awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %.1f MiB  ", $1, $2 / 1024}' 
}

e2e_figure() { mkdir -p "$E2E_WORK/figures"; printf '%s\n' "$*" >>"$E2E_WORK/figures/$(date +%s%N)"; }

# What a failed scenario shows: the units' states and journals, the API server's view.
e2e_diagnose() {
  e2e_log "--- diagnosis"
  if e2e_node_leader >/dev/null; then
    node_sh systemctl --no-pager list-units --failed >&2 || true
    for u in aks-flex-node-agent kubelet containerd; do
      echo "--- journalctl -u $u (last 40)" >&2
      node_sh journalctl -u "$u" -n 40 --no-pager -o cat >&2 || true
    done
  fi
  kadm get nodes -o wide >&2 || true
  tail -n 5 "$E2E_WORK/logs/kube-apiserver.log" >&2 || true
}

# Fail the scenario with a message.
fail() { e2e_log "assertion failed: $*"; return 1; }

# A fingerprint of every file the agent manages on the node (path, inode, mtime, size, mode): equal
# fingerprints mean nothing was written, not even rewritten with the same bytes.
e2e_node_fingerprint() {
  node_sh sh -c 'find /etc/containerd /etc/cni /etc/systemd/system /etc/default /etc/sysctl.d /etc/modules-load.d \
      /etc/kubernetes /usr/local/bin /opt/cni/bin /var/lib/aks-flex-node /var/lib/kubelet/config.yaml \
      /var/lib/kubelet/kubeconfig -xdev \( -type f -o -type l \) ! -name .lock 2>/dev/null |
    sort | xargs -r stat -c "%n %i %Y %s %a"'
}

# MainPID and NRestarts of the node's services.
e2e_node_services() {
  local u
  for u in containerd kubelet; do
    printf '%s %s\n' "$u" "$(node_sh systemctl show -p MainPID -p NRestarts --value "$u" | tr '\n' ' ')"
  done
}

# The agent's log lines from its current run only (this invocation of the unit).
e2e_agent_log() {
  local id
  id=$(node_sh systemctl show -p InvocationID --value aks-flex-node-agent) || return 1
  [ -n "$id" ] || return 1
  node_sh journalctl "_SYSTEMD_INVOCATION_ID=$id" -o cat --no-pager
}

# Has the agent's current run finished its bootstrap pass (converged or applied)?
e2e_agent_completed() { e2e_agent_log 2>/dev/null | grep -q 'bootstrap completed'; }

# A fresh emulator and node, bootstrapped the way an operator does it: `systemctl enable --now
# aks-flex-node-agent`, until the API server shows the node Ready and the agent said "bootstrap completed".
# Sets E2E_READY_SECS. $1: roles (JSON list) for azure.arc.roles, default the agent's.
e2e_bootstrap_node() {
  e2e_emulator_up
  kadm delete node "$NODE_NAME" --ignore-not-found >/dev/null
  e2e_node_create "${1:-null}"
  e2e_node_boot
  local t0=$SECONDS end=$((SECONDS + 300))
  node_sh systemctl enable --now aks-flex-node-agent
  until e2e_node_ready; do
    [ $SECONDS -lt $end ] || { fail "the node was not Ready 300 s after the agent started"; return 1; }
    if [ "$(node_sh systemctl show -p ActiveState --value aks-flex-node-agent)" = failed ]; then
      fail "the agent unit failed"; return 1
    fi
    sleep 1
  done
  E2E_READY_SECS=$((SECONDS - t0))
  e2e_log "node $NODE_NAME Ready ${E2E_READY_SECS}s after systemctl start aks-flex-node-agent"
  # The agent reports completion only once it saw Ready itself (its NodeReady step).
  e2e_wait 60 "the agent's 'bootstrap completed'" e2e_agent_completed || return 1
  local u
  for u in containerd kubelet aks-flex-node-agent; do
    [ "$(node_sh systemctl is-active "$u")" = active ] || { fail "$u is not active"; return 1; }
  done
}

e2e_pod_running() {
  [ "$(kadm get pod e2e-pause -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]
}

# A pod with the locally built pause image (no registry): sandbox + container through CRI, runc and CNI,
# with an IP from the node's range.
e2e_run_pod() {
  node_sh ctr -n k8s.io images import /opt/pause-image.tar >/dev/null
  kadm delete pod e2e-pause --ignore-not-found --wait=false >/dev/null 2>&1 || true
  e2e_wait 60 "the old pod object to go" sh -c "! $K8S_BIN/kubectl --kubeconfig $E2E_WORK/pki/admin.kubeconfig get pod e2e-pause" || true
  kadm apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: e2e-pause, namespace: default}
spec:
  nodeName: $NODE_NAME
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: pause
    image: $E2E_PAUSE_IMAGE
    imagePullPolicy: Never
YAML
  e2e_wait 120 "pod e2e-pause Running" e2e_pod_running || return 1
  local ip
  ip=$(kadm get pod e2e-pause -o jsonpath='{.status.podIP}')
  python3 -c 'import ipaddress,sys; sys.exit(0 if ipaddress.ip_address(sys.argv[1]) in ipaddress.ip_network(sys.argv[2]) else 1)' "$ip" "$POD_CIDR" ||
    { fail "pod IP $ip is not in the node's range $POD_CIDR"; return 1; }
  e2e_log "pod e2e-pause Running with IP $ip (node range $POD_CIDR)"
}

# Every path on the node's disk with type, mode, owner and (files) SHA-256, except what the OS itself
# changes at run time and the agent's own log (kept by unbootstrap on purpose).
# E2E_MANIFEST_SKIP: more paths to leave out (space-separated), e.g. dpkg's own database.
e2e_node_manifest() {
  local skip="/proc /sys /dev /run /tmp /var/tmp /var/log/journal /var/lib/systemd /var/log/aks-flex-node /var/cache/ldconfig /etc/machine-id ${E2E_MANIFEST_SKIP:-}"
  # shellcheck disable=SC2016 # expanded by the node's shell
  node_sh sh -c 'prune=""; for p in $0; do prune="$prune -path $p -o"; done; prune="${prune% -o}"
    # shellcheck disable=SC2086
    find / -xdev \( $prune \) -prune -o -printf "%p %y %m %U %G %l\n" | sort
    # shellcheck disable=SC2086
    find / -xdev \( $prune \) -prune -o -type f -print0 | sort -z | xargs -0 -r sha256sum' "$skip"
}

# The emulator's Azure state: "<arc machines> <role assignments>".
e2e_azure_counts() {
  curl -s "http://127.0.0.1:$HIMDS_PORT/_emulator/state" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(len(s.get("machines", [])), len(s.get("role_assignments", [])))'
}

# The live values of the sysctls the agent sets (its /etc/sysctl.d file's keys).
e2e_agent_sysctls() {
  local k
  for k in net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables net.ipv4.ip_forward \
           vm.overcommit_memory kernel.panic kernel.panic_on_oops vm.swappiness; do
    printf '%s=%s\n' "$k" "$(sysctl -n "$k" 2>/dev/null)"
  done
}
