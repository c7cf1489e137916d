//! The node's status: what `aks-flex-node status` prints and what the daemon writes to
//! [`STATUS_PATH`] every minute.
//!
//! It keeps the original agent's fields with their meanings (`kubeletVersion`, `runcVersion`,
//! `containerdVersion`, `kubeletRunning`, `kubeletReady`, `containerdRunning`, `arcStatus`, `lastUpdated`,
//! `agentVersion`) and adds: an overall `health` with the `problems` behind it (each says what is wrong
//! and what to do), the node name, the cluster's version and a skew check against the kubelet, every
//! step's last state from the journal, the cached Arc token's expiry (never the token), and the daemon's
//! own facts (state, last pass, last repair, last error, next retry).
//!
//! Collecting never fails and never hangs: every probe is bounded ([`PROBE_TIMEOUT`], [`ARC_TIMEOUT`]) and
//! whatever cannot be learned becomes `unknown` plus a problem. Everything is read-only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::Context;
use crate::host::{CommandSpec, FsError, Host};
use crate::render::kubelet as rk;
use crate::steps::node_ready::{self, NodeView};

/// Where the daemon writes the status (0644, readable without root).
pub const STATUS_PATH: &str = "/run/aks-flex-node/status.json";
const STATUS_DIR: &str = "/run/aks-flex-node";
/// A status file older than this means the daemon (which writes it every minute) is not running or stuck.
pub const STALE_AFTER_SECS: i64 = 180;
/// Bound of each local command and each API server request.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of `azcmagent show` (it talks to its local services, slower than the others).
pub const ARC_TIMEOUT: Duration = Duration::from_secs(10);
/// A version that could not be read (the original's word).
pub const UNKNOWN: &str = "unknown";

/// Where the steps install the binaries whose versions are reported.
const KUBELET_BIN: &str = "/usr/local/bin/kubelet";
const RUNC_BIN: &str = crate::steps::runc::RUNC_PATH;
const CONTAINERD_BIN: &str = "/usr/bin/containerd";

/// What the daemon knows that a one-shot look cannot: handed to [`collect`] by the daemon and stored in the
/// status file, from which `aks-flex-node status` takes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaemonFacts {
    /// `bootstrapping` | `running` | `retrying` (not bootstrapped yet, the last attempt failed) |
    /// `degraded` (bootstrapped, but the host or the Azure pass is failing; `lastError` says which).
    pub state: String,
    /// When the last host re-convergence pass finished.
    #[schemars(with = "Option<String>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<DateTime<Utc>>,
    /// The last thing the daemon repaired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair: Option<Repair>,
    /// The last error the daemon met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the daemon tries again (state `retrying`).
    #[schemars(with = "Option<String>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry: Option<DateTime<Utc>>,
    /// When the Azure side was last re-checked.
    #[schemars(with = "Option<String>")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_azure_pass: Option<DateTime<Utc>>,
}

/// One repair: which step changed what, when.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    pub step: String,
    pub what: String,
    #[schemars(with = "String")]
    pub at: DateTime<Utc>,
}

/// `healthy`: nothing in `problems`. `degraded`: at least one problem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    #[default]
    Degraded,
}

/// The node's `Ready` condition as the API server reports it, in the original's words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Readiness {
    /// The Node object's `Ready` condition is `True`.
    Ready,
    /// The Node object exists and is not `Ready`.
    NotReady,
    /// The API server could not be asked, or has no such node.
    #[default]
    Unknown,
}

/// The Arc agent's view of this machine (`azcmagent show -j`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArcStatus {
    /// `azcmagent` was found.
    pub installed: bool,
    /// The agent status is `Connected`.
    pub connected: bool,
    /// The machine has an Arc resource (a resource ID is known, or it is connected).
    pub registered: bool,
    /// The Arc machine's name (from azcmagent, else the configured name).
    pub machine_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The agent's last heartbeat to Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_heartbeat: Option<DateTime<Utc>>,
}

/// The cluster's API server, asked with the kubelet's own kubeconfig and credential.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// The API server URL from the kubelet's kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The API server answered (any HTTP answer counts).
    pub reachable: bool,
    /// The API server's version (`/version` gitVersion, e.g. `v1.30.6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Set when the kubelet's version is outside the supported skew window of the API server's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_warning: Option<String>,
}

/// A step's last state, from the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepState {
    /// `pending` | `done` | `failed`.
    pub status: String,
    #[schemars(with = "String")]
    pub at: DateTime<Utc>,
    /// Actions the step applied in its last run.
    pub actions: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// When credentials the node depends on expire (expiry times only, never the credentials).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialExpiry {
    /// The Arc identity's token that `aks-flex-node token` cached for the kubelet (refreshed on demand
    /// 5 minutes before this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub arc_token: Option<DateTime<Utc>>,
}

/// Everything `status` reports. Reading tolerates missing fields (a file from another agent version).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    /// `kubelet --version` without the `v`, or `unknown`.
    pub kubelet_version: String,
    /// `runc --version`, or `unknown`.
    pub runc_version: String,
    /// `containerd --version` without the `v`, or `unknown`.
    pub containerd_version: String,
    /// The kubelet unit is active and running.
    pub kubelet_running: bool,
    /// The Node object's `Ready` condition (`Ready` | `NotReady` | `Unknown`).
    pub kubelet_ready: Readiness,
    /// The containerd unit is active and running.
    pub containerd_running: bool,
    pub arc_status: ArcStatus,
    /// When this status was collected.
    #[schemars(with = "String")]
    pub last_updated: DateTime<Utc>,
    /// This agent's version.
    pub agent_version: String,

    /// `healthy` or `degraded`.
    pub health: Health,
    /// What is wrong and what to do, one sentence each; empty when healthy.
    pub problems: Vec<String>,
    /// What the configuration leaves out and how to change it (for example node-problem-detector skipped
    /// for want of a verified digest); these do not make the node unhealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The Kubernetes node name.
    pub node_name: String,
    /// The node's conditions when it is not Ready (`Type=Status (Reason: message)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_conditions: Vec<String>,
    pub cluster: ClusterStatus,
    /// Each bootstrap step's last state, by step name.
    pub steps: BTreeMap<String, StepState>,
    /// The daemon's last repair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_repair: Option<Repair>,
    /// The last error: the daemon's, else the newest failed step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub credential_expiry: CredentialExpiry,
    /// The daemon's facts; absent when no daemon wrote a status file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonFacts>,
    /// When the daemon last wrote the status file `daemon` was read from (only in `status` output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub daemon_file_written: Option<DateTime<Utc>>,
}

impl Status {
    /// Set `health` from `problems`.
    fn settle(&mut self) {
        self.health = if self.problems.is_empty() {
            Health::Healthy
        } else {
            Health::Degraded
        };
    }
}

/// The JSON Schema of the status (the file and `status -o json`), as published in
/// `docs/status.schema.json`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Status)).unwrap_or(serde_json::Value::Bool(true))
}

/// Look at the node now. Never fails: what cannot be learned is `unknown` and a problem.
pub async fn collect(ctx: &Context, facts: Option<&DaemonFacts>) -> Status {
    let cfg = &ctx.config;
    let host = &ctx.host;
    let node = cfg.agent.node_name.clone();
    let mut problems = Vec::new();

    // Local facts and the API server, concurrently: each is bounded on its own.
    let (kubelet_v, runc_v, containerd_v, kubelet_unit, containerd_unit, api, arc) = tokio::join!(
        version(host, KUBELET_BIN, "kubelet"),
        version(host, RUNC_BIN, "runc"),
        version(host, CONTAINERD_BIN, "containerd"),
        unit(host, "kubelet"),
        unit(host, "containerd"),
        api_server(host, &node),
        arc(ctx),
    );

    let mut known = |name: &str, v: Result<String, String>| {
        v.unwrap_or_else(|p| {
            problems.push(format!("{name}: {p}"));
            UNKNOWN.to_string()
        })
    };
    let kubelet_version = known("kubelet", kubelet_v);
    let runc_version = known("runc", runc_v);
    let containerd_version = known("containerd", containerd_v);

    let kubelet_running = unit_problem("kubelet", kubelet_unit, &mut problems);
    let containerd_running = unit_problem("containerd", containerd_unit, &mut problems);

    let mut cluster = api.cluster;
    problems.extend(api.problems);
    if let Some(server_version) = &cluster.version {
        if kubelet_version != UNKNOWN {
            cluster.skew_warning = skew_warning(&kubelet_version, server_version);
            if let Some(w) = &cluster.skew_warning {
                problems.push(w.clone());
            }
        }
    }

    let (arc_status, arc_problem) = arc;
    problems.extend(arc_problem);

    let journal = ctx.journal_snapshot();
    let steps: BTreeMap<String, StepState> = journal
        .steps
        .iter()
        .map(|(name, r)| {
            let status = match r.status {
                crate::engine::journal::EntryStatus::Pending => "pending",
                crate::engine::journal::EntryStatus::Done => "done",
                crate::engine::journal::EntryStatus::Failed => "failed",
            };
            (
                name.clone(),
                StepState {
                    status: status.into(),
                    at: r.at,
                    actions: r.actions,
                    error: r.error.clone(),
                },
            )
        })
        .collect();
    if steps.is_empty() {
        // First: it explains every other problem.
        problems.insert(0, "nothing has been bootstrapped on this machine (the journal records no step): run `aks-flex-node bootstrap`, or start the agent with `systemctl enable --now aks-flex-node-agent`".into());
    }
    let newest_failure = steps
        .iter()
        .filter(|(_, s)| s.status == "failed")
        .max_by_key(|(_, s)| s.at);
    if let Some((name, s)) = newest_failure {
        problems.push(format!(
            "step {name} failed at {}: {}; re-run `aks-flex-node bootstrap` after fixing the cause (the agent daemon retries by itself)",
            s.at.format("%Y-%m-%d %H:%M:%SZ"),
            s.error.as_deref().unwrap_or("no error recorded")
        ));
    }

    if let Some(f) = facts {
        if f.state == "retrying" || f.state == "degraded" {
            let when = f
                .next_retry
                .map(|t| format!(" (next try at {})", t.format("%H:%M:%SZ")))
                .unwrap_or_default();
            problems.push(format!(
                "the agent daemon's last pass failed{when}: {}; see `journalctl -u aks-flex-node-agent`",
                f.last_error.as_deref().unwrap_or("no error recorded")
            ));
        }
    }
    let last_error = facts.and_then(|f| f.last_error.clone()).or_else(|| {
        newest_failure.and_then(|(n, s)| s.error.as_ref().map(|e| format!("{n}: {e}")))
    });

    let mut st = Status {
        kubelet_version,
        runc_version,
        containerd_version,
        kubelet_running,
        kubelet_ready: api.readiness,
        containerd_running,
        arc_status,
        last_updated: Utc::now(),
        agent_version: env!("AKS_FLEX_NODE_VERSION").to_string(),
        health: Health::Healthy,
        problems,
        notes: crate::steps::all_steps()
            .iter()
            .flat_map(|step| step.notes(ctx))
            .collect(),
        node_name: node,
        node_conditions: api.conditions,
        cluster,
        steps,
        last_repair: facts.and_then(|f| f.last_repair.clone()),
        last_error,
        credential_expiry: CredentialExpiry {
            arc_token: arc_token_expiry(host),
        },
        daemon: facts.cloned(),
        daemon_file_written: None,
    };
    st.settle();
    st
}

/// What `aks-flex-node status` shows: a live [`collect`], with the daemon's facts from its status file
/// when there is one, and a problem when that file is stale (the daemon is not running or is stuck).
pub async fn collect_with_file(ctx: &Context) -> Status {
    let file = read(&ctx.host);
    let mut st = collect(ctx, file.as_ref().and_then(|f| f.daemon.as_ref())).await;
    if let Some(f) = &file {
        st.daemon_file_written = Some(f.last_updated);
        if let Some(p) = stale_problem(f.last_updated, st.last_updated) {
            st.problems.push(p);
        }
    }
    st.settle();
    st
}

/// A problem when the status file written at `written` is too old at `now`.
pub fn stale_problem(written: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    let age = (now - written).num_seconds();
    (age > STALE_AFTER_SECS).then(|| {
        format!(
            "the agent daemon's status file {STATUS_PATH} is {} old (it is rewritten every minute): the daemon is not running or is stuck; check `systemctl status aks-flex-node-agent` and `journalctl -u aks-flex-node-agent`",
            human_age(age)
        )
    })
}

/// Write the status atomically (0644), creating `/run/aks-flex-node` (0755) if needed.
pub fn write(host: &Host, status: &Status) -> Result<(), FsError> {
    host.fs.create_dir_all(Path::new(STATUS_DIR), 0o755)?;
    // Serializing these types cannot fail (string keys only); never write an empty file regardless.
    let Ok(mut body) = serde_json::to_vec_pretty(status) else {
        return Ok(());
    };
    body.push(b'\n');
    host.fs
        .write_atomic(Path::new(STATUS_PATH), &body, 0o644, None)
}

/// The status the daemon last wrote, if there is a readable one.
pub fn read(host: &Host) -> Option<Status> {
    let text = host.fs.read_to_string(Path::new(STATUS_PATH)).ok()??;
    serde_json::from_str(&text).ok()
}

/// `major.minor` of a version like `1.30.4`, `v1.30.4`, `v1.30.4-aks.1` or `1.30+`.
fn major_minor(v: &str) -> Option<(u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// Whether the kubelet's version is outside the skew Kubernetes supports against the API server's: the
/// kubelet must not be newer, and may be older by up to 3 minor versions (API server 1.28 and later) or
/// 2 (before). `None` when supported or when a version cannot be read.
pub fn skew_warning(kubelet: &str, apiserver: &str) -> Option<String> {
    let (km, kn) = major_minor(kubelet)?;
    let (am, an) = major_minor(apiserver)?;
    let window = if (am, an) >= (1, 28) { 3 } else { 2 };
    let what = if km != am || kn > an {
        "is newer than"
    } else if an - kn > window {
        "is too old for"
    } else {
        return None;
    };
    Some(format!(
        "the kubelet ({kubelet}) {what} the API server ({apiserver}): Kubernetes supports kubelets up to {window} minor versions older than the API server and never newer; set kubernetes.version to 1.{}..1.{an} and re-run bootstrap",
        an.saturating_sub(window)
    ))
}

/// The version number in `--version` output: the first word that, without a leading `v`, starts with a
/// digit and has a dot (`Kubernetes v1.30.4`, `runc version 1.1.12`, `containerd github.com/... v1.7.22 sha`).
pub fn parse_version(output: &str) -> Option<String> {
    output.split_whitespace().find_map(|w| {
        let v = w.strip_prefix('v').unwrap_or(w);
        (v.starts_with(|c: char| c.is_ascii_digit()) && v.contains('.')).then(|| v.to_string())
    })
}

/// A binary as it is on disk: the same key means the same file, unchanged (a replaced or rewritten binary
/// gets a new inode or mtime). The daemon computes the status every minute; running `containerd
/// --version` (a Go binary: ~20 ms) each time would cost more than the rest of the status together.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct VersionKey {
    path: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl VersionKey {
    fn of(program: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(program).ok()?;
        Some(VersionKey {
            path: program.to_path_buf(),
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Versions read in this process, by binary (one entry per path: a changed file replaces its entry).
static VERSIONS: std::sync::Mutex<BTreeMap<PathBuf, (VersionKey, String)>> =
    std::sync::Mutex::new(BTreeMap::new());

fn cached_version(key: &VersionKey) -> Option<String> {
    let cache = VERSIONS.lock().ok()?;
    cache
        .get(&key.path)
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
}

fn remember_version(key: VersionKey, version: &str) {
    if let Ok(mut cache) = VERSIONS.lock() {
        cache.insert(key.path.clone(), (key, version.to_string()));
    }
}

/// Run `<binary> --version` where the steps install it (under the root), else (on the real host) the one
/// on PATH. Err is the problem sentence.
async fn version(host: &Host, install_path: &str, name: &str) -> Result<String, String> {
    let installed = host
        .fs
        .resolve(Path::new(install_path))
        .ok()
        .filter(|p| p.is_file());
    let program: Option<PathBuf> = match installed {
        Some(p) => Some(p),
        None if !host.is_sandbox() => host.find_program(name).ok().flatten(),
        None => None,
    };
    let Some(program) = program else {
        return Err(format!(
            "not installed ({install_path} is missing): run `aks-flex-node bootstrap`"
        ));
    };
    let key = VersionKey::of(&program);
    if let Some(v) = key.as_ref().and_then(cached_version) {
        return Ok(v);
    }
    let spec = CommandSpec::new(program.display().to_string())
        .arg("--version")
        .timeout(PROBE_TIMEOUT);
    match host.run(&spec).await {
        Ok(out) if out.success() => {
            let v = parse_version(&out.stdout)
                .ok_or_else(|| format!("`{} --version` printed no version", program.display()))?;
            if let Some(k) = key {
                remember_version(k, &v);
            }
            Ok(v)
        }
        Ok(out) => Err(format!(
            "`{} --version` failed (exit {}): {}",
            program.display(),
            out.code,
            out.stderr.trim()
        )),
        Err(e) => Err(format!("`{} --version`: {e}", program.display())),
    }
}

async fn unit(host: &Host, unit: &str) -> Result<crate::host::UnitStatus, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, host.unit_status(unit)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "systemd did not answer within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Whether the unit runs; a problem when it does not.
fn unit_problem(
    name: &str,
    st: Result<crate::host::UnitStatus, String>,
    problems: &mut Vec<String>,
) -> bool {
    match st {
        Ok(s) if s.running() => true,
        Ok(s) if s.load_state == "not-found" => {
            problems.push(format!(
                "the {name} service is not installed (no {name}.service unit): run `aks-flex-node bootstrap`"
            ));
            false
        }
        Ok(s) => {
            problems.push(format!(
                "{name} is not running ({}): see `journalctl -u {name}`; the agent daemon restarts it, or run `aks-flex-node bootstrap`",
                s.describe()
            ));
            false
        }
        Err(e) => {
            problems.push(format!("cannot tell whether {name} runs: {e}"));
            false
        }
    }
}

struct ApiLook {
    cluster: ClusterStatus,
    readiness: Readiness,
    conditions: Vec<String>,
    problems: Vec<String>,
}

/// The API server URL of the kubeconfig's current context.
fn kubeconfig_server(text: &str) -> Option<String> {
    let kc = kube::config::Kubeconfig::from_yaml(text).ok()?;
    let ctx_name = kc.current_context.clone()?;
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)?
        .context
        .as_ref()?
        .cluster
        .clone();
    kc.clusters
        .iter()
        .find(|c| c.name == cluster_name)?
        .cluster
        .as_ref()?
        .server
        .clone()
}

/// Ask the API server, as the kubelet, for the Node object and its version.
async fn api_server(host: &Host, node: &str) -> ApiLook {
    let mut out = ApiLook {
        cluster: ClusterStatus::default(),
        readiness: Readiness::Unknown,
        conditions: Vec::new(),
        problems: Vec::new(),
    };
    let path = rk::KUBECONFIG_PATH;
    let text = match host.fs.read_to_string(Path::new(path)) {
        Ok(Some(t)) => t,
        Ok(None) => {
            out.problems.push(format!(
                "the kubelet has no kubeconfig ({path} is missing), so the node's readiness is unknown: run `aks-flex-node bootstrap`"
            ));
            return out;
        }
        Err(e) => {
            out.problems.push(format!(
                "cannot read the kubelet's kubeconfig to ask the API server about the node: {e} (run `status` as root)"
            ));
            return out;
        }
    };
    out.cluster.server = kubeconfig_server(&text);
    let server = out
        .cluster
        .server
        .clone()
        .unwrap_or_else(|| "the API server".into());
    // A sandbox root is a model of a machine, not one: like NodeReady there, never reach out to a real
    // cluster from it (tests point the kubeconfig at a loopback API server when they want one asked).
    if host.is_sandbox() && !is_loopback_url(&server) {
        out.problems.push(format!(
            "sandbox root: the API server {server} is not asked (only a loopback one is), so the node's readiness is unknown"
        ));
        return out;
    }
    let client = match tokio::time::timeout(PROBE_TIMEOUT, node_ready::kubelet_client(&text)).await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            out.problems
                .push(format!("cannot ask {server} about the node: {e}"));
            return out;
        }
        Err(_) => {
            out.problems.push(format!(
                "cannot ask {server} about the node: setting up the kubelet's client took over {}s",
                PROBE_TIMEOUT.as_secs()
            ));
            return out;
        }
    };
    let (view, version) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, node_ready::look(&client, node)),
        tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()),
    );
    if let Ok(Ok(info)) = version {
        out.cluster.reachable = true;
        out.cluster.version = Some(info.git_version);
    }
    match view {
        Ok(NodeView::Ready) => {
            out.cluster.reachable = true;
            out.readiness = Readiness::Ready;
        }
        Ok(NodeView::NotReady(conds)) => {
            out.cluster.reachable = true;
            out.readiness = Readiness::NotReady;
            let ready = conds
                .iter()
                .find(|c| c.starts_with("Ready="))
                .cloned()
                .unwrap_or_else(|| "no Ready condition reported yet".into());
            out.problems.push(format!(
                "node {node} is NotReady on {server} ({ready}): {}",
                cause(&NodeView::NotReady(conds.clone()), &ready)
            ));
            out.conditions = conds;
        }
        Ok(NodeView::Missing) => {
            out.cluster.reachable = true;
            out.problems.push(format!(
                "node {node} is not registered with {server}: check that the kubelet runs (`journalctl -u kubelet`) and that agent.nodeName matches the node's name"
            ));
        }
        Ok(view @ NodeView::Error { .. }) => {
            let NodeView::Error { status, message } = &view else {
                unreachable!()
            };
            out.cluster.reachable |= status.is_some();
            out.problems.push(format!(
                "cannot see node {node} on {server}: {}{}; likely cause: {}",
                status.map(|s| format!("HTTP {s}: ")).unwrap_or_default(),
                message.trim(),
                cause(&view, "")
            ));
        }
        Err(_) => out.problems.push(format!(
            "{server} did not answer within {}s: check the network path and proxy settings to the API server",
            PROBE_TIMEOUT.as_secs()
        )),
    }
    out
}

/// The likely cause of what the API server shows; its fallback points at the kubelet's journal, which
/// `status` does not print.
fn cause(view: &NodeView, text: &str) -> String {
    let c = node_ready::likely_cause(view, text);
    if c.contains("journal lines above") {
        "check `journalctl -u kubelet` for why".into()
    } else {
        c
    }
}

/// Whether `program` (a path, or a name looked up on PATH) exists. Commands are not rooted, so this
/// looks at the real filesystem, as running it would.
fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|d| d.starts_with('/'))
        .any(|d| Path::new(d).join(program).is_file())
}

/// The Arc agent's status, and a problem when Arc is enabled but not connected.
async fn arc(ctx: &Context) -> (ArcStatus, Option<String>) {
    let cfg = &ctx.config;
    let mut st = ArcStatus {
        machine_name: cfg.azure.arc.machine_name.clone(),
        ..Default::default()
    };
    let env = |k: &str| std::env::var(k).ok();
    let program = crate::azure::settings::AzureSettings::from_config(cfg, &env)
        .map(|s| s.azcmagent)
        .unwrap_or_else(|_| "azcmagent".into());
    let enabled = cfg.azure.arc.enabled;
    if !program_exists(&program) {
        let problem = enabled.then(|| format!(
            "the Azure Arc agent is not installed (`{program}` not found): the kubelet's credential comes from the Arc identity; run `aks-flex-node bootstrap`"
        ));
        return (st, problem);
    }
    st.installed = true;
    let no_env = BTreeMap::new();
    let agent = crate::azure::arc::Azcmagent {
        host: &ctx.host,
        program: &program,
        env: &no_env,
    };
    let shown = match tokio::time::timeout(ARC_TIMEOUT, agent.show()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return (st, enabled.then(|| format!("cannot read the Arc agent's status: {e}"))),
        Err(_) => {
            return (
                st,
                enabled.then(|| format!(
                    "`{program} show -j` did not answer within {}s: check `systemctl status himdsd`",
                    ARC_TIMEOUT.as_secs()
                )),
            )
        }
    };
    st.connected = shown.connected;
    st.registered = shown.connected || shown.resource_id.is_some();
    if let Some(n) = shown.resource_name {
        st.machine_name = n;
    }
    st.resource_group = shown.resource_group;
    st.location = shown.location;
    st.resource_id = shown.resource_id;
    st.last_heartbeat = shown
        .last_heartbeat
        .and_then(|h| DateTime::parse_from_rfc3339(&h).ok())
        .map(|t| t.with_timezone(&Utc));
    let problem = (enabled && !st.connected).then(|| {
        "the machine is not connected to Azure Arc (`azcmagent show` does not say Connected): the kubelet's token comes from the Arc identity; check `azcmagent show` and /var/opt/azcmagent/log/azcmagent.log, or re-run `aks-flex-node bootstrap`".to_string()
    });
    (st, problem)
}

/// When the Arc token `aks-flex-node token` cached expires (the token itself is never read out).
fn arc_token_expiry(host: &Host) -> Option<DateTime<Utc>> {
    let path = Path::new(crate::steps::arc_install::TOKEN_CACHE_FILE);
    let text = host.fs.read_to_string(path).ok()??;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    DateTime::from_timestamp(v["expiresOn"].as_i64()?, 0)
}

/// `42s`, `5m`, `3h10m`, `2d4h`.
fn human_age(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The human summary `status` prints.
pub fn render_text(st: &Status) -> String {
    use std::fmt::Write;
    let now = st.last_updated;
    let ago = |t: DateTime<Utc>| format!("{} ago", human_age((now - t).num_seconds()));
    let yes = |b: bool, y: &str, n: &str| if b { y.to_string() } else { n.to_string() };
    let mut rows: Vec<(&str, String)> = Vec::new();
    rows.push((
        "health",
        match st.health {
            Health::Healthy => "healthy".into(),
            Health::Degraded => {
                format!("degraded ({} problem(s), listed below)", st.problems.len())
            }
        },
    ));
    let ready = match st.kubelet_ready {
        Readiness::Ready => "Ready",
        Readiness::NotReady => "NotReady",
        Readiness::Unknown => "readiness unknown",
    };
    rows.push(("node", format!("{}  {ready}", st.node_name)));
    rows.push((
        "kubelet",
        format!(
            "{}  {}",
            st.kubelet_version,
            yes(st.kubelet_running, "running", "not running")
        ),
    ));
    rows.push((
        "containerd",
        format!(
            "{}  {}",
            st.containerd_version,
            yes(st.containerd_running, "running", "not running")
        ),
    ));
    rows.push(("runc", st.runc_version.clone()));
    let c = &st.cluster;
    rows.push((
        "cluster",
        format!(
            "{}  {}{}",
            c.version.as_deref().unwrap_or(UNKNOWN),
            c.server.as_deref().unwrap_or("(no kubeconfig)"),
            match (&c.skew_warning, c.reachable) {
                (Some(_), _) => "  version skew unsupported",
                (None, false) => "  unreachable",
                (None, true) => "",
            }
        ),
    ));
    let a = &st.arc_status;
    let mut arc = if !a.installed {
        "not installed".to_string()
    } else {
        format!(
            "{}  machine {}",
            yes(a.connected, "connected", "disconnected"),
            a.machine_name
        )
    };
    if let (Some(rg), Some(loc)) = (&a.resource_group, &a.location) {
        let _ = write!(arc, " ({rg}, {loc})");
    }
    if let Some(h) = a.last_heartbeat {
        let _ = write!(arc, ", heartbeat {}", ago(h));
    }
    rows.push(("arc", arc));
    rows.push((
        "arc token",
        match st.credential_expiry.arc_token {
            Some(t) if t > now => format!(
                "cached, expires {} (in {})",
                t.format("%Y-%m-%d %H:%M:%SZ"),
                human_age((t - now).num_seconds())
            ),
            Some(_) => "cached token expired (a new one is fetched on the next request)".into(),
            None => "none cached".into(),
        },
    ));
    let daemon = match (&st.daemon, st.daemon_file_written) {
        (Some(d), written) => {
            let mut s = d.state.clone();
            if let Some(w) = written {
                let _ = write!(s, ", status file written {}", ago(w));
            }
            if let Some(p) = d.last_pass {
                let _ = write!(s, ", last pass {}", ago(p));
            }
            s
        }
        (None, Some(w)) => format!("status file written {}", ago(w)),
        (None, None) => format!("no status file ({STATUS_PATH}): the agent daemon has not run"),
    };
    rows.push(("daemon", daemon));
    if let Some(r) = &st.last_repair {
        rows.push((
            "last repair",
            format!("{}: {} ({})", r.step, r.what, ago(r.at)),
        ));
    }
    if let Some(e) = &st.last_error {
        rows.push(("last error", e.clone()));
    }
    let mut by_status: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, s) in &st.steps {
        by_status.entry(s.status.as_str()).or_default().push(name);
    }
    rows.push((
        "steps",
        if st.steps.is_empty() {
            "none run".into()
        } else {
            by_status
                .iter()
                .map(|(status, names)| {
                    if *status == "done" {
                        format!("{} done", names.len())
                    } else {
                        format!("{status}: {}", names.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
    ));
    rows.push(("agent", st.agent_version.clone()));
    rows.push((
        "updated",
        st.last_updated.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    ));

    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<12} {v}");
    }
    if !st.problems.is_empty() {
        let _ = writeln!(out, "\nProblems:");
        for p in &st.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    if !st.notes.is_empty() {
        let _ = writeln!(out, "\nNotes:");
        for n in &st.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

/// True when `url`'s host is a loopback address (127.0.0.0/8, ::1 or `localhost`).
fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Journal;
    use crate::host::ServiceOp;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_sandbox_never_asks_a_non_loopback_api_server() {
        for (url, loopback) in [
            ("https://127.0.0.1:6443", true),
            ("https://127.9.9.9", true),
            ("https://[::1]:6443", true),
            ("https://LOCALHOST:6443", true),
            ("https://flex.hcp.westus.azmk8s.io:443", false),
            ("https://10.0.0.1:443", false),
            ("not a url", false),
        ] {
            assert_eq!(is_loopback_url(url), loopback, "{url}");
        }
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("var/lib/kubelet/kubeconfig");
        std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: k\n  cluster:\n    server: https://flex.hcp.westus.azmk8s.io:443\ncontexts:\n- name: c\n  context:\n    cluster: k\n    user: u\nusers:\n- name: u\n  user:\n    token: x\n",
        )
        .unwrap();
        let host = Host::new(dir.path()).unwrap();
        let look = api_server(&host, "n").await;
        assert_eq!(look.readiness, Readiness::Unknown);
        assert!(!look.cluster.reachable);
        assert!(
            look.problems.iter().any(|p| p.contains("is not asked")),
            "{:?}",
            look.problems
        );
    }

    /// How the loopback API server answers.
    #[derive(Clone, Copy)]
    enum Api {
        Ready,
        NotReady,
    }

    /// A loopback API server answering `/version` and `/api/v1/nodes/NAME` to the kubelet's token only.
    async fn fake_api(mode: Api, git_version: &'static str) -> String {
        let app = axum::Router::new()
            .route(
                "/version",
                get(move || async move {
                    axum::Json(serde_json::json!({
                        "major": "1", "minor": "30", "gitVersion": git_version,
                        "gitCommit": "x", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                        "goVersion": "go1.22", "compiler": "gc", "platform": "linux/amd64"
                    }))
                }),
            )
            .route(
                "/api/v1/nodes/{name}",
                get(
                    |State(mode): State<Api>, UrlPath(name): UrlPath<String>, h: HeaderMap| async move {
                        if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer node-token") {
                            return (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({
                                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                                "message": "Unauthorized", "reason": "Unauthorized", "code": 401
                            })));
                        }
                        let (status, reason) = match mode {
                            Api::Ready => ("True", "KubeletReady"),
                            Api::NotReady => ("False", "KubeletNotReady"),
                        };
                        (StatusCode::OK, axum::Json(serde_json::json!({
                            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                            "status": {"conditions": [
                                {"type": "Ready", "status": status, "reason": reason, "message": "container runtime status check"}
                            ]}
                        })))
                    },
                ),
            )
            .with_state(mode);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    /// A loopback address nothing listens on.
    async fn closed_port() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }

    /// The kubelet's kubeconfig shape, with an exec plugin that prints `node-token`.
    fn kubeconfig(server: &str) -> String {
        format!(
            r#"apiVersion: v1
kind: Config
clusters:
- name: c
  cluster:
    server: "{server}"
contexts:
- name: ctx
  context: {{cluster: c, user: node}}
current-context: ctx
users:
- name: node
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: sh
      args: ["-c", "echo '{{\"apiVersion\":\"client.authentication.k8s.io/v1beta1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"node-token\"}}}}'"]
      interactiveMode: Never
"#
        )
    }

    fn script(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A sandbox root that looks like a bootstrapped node: binaries, running units, kubeconfig, journal,
    /// a connected Arc agent, a cached token.
    struct Node {
        dir: tempfile::TempDir,
        ctx: Context,
    }

    async fn node(server: &str, kubelet: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("var/lib/aks-flex-node")).unwrap();
        script(
            &root.join("usr/local/bin/kubelet"),
            &format!("echo 'Kubernetes v{kubelet}'"),
        );
        script(
            &root.join("usr/bin/runc"),
            "echo 'runc version 1.1.12'; echo 'commit: v1.1.12-0-g51d5e946'; echo 'spec: 1.0.2-dev'",
        );
        script(
            &root.join("usr/bin/containerd"),
            "echo 'containerd github.com/containerd/containerd v1.7.22 7f7fdf5fed64eb6a7caf99b3e12efcf9d60e311c'",
        );
        let azcmagent = dir.path().join("azcmagent");
        script(
            &azcmagent,
            r#"echo '{"resourceName":"edge-1","resourceGroup":"rg","location":"westus","resourceId":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/edge-1","status":"Connected","lastHeartbeat":"2026-12-03T10:00:00Z"}'"#,
        );
        let kc = root.join("var/lib/kubelet/kubeconfig");
        std::fs::create_dir_all(kc.parent().unwrap()).unwrap();
        std::fs::write(&kc, kubeconfig(server)).unwrap();
        let cache = root.join("run/aks-flex-node/token-cache.json");
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        std::fs::write(
            &cache,
            serde_json::json!({"resource": "r", "identity": "i", "accessToken": "SECRET-TOKEN-VALUE", "expiresOn": 1_900_000_000})
                .to_string(),
        )
        .unwrap();

        let host = Arc::new(Host::new(&root).unwrap());
        for u in ["containerd", "kubelet"] {
            host.service(ServiceOp::Start, u).await.unwrap();
        }
        let mut j = Journal::default();
        for s in ["ArcInstall", "KubeletInstaller", "NodeReady"] {
            j.set_step(&host, s, 1, None).unwrap();
        }
        let cfg = crate::engine::test_config(serde_json::json!({
            "azure": {
                "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "arc": {"azcmagentPath": azcmagent.display().to_string()},
                "targetCluster": {
                    "resourceId": "/subscriptions/8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c",
                    "location": "westus"
                }
            },
            "agent": {"nodeName": "edge-1"}
        }));
        let ctx = Context::new(cfg, host).unwrap();
        Node { dir, ctx }
    }

    #[tokio::test]
    async fn a_bootstrapped_node_with_everything_up_is_healthy() {
        let server = fake_api(Api::Ready, "v1.30.6").await;
        let n = node(&server, "1.30.4").await;
        let st = collect(&n.ctx, None).await;
        assert_eq!(st.problems, Vec::<String>::new());
        assert_eq!(st.health, Health::Healthy);
        assert_eq!(st.kubelet_version, "1.30.4");
        assert_eq!(st.runc_version, "1.1.12");
        assert_eq!(st.containerd_version, "1.7.22");
        assert!(st.kubelet_running && st.containerd_running);
        assert_eq!(st.kubelet_ready, Readiness::Ready);
        assert_eq!(st.node_name, "edge-1");
        assert_eq!(st.cluster.version.as_deref(), Some("v1.30.6"));
        assert_eq!(st.cluster.server.as_deref(), Some(server.as_str()));
        assert!(st.cluster.reachable);
        assert!(st.arc_status.installed && st.arc_status.connected && st.arc_status.registered);
        assert_eq!(st.arc_status.machine_name, "edge-1");
        assert_eq!(st.arc_status.location.as_deref(), Some("westus"));
        assert_eq!(
            st.arc_status.last_heartbeat,
            Some("2026-12-03T10:00:00Z".parse().unwrap())
        );
        assert_eq!(
            st.credential_expiry.arc_token,
            DateTime::from_timestamp(1_900_000_000, 0)
        );
        assert_eq!(st.steps["KubeletInstaller"].status, "done");
        assert!(st.daemon.is_none());

        let json = serde_json::to_string(&st).unwrap();
        assert!(
            !json.contains("SECRET-TOKEN-VALUE"),
            "no token in the status"
        );
        assert!(!json.contains("node-token"), "no token in the status");
        let text = render_text(&st);
        assert!(text.starts_with("health       healthy\n"), "{text}");
        assert!(text.contains("kubelet      1.30.4  running"), "{text}");
        // NPD unset and nothing to verify it with: skipped, which the status says (and how to enable it)
        // without calling the node unhealthy.
        assert_eq!(st.notes.len(), 1, "{:?}", st.notes);
        assert!(
            st.notes[0].starts_with("node-problem-detector skipped: no verified SHA-256"),
            "{:?}",
            st.notes
        );
        assert!(
            text.contains("\nNotes:\n  - node-problem-detector skipped"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_stopped_kubelet_and_a_not_ready_node_make_it_degraded() {
        let server = fake_api(Api::NotReady, "v1.30.6").await;
        let n = node(&server, "1.30.4").await;
        n.ctx
            .host
            .service(ServiceOp::Stop, "kubelet")
            .await
            .unwrap();
        let st = collect(&n.ctx, None).await;
        assert_eq!(st.health, Health::Degraded);
        assert!(!st.kubelet_running);
        assert!(st.containerd_running);
        assert_eq!(st.kubelet_ready, Readiness::NotReady);
        assert!(
            st.node_conditions[0].starts_with("Ready=False (KubeletNotReady"),
            "{:?}",
            st.node_conditions
        );
        let all = st.problems.join("\n");
        assert!(
            all.contains("kubelet is not running (inactive (dead)"),
            "{all}"
        );
        assert!(all.contains("journalctl -u kubelet"), "{all}");
        assert!(all.contains("node edge-1 is NotReady"), "{all}");
        assert_eq!(st.problems.len(), 2, "{all}");
        assert!(render_text(&st).contains("\nProblems:\n  - "));
    }

    #[tokio::test]
    async fn an_unreachable_api_server_is_unknown_readiness_and_a_problem() {
        let server = closed_port().await;
        let n = node(&server, "1.30.4").await;
        let started = std::time::Instant::now();
        let st = collect(&n.ctx, None).await;
        assert!(started.elapsed() < Duration::from_secs(15), "bounded");
        assert_eq!(st.health, Health::Degraded);
        assert_eq!(st.kubelet_ready, Readiness::Unknown);
        assert!(!st.cluster.reachable);
        assert_eq!(st.cluster.version, None);
        let all = st.problems.join("\n");
        assert!(all.contains("cannot see node edge-1"), "{all}");
        assert!(all.contains("cannot be reached"), "{all}");
    }

    #[tokio::test]
    async fn an_unsupported_skew_is_a_problem() {
        let server = fake_api(Api::Ready, "v1.33.1").await;
        let n = node(&server, "1.29.2").await;
        let st = collect(&n.ctx, None).await;
        assert_eq!(st.health, Health::Degraded);
        let w = st.cluster.skew_warning.clone().unwrap();
        assert!(w.contains("too old"), "{w}");
        assert_eq!(st.problems, vec![w]);
    }

    #[tokio::test]
    async fn a_disconnected_arc_agent_and_a_failed_step_are_problems() {
        let server = fake_api(Api::Ready, "v1.30.6").await;
        let n = node(&server, "1.30.4").await;
        script(
            &n.dir.path().join("azcmagent"),
            r#"echo '{"status":"Disconnected","resourceName":""}'"#,
        );
        let mut j = n.ctx.journal_snapshot();
        j.set_step(
            &n.ctx.host,
            "NPDInstaller",
            0,
            Some("digest mismatch".into()),
        )
        .unwrap();
        n.ctx.reload_journal().unwrap();
        let st = collect(&n.ctx, None).await;
        assert!(st.arc_status.installed && !st.arc_status.connected);
        assert_eq!(
            st.arc_status.machine_name, "node-1",
            "the configured name when azcmagent has none"
        );
        assert_eq!(st.steps["NPDInstaller"].status, "failed");
        assert_eq!(
            st.last_error.as_deref(),
            Some("NPDInstaller: digest mismatch")
        );
        let all = st.problems.join("\n");
        assert!(all.contains("not connected to Azure Arc"), "{all}");
        assert!(all.contains("step NPDInstaller failed"), "{all}");
        assert_eq!(st.problems.len(), 2, "{all}");
    }

    #[tokio::test]
    async fn daemon_facts_are_embedded_and_a_retrying_daemon_is_a_problem() {
        let server = fake_api(Api::Ready, "v1.30.6").await;
        let n = node(&server, "1.30.4").await;
        let at: DateTime<Utc> = "2026-12-03T10:00:00Z".parse().unwrap();
        let mut facts = DaemonFacts {
            state: "running".into(),
            last_pass: Some(at),
            last_repair: Some(Repair {
                step: "ServicesEnabled".into(),
                what: "started kubelet".into(),
                at,
            }),
            ..Default::default()
        };
        let st = collect(&n.ctx, Some(&facts)).await;
        assert_eq!(st.health, Health::Healthy, "{:?}", st.problems);
        assert_eq!(st.last_repair.as_ref().unwrap().what, "started kubelet");
        assert_eq!(st.daemon.as_ref().unwrap().state, "running");

        facts.state = "retrying".into();
        facts.last_error = Some("NodeReady: timed out".into());
        let st = collect(&n.ctx, Some(&facts)).await;
        assert_eq!(st.health, Health::Degraded);
        assert_eq!(st.last_error.as_deref(), Some("NodeReady: timed out"));
        assert!(
            st.problems[0].contains("last pass failed"),
            "{:?}",
            st.problems
        );
    }

    #[tokio::test]
    async fn the_status_file_gives_the_daemon_facts_and_a_stale_one_is_a_problem() {
        let server = fake_api(Api::Ready, "v1.30.6").await;
        let n = node(&server, "1.30.4").await;
        let facts = DaemonFacts {
            state: "running".into(),
            ..Default::default()
        };
        let mut written = collect(&n.ctx, Some(&facts)).await;
        write(&n.ctx.host, &written).unwrap();

        let st = collect_with_file(&n.ctx).await;
        assert_eq!(st.health, Health::Healthy, "{:?}", st.problems);
        assert_eq!(st.daemon.as_ref().unwrap().state, "running");
        assert_eq!(st.daemon_file_written, Some(written.last_updated));

        written.last_updated = Utc::now() - chrono::Duration::minutes(10);
        write(&n.ctx.host, &written).unwrap();
        let st = collect_with_file(&n.ctx).await;
        assert_eq!(st.health, Health::Degraded);
        assert!(
            st.problems[0].contains("is 10m old")
                && st.problems[0].contains("not running or is stuck"),
            "{:?}",
            st.problems
        );
        assert!(render_text(&st).contains("status file written"));
    }

    #[test]
    fn staleness_threshold() {
        let now: DateTime<Utc> = "2026-12-03T10:00:00Z".parse().unwrap();
        assert!(stale_problem(now - chrono::Duration::seconds(60), now).is_none());
        assert!(stale_problem(now - chrono::Duration::seconds(STALE_AFTER_SECS), now).is_none());
        assert!(
            stale_problem(now - chrono::Duration::seconds(STALE_AFTER_SECS + 1), now).is_some()
        );
    }

    #[tokio::test]
    async fn write_is_atomic_0644_and_creates_the_directory_0755() {
        let server = closed_port().await;
        let n = node(&server, "1.30.4").await;
        let root = n.dir.path().join("root");
        std::fs::remove_dir_all(root.join("run")).unwrap();
        let st = collect(&n.ctx, None).await;
        write(&n.ctx.host, &st).unwrap();
        let dir = std::fs::metadata(root.join("run/aks-flex-node")).unwrap();
        assert_eq!(dir.permissions().mode() & 0o7777, 0o755);
        let file = root.join("run/aks-flex-node/status.json");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        // Replaced by rename, never rewritten in place: a reader holding the old file keeps it whole.
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
        write(&n.ctx.host, &st).unwrap();
        let ino2 = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
        assert_ne!(ino, ino2, "written to a temp file and renamed into place");
        let leftovers: Vec<_> = std::fs::read_dir(root.join("run/aks-flex-node"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "status.json")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let back = read(&n.ctx.host).unwrap();
        assert_eq!(back.last_updated, st.last_updated);
        assert_eq!(back.problems, st.problems);
        // A file from another agent version, with fewer fields, still gives the daemon's facts.
        std::fs::write(
            &file,
            r#"{"lastUpdated": "2026-12-03T10:00:00Z", "daemon": {"state": "retrying", "futureField": 1}}"#,
        )
        .unwrap();
        let partial = read(&n.ctx.host).unwrap();
        assert_eq!(partial.daemon.unwrap().state, "retrying");
        assert_eq!(
            partial.last_updated,
            "2026-12-03T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        std::fs::write(&file, "{not json").unwrap();
        assert!(read(&n.ctx.host).is_none(), "an unreadable file is no file");
    }

    #[test]
    fn version_skew_window() {
        let ok = |k: &str, a: &str| skew_warning(k, a).is_none();
        // Same and older within the window.
        assert!(ok("1.30.4", "v1.30.6"));
        assert!(ok("1.27.0", "v1.30.6"), "3 older is supported since 1.28");
        assert!(ok("1.25.3", "v1.28.0"));
        assert!(ok("1.25.3", "v1.27.9"), "2 older before 1.28");
        assert!(ok("1.30.4", "v1.30.6-aks.1"));
        assert!(ok("1.30.4", "1.31+"));
        // Too old.
        assert!(!ok("1.26.1", "v1.30.6"));
        assert!(!ok("1.24.9", "v1.27.9"), "3 older is too old before 1.28");
        assert!(!ok("1.24.9", "v1.28.0"));
        // Newer, by a minor or a major.
        let w = skew_warning("1.31.0", "v1.30.6").unwrap();
        assert!(w.contains("is newer than"), "{w}");
        assert!(w.contains("1.27..1.30"), "{w}");
        assert!(!ok("2.0.0", "v1.30.6"));
        // Unreadable versions say nothing.
        assert!(ok("unknown", "v1.30.6"));
        assert!(ok("1.30.4", ""));
    }

    #[test]
    fn versions_are_read_from_each_tools_output() {
        assert_eq!(
            parse_version("Kubernetes v1.30.4\n").as_deref(),
            Some("1.30.4")
        );
        assert_eq!(
            parse_version("runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\n").as_deref(),
            Some("1.1.12")
        );
        assert_eq!(
            parse_version("containerd github.com/containerd/containerd/v2 v2.0.0 207ad711eabd\n")
                .as_deref(),
            Some("2.0.0")
        );
        assert_eq!(parse_version("no version here"), None);
    }

    #[tokio::test]
    async fn a_binarys_version_is_read_once_until_the_binary_changes() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let bin = dir.path().join(RUNC_BIN.trim_start_matches('/'));
        let calls = dir.path().join("calls");
        let put = |v: &str| {
            std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
            let tmp = bin.with_extension("new");
            std::fs::write(
                &tmp,
                format!(
                    "#!/bin/sh\necho x >>{}\necho 'runc version {v}'\n",
                    calls.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::rename(&tmp, &bin).unwrap();
        };
        let runs = || {
            std::fs::read_to_string(&calls)
                .unwrap_or_default()
                .lines()
                .count()
        };
        put("1.1.12");
        for _ in 0..3 {
            assert_eq!(version(&host, RUNC_BIN, "runc").await.unwrap(), "1.1.12");
        }
        assert_eq!(runs(), 1, "the unchanged binary was run again");
        // An upgrade replaces the file: read again.
        put("1.2.0");
        assert_eq!(version(&host, RUNC_BIN, "runc").await.unwrap(), "1.2.0");
        assert_eq!(runs(), 2);
    }

    #[test]
    fn the_schema_names_the_originals_fields_and_ours() {
        let s = json_schema();
        let props = s["properties"].as_object().unwrap();
        for f in [
            "kubeletVersion",
            "runcVersion",
            "containerdVersion",
            "kubeletRunning",
            "kubeletReady",
            "containerdRunning",
            "arcStatus",
            "lastUpdated",
            "agentVersion",
            "health",
            "problems",
            "nodeName",
            "cluster",
            "steps",
            "lastRepair",
            "lastError",
            "credentialExpiry",
            "daemon",
        ] {
            assert!(props.contains_key(f), "{f} missing from the schema");
        }
        let arc = &s["$defs"]["ArcStatus"]["properties"];
        for f in [
            "connected",
            "registered",
            "machineName",
            "resourceGroup",
            "location",
            "resourceId",
            "lastHeartbeat",
        ] {
            assert!(arc.get(f).is_some(), "arcStatus.{f} missing");
        }
        assert_eq!(
            s["$defs"]["Health"]["enum"],
            serde_json::json!(["healthy", "degraded"])
        );
    }
}
