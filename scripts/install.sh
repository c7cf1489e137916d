#!/usr/bin/env bash
# Install aks-flex-node: the binary, its systemd unit and its directories, verified by SHA-256.
#
#   curl -fsSL https://raw.githubusercontent.com/aks-flex-node/aks-flex-node/main/scripts/install.sh | sudo bash
#   curl -fsSL .../scripts/install.sh | sudo bash -s -- --version 0.1.0 --yes
#   sudo scripts/install.sh --binary target/release/aks-flex-node      # a binary you built
#
# Run with --help for every option. It installs exactly (and records in its manifest):
#   /usr/local/bin/aks-flex-node                        0755
#   /etc/systemd/system/aks-flex-node-agent.service     0644
#   /etc/aks-flex-node/                                 0750 (when it does not exist yet)
#   /var/log/aks-flex-node/                             0750 (when it does not exist yet)
#   /var/lib/aks-flex-node-install/manifest             what was installed, with SHA-256, for uninstall.sh
# It never enables or starts the agent, writes no sudoers file and changes nothing in any user's home.
set -euo pipefail

PROG=install.sh
DEFAULT_BASE=https://github.com/aks-flex-node/aks-flex-node/releases
BASE="${AKS_FLEX_NODE_DOWNLOAD_URL:-$DEFAULT_BASE}"
BASE="${BASE%/}"
ROOT="${AKS_FLEX_NODE_INSTALL_ROOT:-/}"

BIN_PATH=/usr/local/bin/aks-flex-node
UNIT_PATH=/etc/systemd/system/aks-flex-node-agent.service
CONFIG_DIR=/etc/aks-flex-node
LOG_DIR=/var/log/aks-flex-node
STATE_DIR=/var/lib/aks-flex-node-install
MANIFEST="$STATE_DIR/manifest"

VERSION=""
PIN_SHA256=""
LOCAL_BINARY=""
LOCAL_UNIT=""
WITH_ARC=0
YES=0
DRY_RUN=0

usage() {
  cat <<EOF
Usage: $PROG [options]

Downloads aks-flex-node-<version>-linux-<arch>.tar.gz and SHA256SUMS from the release, verifies the
tarball's SHA-256 against SHA256SUMS (and --sha256 if given) and refuses to install anything if they
differ or SHA256SUMS is missing. Then installs the binary, the systemd unit and the directories, and
records them in $MANIFEST for uninstall.sh. Re-running is a no-op.

Options:
  --version V        Release to install, e.g. 0.1.0 (default: the latest, read from
                     <base>/latest/download/VERSION)
  --sha256 HEX       Also require the tarball to have this SHA-256 (a digest you got out of band)
  --binary PATH      Install this local binary instead of downloading a release (no checksum file:
                     you vouch for it); the unit comes from packaging/ next to this script, else the
                     copy embedded in this script
  --unit PATH        With --binary: install this unit file instead
  --with-arc-agent   Also install the Azure Arc agent (azcmagent) from Microsoft's signed package
                     repository (packages.microsoft.com), as Microsoft documents; asks first unless --yes
  --yes, -y          Do not ask (replacing a file this script did not install, the Arc agent)
  --dry-run          Print what would be done; change nothing
  --help, -h         This help

Environment:
  AKS_FLEX_NODE_DOWNLOAD_URL   Release base URL (default $DEFAULT_BASE); files are fetched from
                               <base>/download/v<V>/ and the latest version from <base>/latest/download/VERSION.
                               https only, except http on a loopback address (for tests and local mirrors).
  AKS_FLEX_NODE_INSTALL_ROOT   Install under this directory instead of / (tests, image builds). With a root
                               other than /, systemctl and apt-get are never run (they are printed instead).
EOF
}

# The unit, for --binary when packaging/aks-flex-node-agent.service is not next to this script (curl | bash).
# Must stay byte-identical to packaging/aks-flex-node-agent.service (a test checks).
embedded_unit() {
  cat <<'AKS_FLEX_NODE_UNIT'
# systemd unit for the aks-flex-node agent: bootstrap, then stay up and repair drift.
# Installed by scripts/install.sh (/etc/systemd/system/) and by the Debian package (/lib/systemd/system/);
# both install this exact file. The agent is not enabled by either: write /etc/aks-flex-node/config.json,
# check it with `aks-flex-node config validate`, then `systemctl enable --now aks-flex-node-agent`.
[Unit]
Description=AKS Flex Node Agent
Documentation=https://github.com/aks-flex-node/aks-flex-node
# Azure (ARM, Entra ID) and the API server are reached over the network: pull in network-online.target and
# start after it. himdsd.service is the Arc agent's identity endpoint (HIMDS), which the kubelet's token and
# the identity step need; After= on a unit that is not installed is a no-op, so this is safe without Arc.
# containerd and the kubelet (ordering only, no dependency): at boot the agent looks at them after systemd
# has started them, so it never takes a containerd that is still starting for one that is down and
# "repairs" it (seen on the real node after a reboot).
After=network-online.target himdsd.service containerd.service kubelet.service
Wants=network-online.target
# No start-rate limit. The agent retries failed passes itself (backoff up to 5 minutes) and stays up, so
# restarts are rare (a crash); even so a burst of them must never leave the unit failed for good.
StartLimitIntervalSec=0

[Service]
# The agent tells systemd when its first pass has ended (READY=1: bootstrapped, or failed and now retrying
# in the background), and keeps a one-line state in `systemctl status` (STATUS=). `systemctl start` returns
# then. Add WatchdogSec= in a drop-in to have it send keep-alives (WATCHDOG=1) and be restarted if it hangs.
Type=notify
# Runs as root: it installs the runtime's files, writes units and sysctls, loads kernel modules and runs
# azcmagent and systemctl. No sudoers file and no service user (the original's sudo rules were root anyway).
ExecStart=/usr/local/bin/aks-flex-node agent --config /etc/aks-flex-node/config.json
# SIGTERM stops the agent cleanly (exit 0). Failures are retried inside the agent; if it dies anyway, it is
# restarted...
Restart=on-failure
RestartSec=30
# ...but exit 2 is a usage or configuration error (a bad flag, an invalid config file, a setting no retry
# can fix): restarting cannot fix it, so the unit stays failed and `systemctl status` / the journal say why.
RestartPreventExitStatus=2
# Bootstrap waits for downloads, Azure and the node becoming Ready (its own timeouts apply).
TimeoutStartSec=infinity
TimeoutStopSec=60
# Only the agent: containerd, kubelet and node-problem-detector are their own units and keep running.
KillMode=mixed
# For an Azure CLI login made by another user: point at that user's CLI profile (and make it writable below).
#Environment=AZURE_CONFIG_DIR=/home/USER/.azure
StandardOutput=journal
StandardError=journal

# Hardening, as far as the job allows. The agent must write /usr, /etc, /var, /opt, /proc/sys and cgroups
# and load modules, so ProtectSystem=, ProtectKernelTunables=, ProtectKernelModules=,
# ProtectControlGroups= and PrivateDevices= are deliberately not set.
# Nothing the agent installs lives in /home, /root or /run/user: read-only there.
ProtectHome=read-only
# ...except the Azure CLI profile of root (CLI login mode: `az account get-access-token` refreshes its token
# cache there). "-": ignored when it does not exist.
ReadWritePaths=-/root/.azure
# A private /tmp: the only temp file is the 0600 azcmagent connect file, read by azcmagent, a child of the
# agent that shares this /tmp. Artifacts are staged under /var/cache/aks-flex-node, not /tmp.
PrivateTmp=yes
# The agent and its children (systemctl, azcmagent, sysctl, modprobe, iptables) already run as root and
# never need setuid to gain privileges.
NoNewPrivileges=yes
# No personality(2) changes and no realtime scheduling: neither the agent nor its children use them.
LockPersonality=yes
RestrictRealtime=yes

[Install]
WantedBy=multi-user.target
AKS_FLEX_NODE_UNIT
}

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --version) VERSION="${2:?--version needs a value}"; shift 2 ;;
    --version=*) VERSION="${1#*=}"; shift ;;
    --sha256) PIN_SHA256="${2:?--sha256 needs a value}"; shift 2 ;;
    --sha256=*) PIN_SHA256="${1#*=}"; shift ;;
    --binary) LOCAL_BINARY="${2:?--binary needs a path}"; shift 2 ;;
    --binary=*) LOCAL_BINARY="${1#*=}"; shift ;;
    --unit) LOCAL_UNIT="${2:?--unit needs a path}"; shift 2 ;;
    --unit=*) LOCAL_UNIT="${1#*=}"; shift ;;
    --with-arc-agent) WITH_ARC=1; shift ;;
    --yes | -y) YES=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --help | -h) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

VERSION="${VERSION#v}"
PIN_SHA256="$(printf '%s' "$PIN_SHA256" | tr 'A-F' 'a-f')"
if [ -n "$PIN_SHA256" ] && ! [[ "$PIN_SHA256" =~ ^[0-9a-f]{64}$ ]]; then
  die "--sha256 must be 64 hexadecimal digits"
fi
if [ -n "$VERSION" ] && ! [[ "$VERSION" =~ ^[0-9A-Za-z.+~-]+$ ]]; then
  die "--version: not a version: $VERSION"
fi
[ -z "$LOCAL_UNIT" ] || [ -n "$LOCAL_BINARY" ] || die "--unit only goes with --binary"

# ---------------------------------------------------------------------------------------------------------
# Where things go. ROOT is / on a real machine.
ROOT="${ROOT%/}"
REAL_ROOT=1
if [ -n "$ROOT" ]; then
  REAL_ROOT=0
  [ -d "$ROOT" ] || die "AKS_FLEX_NODE_INSTALL_ROOT=$ROOT is not a directory"
  ROOT="$(cd "$ROOT" && pwd -P)"
  [ "$ROOT" != / ] || { ROOT=""; REAL_ROOT=1; }
fi
r() { printf '%s%s' "$ROOT" "$1"; } # host path -> real path

# Runs a command that changes the running machine, or says it was skipped (not the real root, dry run).
host_cmd() {
  if [ "$DRY_RUN" = 1 ]; then
    log "would run: $*"
  elif [ "$REAL_ROOT" = 0 ]; then
    log "skipped (install root $ROOT is not /): $*"
  else
    log "running: $*"
    "$@"
  fi
}

[ "$(uname -s)" = Linux ] || die "aks-flex-node runs on Linux only"
case "$(uname -m)" in
  x86_64 | amd64) ARCH=amd64 ;;
  aarch64 | arm64) ARCH=arm64 ;;
  *) die "unsupported architecture $(uname -m): aks-flex-node is built for amd64 and arm64" ;;
esac

if [ "$REAL_ROOT" = 1 ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "must run as root: use sudo (or --dry-run to see what it would do)"
fi

for tool in sha256sum install mktemp awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required (coreutils, gawk/mawk)"
done

if [ "$REAL_ROOT" = 1 ] && command -v dpkg-query >/dev/null 2>&1 &&
  [ "$(dpkg-query -W -f='${Status}' aks-flex-node 2>/dev/null || true)" = "install ok installed" ]; then
  die "aks-flex-node is installed from its Debian package here: upgrade or remove it with apt-get, not this script"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/aks-flex-node-install.XXXXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# Ask a yes/no question on the terminal (stdin is the script itself under `curl | bash`).
confirm() {
  [ "$YES" = 1 ] && return 0
  [ "$DRY_RUN" = 1 ] && return 0
  local answer=""
  if ! { exec 3</dev/tty; } 2>/dev/null; then
    die "$1: no terminal to ask on; re-run with --yes"
  fi
  printf '%s [y/N] ' "$1" >/dev/tty
  read -r answer <&3 || true
  exec 3<&-
  case "$answer" in y | Y | yes | YES) return 0 ;; *) return 1 ;; esac
}

# ---------------------------------------------------------------------------------------------------------
# Downloads: https only (http on loopback), fail on HTTP errors, retry transient ones.
fetch() { # url dest
  local url="$1" dest="$2" proto="=https"
  case "$url" in
    http://127.* | http://localhost[:/]* | http://\[::1\]*) proto="=http,https" ;;
    https://*) ;;
    *) die "refusing to download over anything but https: $url" ;;
  esac
  command -v curl >/dev/null 2>&1 || die "curl is required to download a release (or use --binary)"
  curl -fsSL --proto "$proto" --proto-redir "$proto" --retry 3 --connect-timeout 20 -o "$dest" "$url"
}

UNIT_SRC=""
BIN_SRC=""
SOURCE_DESC=""
if [ -n "$LOCAL_BINARY" ]; then
  [ -f "$LOCAL_BINARY" ] || die "--binary $LOCAL_BINARY: no such file"
  BIN_SRC="$LOCAL_BINARY"
  SOURCE_DESC="local binary $LOCAL_BINARY (sha256 $(sha256sum "$LOCAL_BINARY" | awk '{print $1}'))"
  if [ -n "$LOCAL_UNIT" ]; then
    [ -f "$LOCAL_UNIT" ] || die "--unit $LOCAL_UNIT: no such file"
    UNIT_SRC="$LOCAL_UNIT"
  else
    here=""
    if [ -n "${BASH_SOURCE[0]:-}" ] && [ -f "${BASH_SOURCE[0]}" ]; then
      here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
    fi
    for cand in "$here/../packaging/aks-flex-node-agent.service" "$here/aks-flex-node-agent.service"; do
      if [ -n "$here" ] && [ -f "$cand" ]; then
        UNIT_SRC="$cand"
        break
      fi
    done
    if [ -z "$UNIT_SRC" ]; then
      UNIT_SRC="$TMP/aks-flex-node-agent.service"
      embedded_unit >"$UNIT_SRC"
    fi
  fi
else
  if [ -z "$VERSION" ]; then
    fetch "$BASE/latest/download/VERSION" "$TMP/VERSION" ||
      die "cannot read the latest version from $BASE/latest/download/VERSION; pass --version V"
    VERSION="$(tr -d ' \t\r\n' <"$TMP/VERSION")"
    VERSION="${VERSION#v}"
    [[ "$VERSION" =~ ^[0-9A-Za-z.+~-]+$ ]] || die "$BASE/latest/download/VERSION does not hold a version"
    log "latest release: $VERSION"
  fi
  NAME="aks-flex-node-$VERSION-linux-$ARCH"
  URL_DIR="$BASE/download/v$VERSION"
  log "downloading $URL_DIR/$NAME.tar.gz"
  fetch "$URL_DIR/SHA256SUMS" "$TMP/SHA256SUMS" ||
    die "cannot download $URL_DIR/SHA256SUMS: refusing to install a release that cannot be verified (nothing was installed)"
  fetch "$URL_DIR/$NAME.tar.gz" "$TMP/$NAME.tar.gz" || die "cannot download $URL_DIR/$NAME.tar.gz (nothing was installed)"
  expected="$(awk -v f="$NAME.tar.gz" '$2 == f || $2 == "*" f { print tolower($1); exit }' "$TMP/SHA256SUMS")"
  [ -n "$expected" ] || die "SHA256SUMS has no entry for $NAME.tar.gz: refusing to install (nothing was installed)"
  actual="$(sha256sum "$TMP/$NAME.tar.gz" | awk '{print $1}')"
  if [ "$actual" != "$expected" ]; then
    die "checksum mismatch for $NAME.tar.gz: SHA256SUMS says $expected, the download is $actual; refusing to install (nothing was installed)"
  fi
  if [ -n "$PIN_SHA256" ] && [ "$actual" != "$PIN_SHA256" ]; then
    die "checksum mismatch for $NAME.tar.gz: --sha256 says $PIN_SHA256, the download is $actual; refusing to install (nothing was installed)"
  fi
  log "verified: sha256 $actual  $NAME.tar.gz"
  mkdir "$TMP/x"
  tar -xzf "$TMP/$NAME.tar.gz" -C "$TMP/x" --no-same-owner --no-same-permissions \
    "$NAME/aks-flex-node" "$NAME/aks-flex-node-agent.service" ||
    die "$NAME.tar.gz does not hold $NAME/aks-flex-node and $NAME/aks-flex-node-agent.service"
  BIN_SRC="$TMP/x/$NAME/aks-flex-node"
  UNIT_SRC="$TMP/x/$NAME/aks-flex-node-agent.service"
  for f in "$BIN_SRC" "$UNIT_SRC"; do
    if [ ! -f "$f" ] || [ -L "$f" ]; then
      die "$NAME.tar.gz: $(basename "$f") is not a regular file"
    fi
  done
  SOURCE_DESC="release $VERSION from $URL_DIR/$NAME.tar.gz (sha256 $actual)"
fi

# ---------------------------------------------------------------------------------------------------------
# The manifest: one line per thing installed, tab-separated:
#   file <mode> <sha256> <path> <backup of the file it replaced, or ->
#   dir  <mode> -        <path> -
#   pkg  -      -        <Debian package> -
OLD_MANIFEST="$TMP/manifest.old"
NEW_ENTRIES="$TMP/manifest.entries"
: >"$NEW_ENTRIES"
if [ -f "$(r "$MANIFEST")" ]; then
  grep -v '^#' "$(r "$MANIFEST")" >"$OLD_MANIFEST" || true
else
  : >"$OLD_MANIFEST"
fi
entry_of() { # path -> the manifest line for it, if any
  awk -F'\t' -v p="$1" '$4 == p { print; exit }' "$OLD_MANIFEST"
}
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$NEW_ENTRIES"; }
sha_of() { sha256sum "$1" | awk '{print $1}'; }
mode_of() { stat -c '%a' "$1"; }

CHANGED=0
UNIT_CHANGED=0
BIN_CHANGED=0

# Sets INSTALLED=1 when the file was (or would be) installed, 0 when it was already in place. (No
# return-code signalling: a function called from `||` would run without set -e.)
INSTALLED=0
install_file() { # src dest mode
  local src="$1" dest="$2" mode="$3" real new cur entry backup="-"
  INSTALLED=0
  real="$(r "$dest")"
  new="$(sha_of "$src")"
  entry="$(entry_of "$dest")"
  [ -z "$entry" ] || backup="$(printf '%s' "$entry" | awk -F'\t' '{print $5}')"
  if [ -L "$real" ] || { [ -e "$real" ] && [ ! -f "$real" ]; }; then
    die "$dest exists and is not a regular file: move it away first"
  fi
  if [ -f "$real" ]; then
    cur="$(sha_of "$real")"
    if [ "$cur" = "$new" ] && [ "$(mode_of "$real")" = "${mode#0}" ]; then
      if [ -n "$entry" ]; then
        log "unchanged: $dest"
      else
        log "already in place (identical): $dest; recorded as installed"
      fi
      record file "$mode" "$new" "$dest" "$backup"
      return
    fi
    if [ -n "$entry" ] && [ "$cur" = "$(printf '%s' "$entry" | awk -F'\t' '{print $3}')" ]; then
      : # ours and unchanged since: an upgrade
    else
      local why="was not installed by this script"
      [ -z "$entry" ] || why="changed since this script installed it"
      confirm "$dest $why; replace it (the current file is kept in $STATE_DIR/backup)?" ||
        die "left $dest as it is; nothing else was changed by this run"
      if [ "$backup" = - ]; then
        backup="$STATE_DIR/backup$dest"
        if [ "$DRY_RUN" = 1 ]; then
          log "would save $dest as $backup"
        else
          mkdir -p "$(dirname "$(r "$backup")")"
          cp -p "$real" "$(r "$backup")"
          log "saved $dest as $backup (uninstall.sh puts it back)"
        fi
      fi
    fi
  fi
  CHANGED=1
  if [ "$DRY_RUN" = 1 ]; then
    log "would install $dest ($mode, sha256 $new)"
  else
    mkdir -p "$(dirname "$real")"
    # Into a temp file in the same directory, then renamed: atomic, and works while the old binary runs.
    local tmpdest
    tmpdest="$(mktemp "$(dirname "$real")/.aks-flex-node-install.XXXXXXXX")"
    install -m "$mode" "$src" "$tmpdest"
    mv -f "$tmpdest" "$real"
    log "installed $dest ($mode, sha256 $new)"
  fi
  record file "$mode" "$new" "$dest" "$backup"
  INSTALLED=1
}

ensure_dir() { # path mode
  local dir="$1" mode="$2" real
  real="$(r "$dir")"
  if [ -L "$real" ] || { [ -e "$real" ] && [ ! -d "$real" ]; }; then
    die "$dir exists and is not a directory"
  fi
  if [ -d "$real" ]; then
    if [ -n "$(entry_of "$dir")" ]; then
      log "unchanged: $dir/"
      record dir "$mode" - "$dir" -
    else
      log "exists already, left as it is (not recorded: uninstall.sh will keep it): $dir/ ($(mode_of "$real"))"
      if [ "$dir" = "$CONFIG_DIR" ] && [ $((8#$(mode_of "$real") & 8#007)) != 0 ]; then
        warn "$dir is open to every user; a config with a client secret should not be: chmod 0750 $dir"
      fi
    fi
    return 0
  fi
  CHANGED=1
  if [ "$DRY_RUN" = 1 ]; then
    log "would create $dir/ ($mode)"
  else
    mkdir -p "$(dirname "$real")"
    install -d -m "$mode" "$real"
    log "created $dir/ ($mode)"
  fi
  record dir "$mode" - "$dir" -
}

log "installing $SOURCE_DESC${ROOT:+ under $ROOT}"
install_file "$BIN_SRC" "$BIN_PATH" 0755
BIN_CHANGED=$INSTALLED
install_file "$UNIT_SRC" "$UNIT_PATH" 0644
UNIT_CHANGED=$INSTALLED
ensure_dir "$CONFIG_DIR" 0750
ensure_dir "$LOG_DIR" 0750

# ---------------------------------------------------------------------------------------------------------
# The Azure Arc agent, only when asked: Microsoft's documented install for Ubuntu/Debian (the
# packages-microsoft-prod package configures packages.microsoft.com and its signing key; apt verifies
# azcmagent with that key).
arc_installed() {
  local p
  for p in /usr/bin/azcmagent /usr/local/bin/azcmagent /opt/azcmagent/bin/azcmagent; do
    [ -x "$(r "$p")" ] && return 0
  done
  return 1
}
# Packages recorded by an earlier run stay recorded.
awk -F'\t' '$1 == "pkg"' "$OLD_MANIFEST" >>"$NEW_ENTRIES"
if [ "$WITH_ARC" = 1 ]; then
  if arc_installed; then
    if awk -F'\t' '$1 == "pkg" && $4 == "azcmagent"' "$OLD_MANIFEST" | grep -q .; then
      log "Azure Arc agent: installed by an earlier run, unchanged"
    else
      log "Azure Arc agent: azcmagent is already installed (not by this script): left as it is"
    fi
  else
    [ -f "$(r /etc/os-release)" ] || die "--with-arc-agent: no /etc/os-release, cannot tell the distribution"
    # shellcheck disable=SC1090
    os_id="$(. "$(r /etc/os-release)" && printf '%s' "${ID:-}")"
    # shellcheck disable=SC1090
    os_ver="$(. "$(r /etc/os-release)" && printf '%s' "${VERSION_ID:-}")"
    case "$os_id" in
      ubuntu | debian) ;;
      *) die "--with-arc-agent supports Ubuntu and Debian; on '$os_id' follow Microsoft's documentation for the Connected Machine agent" ;;
    esac
    repo_deb="https://packages.microsoft.com/config/$os_id/$os_ver/packages-microsoft-prod.deb"
    had_repo=0
    if [ "$REAL_ROOT" = 1 ] && dpkg-query -W -f='${Status}' packages-microsoft-prod 2>/dev/null | grep -q 'install ok installed'; then
      had_repo=1
    fi
    log "Azure Arc agent (azcmagent), installed as Microsoft documents for $os_id $os_ver:"
    log "  1. download $repo_deb"
    log "     (Microsoft's package repository configuration and its signing key)"
    log "  2. dpkg -i packages-microsoft-prod.deb"
    log "  3. apt-get update"
    log "  4. apt-get install -y azcmagent   (apt verifies it with that key)"
    if confirm "Install the Azure Arc agent from packages.microsoft.com?"; then
      if [ "$DRY_RUN" = 0 ] && [ "$REAL_ROOT" = 1 ]; then
        fetch "$repo_deb" "$TMP/packages-microsoft-prod.deb" || die "cannot download $repo_deb"
      fi
      if [ "$had_repo" = 0 ]; then
        host_cmd dpkg -i "$TMP/packages-microsoft-prod.deb"
      else
        log "packages.microsoft.com is already configured (packages-microsoft-prod installed): kept"
      fi
      host_cmd apt-get update
      host_cmd apt-get install -y azcmagent
      if [ "$DRY_RUN" = 0 ] && [ "$REAL_ROOT" = 1 ]; then
        [ "$had_repo" = 1 ] || record pkg - - packages-microsoft-prod -
        record pkg - - azcmagent -
        CHANGED=1
      fi
    else
      log "Azure Arc agent: not installed (declined)"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------------------
# Write the manifest only when it changed (a re-run touches nothing).
{
  printf '# aks-flex-node install manifest v1: what scripts/install.sh installed; scripts/uninstall.sh removes exactly this\n'
  printf '# kind\tmode\tsha256\tpath\tbackup\n'
  cat "$NEW_ENTRIES"
} >"$TMP/manifest"
if [ "$DRY_RUN" = 1 ]; then
  log "would record the above in $MANIFEST"
elif [ -f "$(r "$MANIFEST")" ] && cmp -s "$TMP/manifest" "$(r "$MANIFEST")"; then
  :
else
  mkdir -p "$(r "$STATE_DIR")"
  chmod 0755 "$(r "$STATE_DIR")"
  install -m 0644 "$TMP/manifest" "$(r "$MANIFEST").new"
  mv -f "$(r "$MANIFEST").new" "$(r "$MANIFEST")"
  log "recorded in $MANIFEST"
fi

if [ "$UNIT_CHANGED" = 1 ]; then
  host_cmd systemctl daemon-reload
fi
if [ "$REAL_ROOT" = 1 ] && [ "$DRY_RUN" = 0 ] && { [ "$UNIT_CHANGED" = 1 ] || [ "$BIN_CHANGED" = 1 ]; } &&
  systemctl is-active --quiet aks-flex-node-agent.service 2>/dev/null; then
  log "aks-flex-node-agent is running the previous version: sudo systemctl restart aks-flex-node-agent"
fi

if [ "$CHANGED" = 0 ]; then
  log "nothing to do: aks-flex-node is already installed as requested (no file was changed)"
  exit 0
fi
if [ "$DRY_RUN" = 1 ]; then
  log "dry run: nothing was changed"
  exit 0
fi

arc_hint=""
if ! arc_installed; then
  arc_hint="
  0. Install the Azure Arc agent (azcmagent): re-run with --with-arc-agent, or see Microsoft's
     documentation for Azure Arc-enabled servers."
fi
cat <<EOF

aks-flex-node is installed. Next steps:$arc_hint
  1. Write ${CONFIG_DIR}/config.json (see the README's quick start).
  2. Check it:                 sudo aks-flex-node config validate
  3. See what it would change: sudo aks-flex-node plan
  4. Start the agent:          sudo systemctl enable --now aks-flex-node-agent
                               journalctl -u aks-flex-node-agent -f
To remove it: scripts/uninstall.sh stops the agent, runs aks-flex-node unbootstrap, then removes what this
script installed (--force skips its prompt).
EOF
