//! THE effect boundary. Everything that reads or changes the machine goes through [`Host`]:
//! the rooted filesystem ([`fs::RootFs`]), programs ([`command`]), systemd services and kernel facts
//! (modules, swap, sysctl values).
//!
//! A host is either *real* (root `/`: commands run, `systemctl` is called) or a *sandbox* (any other root):
//! files are written under the root as usual, but commands that change the running host and every service
//! operation are recorded in `<root>/var/lib/aks-flex-node/sandbox.json` and simulated there, so tests
//! exercise every step without touching the machine they run on. Kernel facts in a sandbox start from the
//! root's own `/proc` and `/sys` files when a test provides them.
//!
//! Tests can also attach a recording fault injector ([`faults::Faults`], [`Host::with_faults`]) that sees
//! every effect in order and fails a chosen one.

pub mod command;
pub mod faults;
pub mod fs;
// The crate's only unsafe code (see the SAFETY comment there).
#[allow(unsafe_code)]
pub mod heap;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use command::{CommandError, CommandOutput, CommandSpec, Effect};
pub use faults::{Faults, Op};
pub use fs::{Entry, FsError, RootFs};

/// Where the agent keeps its journal, backups and sandbox record.
pub const STATE_DIR: &str = "/var/lib/aks-flex-node";
const SANDBOX_FILE: &str = "/var/lib/aks-flex-node/sandbox.json";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("sandbox record {path} is corrupt: {source}")]
    SandboxRecord {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// A systemd unit's state as far as the agent cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitState {
    pub enabled: bool,
    pub active: bool,
}

/// A unit's runtime status (`systemctl show`): enough to tell a service that stays up from one that
/// crash-loops (a restarted unit gets a new `MainPID` and a higher `NRestarts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    /// `loaded`, `not-found`, `masked`, ...
    pub load_state: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`, ...
    pub active_state: String,
    /// `running`, `auto-restart`, `exited`, `dead`, `start-pre`, ...
    pub sub_state: String,
    pub main_pid: u32,
    pub n_restarts: u32,
    /// The exit status of the main process's last run.
    pub exec_main_status: i32,
    /// `success`, `exit-code`, `signal`, `start-limit-hit`, ...
    pub result: String,
    /// `enabled`, `enabled-runtime`, `disabled`, `masked`, `static`, ... (empty: no unit file).
    pub unit_file_state: String,
}

impl UnitStatus {
    /// Active with a live main process (`active (running)`).
    pub fn running(&self) -> bool {
        self.active_state == "active" && self.sub_state == "running"
    }

    /// Enabled to start at boot (`enabled` or `enabled-runtime`), as `systemctl is-enabled` says.
    pub fn enabled(&self) -> bool {
        self.unit_file_state.starts_with("enabled")
    }

    /// `failed` (e.g. its start limit was hit): a plain `start` is refused until `reset-failed`.
    pub fn failed(&self) -> bool {
        self.active_state == "failed"
    }

    /// One line for messages: `activating (auto-restart), result exit-code, status 1, 3 restarts`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}), result {}, exit status {}, {} restart(s)",
            self.active_state, self.sub_state, self.result, self.exec_main_status, self.n_restarts
        )
    }
}

/// The properties [`Host::unit_status`] asks `systemctl show` for.
pub const UNIT_STATUS_PROPERTIES: [&str; 8] = [
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "NRestarts",
    "ExecMainStatus",
    "Result",
    "UnitFileState",
];

/// End this process at once with SIGKILL, as a crash or the OOM killer would (no destructors, no flush):
/// the crash-point fault injection of the real-node suite.
pub fn kill_self() -> ! {
    use rustix::process::{getpid, kill_process, Signal};
    let _ = kill_process(getpid(), Signal::KILL);
    // SIGKILL cannot be caught or ignored; this is not reached.
    std::process::abort()
}

/// Parse `systemctl show -p ...` output (`Key=Value` lines). Unknown keys are ignored, missing or
/// unparsable numbers read as 0.
pub fn parse_unit_status(text: &str) -> UnitStatus {
    let mut st = UnitStatus::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "LoadState" => st.load_state = v.to_string(),
            "ActiveState" => st.active_state = v.to_string(),
            "SubState" => st.sub_state = v.to_string(),
            "MainPID" => st.main_pid = v.parse().unwrap_or(0),
            "NRestarts" => st.n_restarts = v.parse().unwrap_or(0),
            "ExecMainStatus" => st.exec_main_status = v.parse().unwrap_or(0),
            "Result" => st.result = v.to_string(),
            "UnitFileState" => st.unit_file_state = v.to_string(),
            _ => {}
        }
    }
    st
}

/// Service operations, all idempotent: enabling an enabled unit or stopping a stopped one is a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceOp {
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
}

impl ServiceOp {
    pub fn verb(self) -> &'static str {
        match self {
            ServiceOp::Enable => "enable",
            ServiceOp::Disable => "disable",
            ServiceOp::Start => "start",
            ServiceOp::Stop => "stop",
            ServiceOp::Restart => "restart",
        }
    }
}

/// What a sandbox records instead of changing the machine.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    /// Every host-changing command, in order, redacted.
    pub commands: Vec<String>,
    pub units: BTreeMap<String, SandboxUnit>,
    pub daemon_reloads: u32,
    pub kernel: SimKernel,
    /// Programs the simulated machine lacks (a sandbox otherwise assumes a full system's programs,
    /// since it never runs the host-changing ones). Set by tests with [`Host::sandbox_mark_absent`].
    #[serde(default)]
    pub absent_programs: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxUnit {
    pub enabled: bool,
    pub active: bool,
    pub starts: u32,
    pub restarts: u32,
}

/// The kernel as simulated in a sandbox.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimKernel {
    pub modules: BTreeSet<String>,
    /// Active swap devices (from the root's `/proc/swaps` at first use).
    pub swaps: Vec<String>,
    /// Swap devices as they were at first use, restored by `swapon -a`.
    pub initial_swaps: Vec<String>,
    /// Live sysctl values (from the root's `/proc/sys` files at first use; changed by `sysctl -p`,
    /// `sysctl -w` and `sysctl --system`).
    pub sysctl: BTreeMap<String, String>,
}

enum Mode {
    Real,
    Sandbox(Mutex<Option<SandboxRecord>>),
}

/// The machine, seen through one root.
pub struct Host {
    pub fs: RootFs,
    mode: Mode,
}

impl Host {
    /// A host rooted at `root`; a sandbox unless `root` is `/`.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let fs = RootFs::new(root)?;
        let mode = if fs.is_host_root() {
            Mode::Real
        } else {
            Mode::Sandbox(Mutex::new(None))
        };
        Ok(Host { fs, mode })
    }

    /// The same host with every effect recorded by, and subject to, `faults` (tests: see [`faults`]).
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.fs = self.fs.with_faults(faults);
        self
    }

    /// The attached fault injector, if any.
    pub fn faults(&self) -> Option<&Faults> {
        self.fs.faults()
    }

    /// Consult the fault injector (when attached) before running `command`: an injected failure is the
    /// error of a command that exited 1, and nothing is run or recorded in the sandbox.
    fn fault(&self, op: Op, command: &str) -> Result<()> {
        let Some(msg) = self.fs.faults().and_then(|f| f.check(op, command)) else {
            return Ok(());
        };
        Err(CommandError::Failed {
            command: command.to_string(),
            code: 1,
            stderr: msg,
        }
        .into())
    }

    pub fn is_sandbox(&self) -> bool {
        matches!(self.mode, Mode::Sandbox(_))
    }

    /// Run a command. In a sandbox, host-changing commands are recorded and simulated, not run;
    /// read-only commands run for real in both modes.
    pub async fn run(&self, spec: &CommandSpec) -> Result<CommandOutput> {
        let op = match spec.effect {
            Effect::MutatesHost => Op::Run,
            Effect::ReadOnly => Op::Query,
        };
        self.fault(op, &spec.display())?;
        self.run_unrecorded(spec).await
    }

    /// [`Host::run`] without the fault injector (for the commands behind [`Host::service`], which records
    /// the service operation itself).
    async fn run_unrecorded(&self, spec: &CommandSpec) -> Result<CommandOutput> {
        match (&self.mode, spec.effect) {
            (Mode::Sandbox(_), Effect::MutatesHost) => {
                let line = spec.display();
                tracing::info!(command = %line, "sandbox: recorded instead of run");
                self.with_record(|rec, host| {
                    rec.commands.push(line);
                    simulate(rec, host, spec);
                })?;
                Ok(CommandOutput {
                    recorded: true,
                    ..Default::default()
                })
            }
            _ => Ok(command::run_real(spec).await?),
        }
    }

    /// Run and fail on a non-zero exit.
    pub async fn run_checked(&self, spec: &CommandSpec) -> Result<CommandOutput> {
        let out = self.run(spec).await?;
        Ok(command::check(spec, out)?)
    }

    async fn run_checked_unrecorded(&self, spec: &CommandSpec) -> Result<CommandOutput> {
        let out = self.run_unrecorded(spec).await?;
        Ok(command::check(spec, out)?)
    }

    /// Enabled/active state of a unit.
    pub async fn unit_state(&self, unit: &str) -> Result<UnitState> {
        match &self.mode {
            Mode::Real => {
                let enabled = command::run_real(&CommandSpec::new("systemctl").args([
                    "is-enabled",
                    "--quiet",
                    unit,
                ]))
                .await?
                .success();
                let active = command::run_real(&CommandSpec::new("systemctl").args([
                    "is-active",
                    "--quiet",
                    unit,
                ]))
                .await?
                .success();
                Ok(UnitState { enabled, active })
            }
            Mode::Sandbox(_) => self.with_record(|rec, _| {
                rec.units
                    .get(unit)
                    .map(|u| UnitState {
                        enabled: u.enabled,
                        active: u.active,
                    })
                    .unwrap_or_default()
            }),
        }
    }

    /// Runtime status of a unit (`systemctl show`). In a sandbox, derived from the recorded state: an
    /// active unit is `active (running)` with a main PID that changes with every (re)start.
    pub async fn unit_status(&self, unit: &str) -> Result<UnitStatus> {
        match &self.mode {
            Mode::Real => {
                let mut spec = CommandSpec::new("systemctl").arg("show");
                for p in UNIT_STATUS_PROPERTIES {
                    spec = spec.args(["-p", p]);
                }
                let out = self.run_checked(&spec.arg(unit)).await?;
                Ok(parse_unit_status(&out.stdout))
            }
            Mode::Sandbox(_) => self.with_record(|rec, _| {
                let known = rec.units.get(unit).cloned();
                let u = known.clone().unwrap_or_default();
                UnitStatus {
                    load_state: if known.is_some() {
                        "loaded"
                    } else {
                        "not-found"
                    }
                    .into(),
                    active_state: if u.active { "active" } else { "inactive" }.into(),
                    sub_state: if u.active { "running" } else { "dead" }.into(),
                    main_pid: if u.active {
                        1000 + u.starts + u.restarts
                    } else {
                        0
                    },
                    n_restarts: 0,
                    exec_main_status: 0,
                    result: "success".into(),
                    unit_file_state: match &known {
                        Some(u) if u.enabled => "enabled",
                        Some(_) => "disabled",
                        None => "",
                    }
                    .into(),
                }
            }),
        }
    }

    /// `systemctl <op> <unit>`. Starting a `failed` unit (one that hit its start limit) first clears
    /// that state with `systemctl reset-failed`, or systemd would refuse the start.
    pub async fn service(&self, op: ServiceOp, unit: &str) -> Result<()> {
        self.fault(Op::Service, &format!("systemctl {} {unit}", op.verb()))?;
        match &self.mode {
            Mode::Real => {
                if matches!(op, ServiceOp::Start | ServiceOp::Restart)
                    && self.unit_status(unit).await?.failed()
                {
                    let reset = CommandSpec::new("systemctl")
                        .args(["reset-failed", unit])
                        .mutates_host();
                    self.run_checked_unrecorded(&reset).await?;
                }
                let spec = CommandSpec::new("systemctl")
                    .args([op.verb(), unit])
                    .mutates_host()
                    .timeout(Duration::from_secs(300));
                self.run_checked_unrecorded(&spec).await?;
                Ok(())
            }
            Mode::Sandbox(_) => self.with_record(|rec, _| {
                rec.commands.push(format!("systemctl {} {unit}", op.verb()));
                let u = rec.units.entry(unit.to_string()).or_default();
                match op {
                    ServiceOp::Enable => u.enabled = true,
                    ServiceOp::Disable => u.enabled = false,
                    ServiceOp::Start => {
                        if !u.active {
                            u.starts += 1;
                        }
                        u.active = true
                    }
                    ServiceOp::Stop => u.active = false,
                    ServiceOp::Restart => {
                        u.restarts += 1;
                        u.active = true
                    }
                }
            }),
        }
    }

    /// `systemctl daemon-reload`.
    pub async fn daemon_reload(&self) -> Result<()> {
        self.fault(Op::DaemonReload, "systemctl daemon-reload")?;
        match &self.mode {
            Mode::Real => {
                self.run_checked_unrecorded(
                    &CommandSpec::new("systemctl")
                        .arg("daemon-reload")
                        .mutates_host(),
                )
                .await?;
                Ok(())
            }
            Mode::Sandbox(_) => self.with_record(|rec, _| {
                rec.commands.push("systemctl daemon-reload".into());
                rec.daemon_reloads += 1;
            }),
        }
    }

    /// The last journal lines of a unit, for error messages. Empty in a sandbox.
    pub async fn unit_journal_tail(&self, unit: &str, lines: u32) -> String {
        if self.is_sandbox() {
            return String::new();
        }
        let spec = CommandSpec::new("journalctl").args([
            "-u",
            unit,
            "-n",
            &lines.to_string(),
            "--no-pager",
            "-o",
            "cat",
        ]);
        match command::run_real(&spec).await {
            Ok(out) => out.stdout,
            Err(e) => format!("(journalctl unavailable: {e})"),
        }
    }

    /// Whether a kernel module is loaded (`/sys/module/<name>` exists; built-in modules with parameters
    /// have one too). See [`Host::module_available`] for the check that also knows built-in modules.
    pub fn module_loaded(&self, name: &str) -> Result<bool> {
        match &self.mode {
            Mode::Real => Ok(Path::new("/sys/module").join(name).exists()),
            Mode::Sandbox(_) => self.with_record(|rec, _| rec.kernel.modules.contains(name)),
        }
    }

    /// Whether what a kernel module provides is available without loading it: the module is loaded
    /// (`/sys/module/<name>`; in a sandbox the simulated set, which starts from the root's `/sys/module`
    /// and grows with each recorded `modprobe`), or built into the kernel. A built-in module has no
    /// `/sys/module` entry unless it has parameters, so it is also recognised by what it provides (for
    /// `br_netfilter` the `/proc/sys/net/bridge` sysctls, for `overlay` its line in `/proc/filesystems`) or
    /// by `/lib/modules/<release>/modules.builtin`. All of these are read under the root, so a sandbox
    /// sees the test's files.
    pub fn module_available(&self, name: &str) -> Result<bool> {
        if self.module_loaded(name)? {
            return Ok(true);
        }
        let provided = match name {
            "br_netfilter" => self.fs.exists(Path::new("/proc/sys/net/bridge"))?,
            "overlay" => self
                .fs
                .read_to_string(Path::new("/proc/filesystems"))?
                .is_some_and(|t| {
                    t.lines()
                        .any(|l| l.split_whitespace().last() == Some("overlay"))
                }),
            _ => false,
        };
        if provided {
            return Ok(true);
        }
        let Some(release) = self
            .fs
            .read_to_string(Path::new("/proc/sys/kernel/osrelease"))?
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty() && !r.contains('/'))
        else {
            return Ok(false);
        };
        let builtin = Path::new("/lib/modules")
            .join(release)
            .join("modules.builtin");
        Ok(self
            .fs
            .read_to_string(&builtin)?
            .is_some_and(|t| modules_builtin_lists(&t, name)))
    }

    /// Where a program is, looked up like a shell would (`PATH`, then the sbin directories a root shell
    /// has). In a sandbox every program is assumed present unless a test marked it absent.
    pub fn find_program(&self, name: &str) -> Result<Option<PathBuf>> {
        match &self.mode {
            Mode::Real => {
                let path = std::env::var("PATH").unwrap_or_default();
                let dirs = path.split(':').filter(|d| d.starts_with('/')).chain([
                    "/usr/local/sbin",
                    "/usr/sbin",
                    "/sbin",
                    "/usr/bin",
                    "/bin",
                ]);
                for d in dirs {
                    let p = Path::new(d).join(name);
                    if is_executable_file(&p) {
                        return Ok(Some(p));
                    }
                }
                Ok(None)
            }
            Mode::Sandbox(_) => self.with_record(|rec, _| {
                (!rec.absent_programs.contains(name)).then(|| PathBuf::from(name))
            }),
        }
    }

    /// Sandbox only: make the simulated machine lack `program` (e.g. a minimal image without `kmod`).
    /// Like every sandbox change it is persisted (for later `Host`s on the root) once the state
    /// directory exists.
    pub fn sandbox_mark_absent(&self, program: &str) -> Result<()> {
        if self.is_sandbox() {
            self.with_record(|rec, _| {
                rec.absent_programs.insert(program.to_string());
            })?;
        }
        Ok(())
    }

    /// Active swap devices (from `/proc/swaps`).
    pub fn active_swaps(&self) -> Result<Vec<String>> {
        match &self.mode {
            Mode::Real => Ok(parse_proc_swaps(
                &std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
            )),
            Mode::Sandbox(_) => self.with_record(|rec, _| rec.kernel.swaps.clone()),
        }
    }

    /// The live value of a sysctl key (`net.ipv4.ip_forward`), whitespace-normalised.
    pub fn sysctl_value(&self, key: &str) -> Result<Option<String>> {
        match &self.mode {
            Mode::Real => {
                let p = Path::new("/proc/sys").join(key.replace('.', "/"));
                Ok(std::fs::read_to_string(p).ok().map(|v| normalise_ws(&v)))
            }
            Mode::Sandbox(_) => self.with_record(|rec, _| rec.kernel.sysctl.get(key).cloned()),
        }
    }

    /// A copy of what the sandbox recorded (`None` on a real host).
    pub fn sandbox_record(&self) -> Result<Option<SandboxRecord>> {
        match &self.mode {
            Mode::Real => Ok(None),
            Mode::Sandbox(_) => self.with_record(|rec, _| Some(rec.clone())),
        }
    }

    /// Load (or initialise) the sandbox record, let `f` read or change it, and persist it when changed.
    /// Persisting only happens once the state directory exists, so planning never writes.
    fn with_record<T>(&self, f: impl FnOnce(&mut SandboxRecord, &RootFs) -> T) -> Result<T> {
        let Mode::Sandbox(cell) = &self.mode else {
            unreachable!("with_record is only called in sandbox mode")
        };
        let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.load_record()?);
        }
        let rec = guard.as_mut().expect("initialised above");
        let before = serde_json::to_vec(rec).unwrap_or_default();
        let out = f(rec, &self.fs);
        let after = serde_json::to_vec(rec).unwrap_or_default();
        if before != after && self.fs.exists(Path::new(STATE_DIR))? {
            let text = serde_json::to_vec_pretty(rec).unwrap_or_default();
            // The simulated machine's own state, not an effect of the agent: not seen by the faults.
            self.fs
                .write_atomic_unrecorded(Path::new(SANDBOX_FILE), &text, 0o600, None)?;
        }
        Ok(out)
    }

    fn load_record(&self) -> Result<SandboxRecord> {
        if let Some(bytes) = self.fs.read(Path::new(SANDBOX_FILE))? {
            return serde_json::from_slice(&bytes).map_err(|source| HostError::SandboxRecord {
                path: SANDBOX_FILE.into(),
                source,
            });
        }
        // First use: take the simulated kernel from the root's own /proc and /sys, if a test made them.
        let swaps = parse_proc_swaps(
            &self
                .fs
                .read_to_string(Path::new("/proc/swaps"))?
                .unwrap_or_default(),
        );
        let modules = self
            .fs
            .list_dir(Path::new("/sys/module"))?
            .into_iter()
            .collect();
        Ok(SandboxRecord {
            kernel: SimKernel {
                modules,
                initial_swaps: swaps.clone(),
                swaps,
                sysctl: read_proc_sys(&self.fs)?,
            },
            ..Default::default()
        })
    }
}

/// Every value under the root's `/proc/sys` (a sandbox's starting kernel), keyed like `sysctl` names them
/// (`net/ipv4/ip_forward` is `net.ipv4.ip_forward`).
fn read_proc_sys(fs: &RootFs) -> Result<BTreeMap<String, String>> {
    let base = Path::new("/proc/sys");
    let mut out = BTreeMap::new();
    let mut dirs = vec![base.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for name in fs.list_dir(&dir)? {
            let p = dir.join(name);
            match fs.entry(&p)? {
                Some(Entry::Dir { .. }) => dirs.push(p),
                Some(Entry::File { .. }) => {
                    if let (Some(v), Ok(rel)) = (fs.read_to_string(&p)?, p.strip_prefix(base)) {
                        let key = rel.to_string_lossy().replace('/', ".");
                        out.insert(key, normalise_ws(&v));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Apply a recorded command's effect to the simulated kernel.
fn simulate(rec: &mut SandboxRecord, fs: &RootFs, spec: &CommandSpec) {
    let args: Vec<&str> = spec.args.iter().map(String::as_str).collect();
    match (spec.program.as_str(), args.as_slice()) {
        ("modprobe", [.., name]) => {
            rec.kernel.modules.insert((*name).to_string());
        }
        ("swapoff", ["-a"]) => rec.kernel.swaps.clear(),
        ("swapon", ["-a"]) => rec.kernel.swaps = rec.kernel.initial_swaps.clone(),
        ("sysctl", ["-p", file]) => {
            if let Ok(Some(text)) = fs.read_to_string(Path::new(file)) {
                rec.kernel.sysctl.extend(parse_sysctl_conf(&text));
            }
        }
        ("sysctl", ["-w", settings @ ..]) => {
            for kv in settings {
                if let Some((k, v)) = kv.split_once('=') {
                    rec.kernel
                        .sysctl
                        .insert(k.trim().replace('/', "."), normalise_ws(v));
                }
            }
        }
        ("sysctl", ["--system"]) => {
            rec.kernel.sysctl.clear();
            for dir in ["/usr/lib/sysctl.d", "/run/sysctl.d", "/etc/sysctl.d"] {
                for name in fs.list_dir(Path::new(dir)).unwrap_or_default() {
                    if name.ends_with(".conf") {
                        let p = Path::new(dir).join(name);
                        if let Ok(Some(text)) = fs.read_to_string(&p) {
                            rec.kernel.sysctl.extend(parse_sysctl_conf(&text));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// Whether `modules.builtin` (one path per line, e.g. `kernel/net/bridge/br_netfilter.ko`) lists the
/// module `name`; `-` and `_` are the same in module names.
pub fn modules_builtin_lists(text: &str, name: &str) -> bool {
    let norm = |s: &str| s.replace('-', "_");
    let want = norm(name);
    text.lines().any(|l| {
        let base = l.trim().rsplit('/').next().unwrap_or("");
        let base = base.split(".ko").next().unwrap_or("");
        !base.is_empty() && norm(base) == want
    })
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `key = value` lines of a sysctl.d file; comments and blanks skipped, `-key` (ignore errors) accepted.
pub fn parse_sysctl_conf(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let k = k.trim().trim_start_matches('-').replace('/', ".");
            Some((k, normalise_ws(v)))
        })
        .collect()
}

/// Device names of active swaps from `/proc/swaps` (first line is a header).
pub fn parse_proc_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn normalise_ws(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_systemctl_show_of_a_crash_looping_unit() {
        // What systemd 252 prints for the kubelet between two crashes (RestartSec pending).
        let st = parse_unit_status(
            "ActiveState=activating\nSubState=auto-restart\nMainPID=0\nNRestarts=3\nExecMainStatus=1\nResult=exit-code\n",
        );
        assert!(!st.running());
        assert!(!st.failed());
        assert_eq!(st.n_restarts, 3);
        assert_eq!(st.exec_main_status, 1);
        assert_eq!(
            st.describe(),
            "activating (auto-restart), result exit-code, exit status 1, 3 restart(s)"
        );
        let up = parse_unit_status(
            "ActiveState=active\nSubState=running\nMainPID=4242\nNRestarts=0\nExecMainStatus=0\nResult=success\nJunk\n",
        );
        assert!(up.running());
        assert_eq!(up.main_pid, 4242);
        let gave_up =
            parse_unit_status("ActiveState=failed\nSubState=failed\nResult=start-limit-hit\n");
        assert!(gave_up.failed());
        assert_eq!(gave_up.main_pid, 0, "missing numbers read as 0");
        assert!(!gave_up.enabled(), "no UnitFileState: not enabled");
        for (state, enabled) in [
            ("enabled", true),
            ("enabled-runtime", true),
            ("disabled", false),
            ("masked", false),
            ("static", false),
        ] {
            let st = parse_unit_status(&format!("UnitFileState={state}\n"));
            assert_eq!(st.enabled(), enabled, "{state}");
        }
    }

    #[test]
    fn parses_sysctl_files() {
        let parsed = parse_sysctl_conf(
            "# c\nnet.ipv4.ip_forward = 1\n-kernel.panic=10\n\nbad line\nnet/ipv4/x =  a   b \n",
        );
        assert_eq!(
            parsed,
            vec![
                ("net.ipv4.ip_forward".to_string(), "1".to_string()),
                ("kernel.panic".to_string(), "10".to_string()),
                ("net.ipv4.x".to_string(), "a b".to_string()),
            ]
        );
    }

    #[test]
    fn modules_builtin_lines_match_by_module_name() {
        let text = "kernel/fs/overlayfs/overlay.ko\nkernel/net/bridge/br_netfilter.ko.xz\nkernel/drivers/x/snd-hda.ko\n";
        assert!(modules_builtin_lists(text, "overlay"));
        assert!(modules_builtin_lists(text, "br_netfilter"));
        assert!(modules_builtin_lists(text, "snd_hda"));
        assert!(!modules_builtin_lists(text, "bridge"));
        assert!(!modules_builtin_lists("", "overlay"));
    }

    #[test]
    fn built_in_modules_are_available_by_what_they_provide() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        assert!(!host.module_available("br_netfilter").unwrap());
        assert!(!host.module_available("overlay").unwrap());
        std::fs::create_dir_all(dir.path().join("proc/sys/net/bridge")).unwrap();
        std::fs::write(
            dir.path().join("proc/filesystems"),
            "nodev\tsysfs\nnodev\toverlay\n\text4\n",
        )
        .unwrap();
        assert!(host.module_available("br_netfilter").unwrap());
        assert!(host.module_available("overlay").unwrap());
        // Nothing of this is "loaded": /sys/module has no entry.
        assert!(!host.module_loaded("overlay").unwrap());

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(dir.path().join("lib/modules/6.1.0-test")).unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        std::fs::write(
            dir.path().join("lib/modules/6.1.0-test/modules.builtin"),
            "kernel/fs/overlayfs/overlay.ko\n",
        )
        .unwrap();
        let host = Host::new(dir.path()).unwrap();
        assert!(host.module_available("overlay").unwrap());
        assert!(!host.module_available("br_netfilter").unwrap());
    }

    #[test]
    fn sandbox_programs_are_present_unless_marked_absent() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        assert!(host.find_program("modprobe").unwrap().is_some());
        host.sandbox_mark_absent("modprobe").unwrap();
        assert!(host.find_program("modprobe").unwrap().is_none());
    }

    #[test]
    fn parses_proc_swaps() {
        let text = "Filename Type Size Used Priority\n/swap.img file 100 0 -2\n/dev/sdb2 partition 5 0 -3\n";
        assert_eq!(parse_proc_swaps(text), vec!["/swap.img", "/dev/sdb2"]);
        assert!(parse_proc_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[tokio::test]
    async fn sandbox_records_host_changes_instead_of_running_them() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/swaps"),
            "Filename Type Size Used Priority\n/swap.img file 1 0 -2\n",
        )
        .unwrap();
        let host = Host::new(dir.path()).unwrap();
        assert!(host.is_sandbox());
        host.fs.create_dir_all(Path::new(STATE_DIR), 0o700).unwrap();
        assert_eq!(host.active_swaps().unwrap(), vec!["/swap.img"]);
        // `false` would fail if it were run; recorded, it succeeds and changes nothing.
        let out = host
            .run(&CommandSpec::new("swapoff").arg("-a").mutates_host())
            .await
            .unwrap();
        assert!(out.recorded);
        assert!(host.active_swaps().unwrap().is_empty());
        host.run(
            &CommandSpec::new("modprobe")
                .arg("br_netfilter")
                .mutates_host(),
        )
        .await
        .unwrap();
        assert!(host.module_loaded("br_netfilter").unwrap());
        host.service(ServiceOp::Start, "containerd").await.unwrap();
        host.service(ServiceOp::Start, "containerd").await.unwrap();
        host.service(ServiceOp::Enable, "containerd").await.unwrap();
        assert_eq!(
            host.unit_state("containerd").await.unwrap(),
            UnitState {
                enabled: true,
                active: true
            }
        );
        // The record is persisted and survives a new Host on the same root.
        let again = Host::new(dir.path()).unwrap();
        let rec = again.sandbox_record().unwrap().unwrap();
        assert_eq!(rec.units["containerd"].starts, 1);
        assert_eq!(
            rec.commands,
            vec![
                "swapoff -a",
                "modprobe br_netfilter",
                "systemctl start containerd",
                "systemctl start containerd",
                "systemctl enable containerd"
            ]
        );
    }

    #[tokio::test]
    async fn sandbox_sysctls_start_from_proc_sys_and_follow_sysctl_w() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/net/ipv4")).unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/vm")).unwrap();
        std::fs::write(dir.path().join("proc/sys/net/ipv4/ip_forward"), "0\n").unwrap();
        std::fs::write(dir.path().join("proc/sys/vm/swappiness"), "60\n").unwrap();
        let host = Host::new(dir.path()).unwrap();
        assert_eq!(
            host.sysctl_value("net.ipv4.ip_forward").unwrap().as_deref(),
            Some("0")
        );
        assert_eq!(
            host.sysctl_value("vm.swappiness").unwrap().as_deref(),
            Some("60")
        );
        host.run(
            &CommandSpec::new("sysctl")
                .args([
                    "-w",
                    "vm.swappiness=10",
                    "net.ipv4.ip_local_port_range=1024 65000",
                ])
                .mutates_host(),
        )
        .await
        .unwrap();
        assert_eq!(
            host.sysctl_value("vm.swappiness").unwrap().as_deref(),
            Some("10")
        );
        assert_eq!(
            host.sysctl_value("net.ipv4.ip_local_port_range")
                .unwrap()
                .as_deref(),
            Some("1024 65000")
        );
    }

    #[tokio::test]
    async fn read_only_commands_run_for_real_in_a_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let out = host.run(&CommandSpec::new("echo").arg("hi")).await.unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert!(!out.recorded);
        // Nothing was written: planning-time reads leave the root untouched.
        assert!(host.fs.list_dir(Path::new("/")).unwrap().is_empty());
    }
}
