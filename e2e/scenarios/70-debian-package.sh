# shellcheck shell=bash
# The Debian package: `make deb`, its contents, `dpkg -i` in a fresh node (the unit is installed but neither
# enabled nor started: there is no config yet), the agent's unit -> Ready, then `aks-flex-node unbootstrap`
# and `dpkg --purge` leave the disk as before (dpkg's own database aside).
scenario_70_debian_package() {
  # The release binary the suite built and runs everywhere else (a second release build would take minutes).
  (cd "$E2E_TOP" && make -s deb DEB_PREBUILT=1 >&2) || { fail "make deb failed"; return 1; }
  local deb
  deb=$(find "$E2E_TOP/dist" -maxdepth 1 -name 'aks-flex-node_*.deb' | sort | tail -n1)
  [ -n "$deb" ] || { fail "make deb wrote no package"; return 1; }
  local contents
  contents=$(dpkg-deb -c "$deb")
  for f in ./usr/local/bin/aks-flex-node ./lib/systemd/system/aks-flex-node-agent.service; do
    grep -q " $f\$" <<<"$contents" || { echo "$contents" >&2; fail "the package lacks $f"; return 1; }
  done
  cmp <(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/aks-flex-node-agent.service) \
    "$E2E_TOP/packaging/aks-flex-node-agent.service" || { fail "the package's unit is not packaging/'s"; return 1; }

  e2e_node_destroy
  e2e_emulator_up
  kadm delete node "$NODE_NAME" --ignore-not-found >/dev/null
  E2E_NO_AGENT=1 e2e_node_create
  mkdir -p "$NODE_DIR/opt/e2e-install"
  cp "$deb" "$NODE_DIR/opt/e2e-install/aks-flex-node.deb"
  e2e_node_boot
  local before
  export E2E_MANIFEST_SKIP="/var/lib/dpkg /var/log/dpkg.log /var/log/apt /var/cache/debconf"
  before=$(e2e_node_manifest)
  node_sh dpkg -i /opt/e2e-install/aks-flex-node.deb >&2 || { fail "dpkg -i failed"; return 1; }
  [ "$(node_sh systemctl is-enabled aks-flex-node-agent || true)" = disabled ] || { fail "the package enabled the agent"; return 1; }
  [ "$(node_sh systemctl is-active aks-flex-node-agent || true)" = inactive ] || { fail "the package started the agent"; return 1; }
  node_sh aks-flex-node version >/dev/null || { fail "the packaged binary does not run"; return 1; }

  node_sh systemctl enable --now aks-flex-node-agent
  e2e_wait 300 "the node Ready" e2e_node_ready || return 1
  e2e_wait 60 "the agent's 'bootstrap completed'" e2e_agent_completed || return 1
  node_sh aks-flex-node unbootstrap --verify --delete-node >&2 || { fail "unbootstrap failed"; return 1; }
  node_sh dpkg --purge aks-flex-node >&2 || { fail "dpkg --purge failed"; return 1; }
  local after
  after=$(e2e_node_manifest)
  unset E2E_MANIFEST_SKIP
  if [ "$after" != "$before" ]; then
    diff <(echo "$before") <(echo "$after") | head -n 40 >&2
    fail "the node's disk differs from before dpkg -i"; return 1
  fi
  e2e_log "package: installed not enabled, Ready after enable, unbootstrap + purge leave the disk as before"
}
