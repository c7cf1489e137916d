//! The engine that plans, applies, journals and undoes the bootstrap steps (the steps themselves are in
//! [`crate::steps`]; this module never names one).
//!
//! A step only *plans*: it reads the host (and Azure, read-only) and returns the [`Action`]s needed to reach
//! the desired state; an empty plan means converged. The engine applies the actions, journals how to undo
//! each one before doing it, and restarts nothing on its own. `unbootstrap` replays the journal backwards.
//! See DESIGN.md §3.

pub mod action;
pub mod effects;
#[cfg(test)]
mod fault_tests;
pub mod install;
pub mod journal;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

pub use action::{file_action, Action};
pub use journal::{Journal, JournalError, UndoOp};

use crate::config::Config;
use crate::host::{CommandSpec, Host, HostError, ServiceOp, STATE_DIR};
// Re-exported at their old paths for the benches and the agent, which name them through `steps`.
pub use crate::model::{ClusterEndpoint, Phase};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A failure with an explanation for the operator.
    #[error("{message}")]
    Failed { message: String },
    /// The configuration cannot work as written (a missing setting, a digest nobody can supply): trying
    /// again changes nothing until the operator edits the config, so the daemon exits 2 instead of
    /// retrying.
    #[error("{message}")]
    Config { message: String },
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl From<crate::host::FsError> for StepError {
    fn from(e: crate::host::FsError) -> Self {
        StepError::Host(e.into())
    }
}

impl From<crate::host::CommandError> for StepError {
    fn from(e: crate::host::CommandError) -> Self {
        StepError::Host(e.into())
    }
}

impl StepError {
    pub fn failed(message: impl Into<String>) -> Self {
        StepError::Failed {
            message: message.into(),
        }
    }

    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StepError::Other(Box::new(e))
    }

    pub fn config(message: impl Into<String>) -> Self {
        StepError::Config {
            message: message.into(),
        }
    }

    /// True when only a change to the configuration can fix this (see [`StepError::Config`]).
    pub fn is_config(&self) -> bool {
        match self {
            StepError::Config { .. } => true,
            StepError::Other(e) => e
                .downcast_ref::<crate::artifacts::ArtifactError>()
                .is_some_and(|a| matches!(a, crate::artifacts::ArtifactError::NoDigest { .. })),
            _ => false,
        }
    }

    /// The same kind of error (configuration or not) with a message that adds where it happened.
    fn within(self, message: String) -> Self {
        if self.is_config() {
            StepError::config(message)
        } else {
            StepError::failed(message)
        }
    }
}

pub type StepResult<T> = Result<T, StepError>;

/// What every step sees.
pub struct Context {
    pub config: Arc<Config>,
    pub host: Arc<Host>,
    journal: Mutex<Journal>,
    cluster: Mutex<Option<ClusterEndpoint>>,
    /// Artifacts verified into the download cache earlier in this run, by upstream URL (see
    /// [`install::prefetch`]): installer steps take them from here.
    prefetched: Mutex<HashMap<String, crate::artifacts::Fetched>>,
}

impl Context {
    pub fn new(config: Arc<Config>, host: Arc<Host>) -> Result<Self, JournalError> {
        let journal = Journal::load(&host)?;
        Ok(Context {
            config,
            host,
            journal: Mutex::new(journal),
            cluster: Mutex::new(None),
            prefetched: Mutex::new(HashMap::new()),
        })
    }

    /// Set by the step that fetched the cluster's credentials (identity phase); read by the kubelet steps.
    pub fn set_cluster_endpoint(&self, ep: ClusterEndpoint) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(ep);
    }

    /// The cluster endpoint found so far in this run, if any.
    pub fn cluster_endpoint(&self) -> Option<ClusterEndpoint> {
        self.cluster
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Forget the endpoint found in this run, so the next identity pass reads it from Azure again (the
    /// daemon's Azure pass: a rotated CA or a moved API server is noticed).
    pub fn clear_cluster_endpoint(&self) {
        *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The endpoint the identity phase found in an earlier run (kept in the journal), if it was read for
    /// the cluster the config names.
    pub fn persisted_cluster_endpoint(&self) -> Option<ClusterEndpoint> {
        let j = self.journal();
        let p = j.cluster.as_ref()?;
        if !p
            .resource_id
            .eq_ignore_ascii_case(&self.config.azure.target_cluster.resource_id)
        {
            return None;
        }
        Some(ClusterEndpoint {
            server: p.server.clone(),
            ca_pem: p.ca_pem.clone().into_bytes(),
            dns_service_ip: p.dns_service_ip,
        })
    }

    /// Keep this run's endpoint in the journal (written only when it differs from what is there).
    pub fn persist_cluster_endpoint(&self) -> Result<bool, JournalError> {
        let Some(ep) = self.cluster_endpoint() else {
            return Ok(false);
        };
        let record = journal::PersistedCluster {
            resource_id: self.config.azure.target_cluster.resource_id.clone(),
            server: ep.server,
            ca_pem: String::from_utf8_lossy(&ep.ca_pem).into_owned(),
            dns_service_ip: ep.dns_service_ip,
        };
        let mut j = self.journal();
        if j.cluster.as_ref() == Some(&record) {
            return Ok(false);
        }
        journal::ensure_state_dir(&self.host, &mut j)?;
        j.update(&self.host, |j| j.cluster = Some(record))?;
        Ok(true)
    }

    /// An artifact already fetched (and verified) into the cache in this run.
    pub fn prefetched(&self, url: &str) -> Option<crate::artifacts::Fetched> {
        self.prefetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
    }

    /// Remember an artifact fetched into the cache in this run, for the step that installs it.
    pub fn remember_prefetched(&self, url: &str, fetched: crate::artifacts::Fetched) {
        self.prefetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url.to_string(), fetched);
    }

    /// Re-read the journal from disk. A long-lived context (the daemon) calls this under the run lock, so
    /// another process's bootstrap or unbootstrap in between is seen instead of being overwritten.
    pub fn reload_journal(&self) -> Result<(), JournalError> {
        let fresh = Journal::load(&self.host)?;
        *self.journal() = fresh;
        Ok(())
    }

    fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the journal as it is now.
    pub fn journal_snapshot(&self) -> Journal {
        self.journal().clone()
    }

    /// Paths written since the services reading them were last restarted (persisted across runs, so a
    /// crash between a write and the restart still restarts next time).
    pub fn changed_paths(&self) -> BTreeSet<PathBuf> {
        self.journal().changed.clone()
    }

    /// Mark changed paths as taken into account (their services were restarted).
    pub fn consume_changed(&self, paths: &[PathBuf]) -> Result<(), JournalError> {
        let mut j = self.journal();
        if paths.iter().any(|p| j.changed.contains(p)) {
            j.update(&self.host, |j| {
                for p in paths {
                    j.changed.remove(p);
                }
            })?;
        }
        Ok(())
    }

    /// Record a step-specific undo (call it *before* creating the thing it undoes where possible).
    pub fn record_undo(
        &self,
        step: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), JournalError> {
        let mut j = self.journal();
        journal::ensure_state_dir(&self.host, &mut j)?;
        j.record_custom(&self.host, step, kind, data)
    }

    /// Record what is at `path` before a step changes it outside the generic actions.
    pub fn record_original(&self, step: &str, path: &Path) -> Result<(), JournalError> {
        let mut j = self.journal();
        journal::ensure_state_dir(&self.host, &mut j)?;
        j.record_original(&self.host, step, path)
    }

    /// Create a directory (and parents), recording the ones created for undo.
    /// A directory this call created but could not record is removed again (it is still empty), so
    /// nothing is left that unbootstrap does not know about.
    pub fn ensure_dir(&self, step: &str, path: &Path, mode: u32) -> Result<(), JournalError> {
        let mut j = self.journal();
        journal::ensure_state_dir(&self.host, &mut j)?;
        let created = self.host.fs.create_dir_all(path, mode)?;
        if let Err(e) = j.record_created_dirs(&self.host, step, created.clone()) {
            for d in created.iter().rev() {
                let _ = self.host.fs.remove_dir_if_empty(d);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Note that a step changed `path` by itself (services reading it must restart).
    pub fn mark_changed(&self, path: &Path) -> Result<(), JournalError> {
        let mut j = self.journal();
        if !j.changed.contains(path) {
            j.update(&self.host, |j| j.changed.insert(path.to_path_buf()))?;
        }
        Ok(())
    }
}

/// One bootstrap step.
#[async_trait::async_trait]
pub trait Step: Send + Sync {
    /// Stable name (the original's, so logs and docs carry over).
    fn name(&self) -> &'static str;
    fn phase(&self) -> Phase;
    /// The actions needed to converge; empty when converged. Must not change anything.
    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>>;
    /// The artifacts this step will download when it applies: read-only like `plan`, and empty when its
    /// component is already installed. Before the first step runs, the engine fetches every step's
    /// artifacts concurrently into the digest cache, so the steps then install from the cache.
    async fn artifacts(&self, _ctx: &Context) -> StepResult<Vec<crate::artifacts::ArtifactSpec>> {
        Ok(Vec::new())
    }
    /// Warnings about what this step leaves out (read-only, no network): shown by `plan` and logged by
    /// bootstrap (once per process, so the daemon's heal passes do not repeat them).
    fn notes(&self, _ctx: &Context) -> Vec<String> {
        Vec::new()
    }
    /// Apply an action against a remote API, which needs the client the planning step holds: Azure
    /// ([`Action::ArcConnect`], [`Action::AssignRole`], [`Action::WaitRoles`], [`Action::VerifyRoles`], the
    /// Arc step) and the cluster's API server ([`Action::WaitNodeReady`], NodeReady). The step applies them
    /// from the action's data. Every other action is applied by the engine alone.
    async fn apply_remote(&self, _ctx: &Context, action: &Action) -> StepResult<()> {
        Err(StepError::failed(format!(
            "step {} cannot apply {}",
            self.name(),
            action.summary()
        )))
    }
    /// Undo a custom record this step journaled.
    async fn undo_custom(
        &self,
        _ctx: &Context,
        kind: &str,
        _data: &serde_json::Value,
    ) -> StepResult<()> {
        Err(StepError::failed(format!(
            "step {} cannot undo {kind}",
            self.name()
        )))
    }
    /// Actions to run after this step's journal has been undone (reload sysctls, daemon-reload).
    async fn after_undo(&self, _ctx: &Context) -> StepResult<Vec<Action>> {
        Ok(Vec::new())
    }
}

/// `plan -o json` output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub root: PathBuf,
    pub converged: bool,
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    pub name: &'static str,
    pub phase: Phase,
    /// `converged`, `changes`, or `skipped`.
    pub status: &'static str,
    pub actions: Vec<serde_json::Value>,
    /// Warnings: what the step leaves out and how to change that.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Plan every step without changing anything.
pub async fn plan(
    ctx: &Context,
    steps: &[Box<dyn Step>],
    skip: &BTreeSet<Phase>,
) -> StepResult<Plan> {
    let mut out = Vec::new();
    for step in steps {
        if skip.contains(&step.phase()) {
            out.push(PlannedStep {
                name: step.name(),
                phase: step.phase(),
                status: "skipped",
                actions: Vec::new(),
                notes: Vec::new(),
            });
            continue;
        }
        let actions = step
            .plan(ctx)
            .await
            .map_err(|e| StepError::failed(format!("planning step {} failed: {e}", step.name())))?;
        let described = actions
            .iter()
            .map(|a| a.describe(&ctx.host))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(PlannedStep {
            name: step.name(),
            phase: step.phase(),
            status: if described.is_empty() {
                "converged"
            } else {
                "changes"
            },
            actions: described,
            notes: step.notes(ctx),
        });
    }
    Ok(Plan {
        api_version: "aks-flex-node/v2",
        kind: "Plan",
        root: ctx.host.fs.root().to_path_buf(),
        converged: out.iter().all(|s| s.status != "changes"),
        steps: out,
    })
}

/// How one step went.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum StepOutcome {
    Converged,
    Applied { actions: usize },
    Skipped,
    Failed { error: String },
}

#[derive(Debug, Serialize)]
pub struct StepReport {
    pub name: &'static str,
    pub phase: Phase,
    #[serde(flatten)]
    pub outcome: StepOutcome,
    /// What the applied actions did (their summaries), for the daemon's repair log.
    #[serde(skip)]
    pub applied: Vec<String>,
    /// How long the step took (planning and applying).
    #[serde(skip)]
    pub elapsed: std::time::Duration,
}

impl StepReport {
    fn new(step: &dyn Step, outcome: StepOutcome) -> Self {
        StepReport {
            name: step.name(),
            phase: step.phase(),
            outcome,
            applied: Vec::new(),
            elapsed: std::time::Duration::ZERO,
        }
    }
}

/// An exclusive lock on the state directory so two agents never run steps at once.
pub struct RunLock {
    _file: std::fs::File,
}

pub fn lock(ctx: &Context) -> StepResult<RunLock> {
    {
        let mut j = ctx.journal();
        journal::ensure_state_dir(&ctx.host, &mut j)?;
    }
    let path = Path::new(STATE_DIR).join(".lock");
    let file = ctx.host.fs.open_append(&path, 0o600)?;
    // flock(LOCK_EX | LOCK_NB): held until the file is closed, released by the kernel if the process dies.
    if file.try_lock().is_err() {
        return Err(StepError::failed(format!(
            "another aks-flex-node is running against {} (lock {} is held); wait for it or stop it",
            ctx.host.fs.root().display(),
            path.display()
        )));
    }
    Ok(RunLock { _file: file })
}

/// True when bootstrap has nothing to do: lets a converged run skip even the lock file.
async fn plan_all_empty(
    ctx: &Context,
    steps: &[Box<dyn Step>],
    skip: &BTreeSet<Phase>,
) -> StepResult<bool> {
    for step in steps.iter().filter(|s| !skip.contains(&s.phase())) {
        let actions = step.plan(ctx).await.map_err(|e| {
            let message = format!("planning step {} failed: {e}", step.name());
            e.within(message)
        })?;
        if !actions.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Converge every step in order, failing fast. A converged host is left byte-for-byte untouched.
pub async fn bootstrap(
    ctx: &Context,
    steps: &[Box<dyn Step>],
    skip: &BTreeSet<Phase>,
) -> (Vec<StepReport>, StepResult<()>) {
    let mut reports = Vec::new();
    if let Err(e) = ctx.reload_journal() {
        return (reports, Err(e.into()));
    }
    warn_notes(ctx, steps, skip);
    // Steps plan against the state their predecessors leave, so a full pre-plan is only a shortcut for
    // the common converged case (the daemon's health check re-runs bootstrap).
    match plan_all_empty(ctx, steps, skip).await {
        Ok(true) => {
            for s in steps {
                let outcome = if skip.contains(&s.phase()) {
                    StepOutcome::Skipped
                } else {
                    StepOutcome::Converged
                };
                reports.push(StepReport::new(s.as_ref(), outcome));
            }
            let result = persist_endpoint(ctx, &reports);
            return (reports, result);
        }
        Ok(false) => {}
        Err(e) => return (reports, Err(e)),
    }
    // Which artifacts the steps need is decided before anything is written (so a missing digest source
    // is refused with nothing changed); fetching them happens under the lock.
    let wanted = match artifacts_wanted(ctx, steps, skip).await {
        Ok(w) => w,
        Err((step, e)) => return prefetch_failed(reports, step, e),
    };
    let _lock = match lock(ctx) {
        Ok(l) => l,
        Err(e) => return (reports, Err(e)),
    };
    if let Err(e) = ctx.reload_journal() {
        return (reports, Err(e.into()));
    }
    let specs: Vec<_> = wanted.iter().map(|(s, a)| (s.name(), a.clone())).collect();
    if let Err((i, e)) = install::prefetch(ctx, &specs).await {
        return prefetch_failed(reports, wanted[i].0, e);
    }
    for step in steps {
        if skip.contains(&step.phase()) {
            tracing::info!(step = step.name(), phase = %step.phase(), "skipped (phase skipped)");
            reports.push(StepReport::new(step.as_ref(), StepOutcome::Skipped));
            continue;
        }
        let started = std::time::Instant::now();
        let result = run_step(ctx, step.as_ref()).await;
        let mut report = StepReport::new(
            step.as_ref(),
            match &result {
                Ok(done) if done.is_empty() => StepOutcome::Converged,
                Ok(done) => StepOutcome::Applied {
                    actions: done.len(),
                },
                Err(e) => StepOutcome::Failed {
                    error: e.to_string(),
                },
            },
        );
        report.elapsed = started.elapsed();
        match result {
            Ok(done) => {
                report.applied = done;
                reports.push(report);
                if step.phase() == Phase::Identity {
                    if let Err(e) = persist_endpoint(ctx, &reports) {
                        return (reports, Err(e));
                    }
                }
            }
            Err(e) => {
                reports.push(report);
                let message = format!(
                    "bootstrap failed at step {}: {e}\nRe-run to resume from here, or run `aks-flex-node unbootstrap` to undo what was done.",
                    step.name()
                );
                return (reports, Err(e.within(message)));
            }
        }
    }
    (reports, Ok(()))
}

/// Once the identity phase has succeeded in this run, keep the cluster endpoint it found in the journal,
/// so later host-only passes (the daemon after a restart, with or without Azure) can use it.
fn persist_endpoint(ctx: &Context, reports: &[StepReport]) -> StepResult<()> {
    let identity_ok = reports.iter().any(|r| {
        r.phase == Phase::Identity
            && matches!(
                r.outcome,
                StepOutcome::Converged | StepOutcome::Applied { .. }
            )
    });
    if identity_ok {
        ctx.persist_cluster_endpoint()?;
    }
    Ok(())
}

/// Log every step's notes as warnings, each once per process (the daemon re-runs bootstrap every few
/// minutes).
fn warn_notes(ctx: &Context, steps: &[Box<dyn Step>], skip: &BTreeSet<Phase>) {
    static WARNED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    for step in steps.iter().filter(|s| !skip.contains(&s.phase())) {
        for note in step.notes(ctx) {
            let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
            if warned.insert(note.clone()) {
                tracing::warn!(step = step.name(), "{note}");
            }
        }
    }
}

/// The artifacts every step that will run is going to install (each with its step). Only reached when
/// something is to be done (a converged node returns before this), and a step whose component is
/// installed asks for nothing, so converged steps cause no network traffic. The engine then fetches them
/// all concurrently into the digest cache before the first step runs.
async fn artifacts_wanted<'a>(
    ctx: &Context,
    steps: &'a [Box<dyn Step>],
    skip: &BTreeSet<Phase>,
) -> Result<Vec<(&'a dyn Step, crate::artifacts::ArtifactSpec)>, (&'a dyn Step, StepError)> {
    let mut wanted = Vec::new();
    for step in steps.iter().filter(|s| !skip.contains(&s.phase())) {
        let specs = step.artifacts(ctx).await.map_err(|e| (step.as_ref(), e))?;
        wanted.extend(specs.into_iter().map(|s| (step.as_ref(), s)));
    }
    Ok(wanted)
}

fn prefetch_failed(
    mut reports: Vec<StepReport>,
    step: &dyn Step,
    e: StepError,
) -> (Vec<StepReport>, StepResult<()>) {
    reports.push(StepReport::new(
        step,
        StepOutcome::Failed {
            error: e.to_string(),
        },
    ));
    let message = format!(
        "bootstrap failed at step {} (preparing its downloads, before any step ran): {e}\nRe-run once the artifact source is fixed; what was downloaded stays in the cache.",
        step.name()
    );
    (reports, Err(e.within(message)))
}

/// Apply one step's plan; returns the summaries of the actions it applied (empty: converged).
async fn run_step(ctx: &Context, step: &dyn Step) -> StepResult<Vec<String>> {
    let actions = step.plan(ctx).await?;
    if actions.is_empty() {
        tracing::info!(step = step.name(), "up to date");
        return Ok(Vec::new());
    }
    tracing::info!(
        step = step.name(),
        actions = actions.len(),
        "applying changes"
    );
    let n = actions.len();
    // A step that only waits (NodeReady on a converged node) writes nothing, not even the journal.
    let journaled = actions.iter().any(|a| !a.is_wait());
    for action in &actions {
        if action.is_wait() {
            tracing::info!(step = step.name(), "{}", action.summary());
            apply(ctx, step, action).await?;
            continue;
        }
        let seq = {
            let mut j = ctx.journal();
            j.begin(&ctx.host, step.name(), action.summary())?
        };
        tracing::info!(step = step.name(), "{}", action.summary());
        crash_point(step.name(), action, "before");
        let res = apply(ctx, step, action).await;
        crash_point(step.name(), action, "after");
        let mut j = ctx.journal();
        j.finish(&ctx.host, seq, res.as_ref().err().map(|e| e.to_string()))?;
        if let Err(e) = res {
            j.set_step(&ctx.host, step.name(), n, Some(e.to_string()))?;
            return Err(e);
        }
    }
    if journaled {
        ctx.journal().set_step(&ctx.host, step.name(), n, None)?;
    }
    Ok(actions.iter().map(Action::summary).collect())
}

/// Names the file for the real-node suite's crash scenario (test-only; unset in production).
pub const CRASH_FILE_ENV: &str = "AKS_FLEX_NODE_TEST_CRASH_FILE";
/// At most this many crashes per file, so an action whose summary changes each run cannot loop forever.
const CRASH_MAX: usize = 400;

/// Fault injection for the crash scenario of the real-node suite: when [`CRASH_FILE_ENV`] names a file,
/// the agent kills itself (SIGKILL: no cleanup, no flush) at the first action boundary that the file does
/// not list yet, appending it first. The boundaries: right after the journal records an action as pending,
/// and right after the action, before the journal records it done. Restarted by systemd each time, the
/// agent thereby dies once at every boundary of a bootstrap and must still converge.
fn crash_point(step: &str, action: &Action, when: &str) {
    let Some(file) = std::env::var_os(CRASH_FILE_ENV) else {
        return;
    };
    let point = format!("{step} | {} | {when}", action.summary().replace('\n', " "));
    // The file is the test's, not host state: it is read and written as named, also in a sandbox root.
    let seen = std::fs::read_to_string(&file).unwrap_or_default();
    if seen.lines().count() >= CRASH_MAX || seen.lines().any(|l| l == point) {
        return;
    }
    use std::io::Write;
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
    {
        Ok(mut f) => {
            if writeln!(f, "{point}").and_then(|_| f.sync_all()).is_err() {
                return;
            }
        }
        Err(_) => return,
    }
    tracing::warn!("test crash point: killing this process at {point}");
    crate::host::kill_self();
}

/// Apply one action, journaling how to undo it first.
async fn apply(ctx: &Context, step: &dyn Step, action: &Action) -> StepResult<()> {
    let name = step.name();
    let host = &ctx.host;
    match action {
        Action::WriteFile {
            path,
            mode,
            owner,
            content,
            ..
        } => {
            // Marked changed before the change: a mark that cannot be saved then stops the action,
            // instead of leaving a change whose services are never restarted for it.
            prepare_entry(ctx, name, path)?;
            ctx.mark_changed(path)?;
            host.fs
                .write_atomic(path, content, *mode, Some(owner.unwrap_or((0, 0))))?;
        }
        Action::RemoveFile { path } => {
            ctx.record_original(name, path)?;
            ctx.mark_changed(path)?;
            host.fs.remove_file(path)?;
        }
        Action::Symlink { path, target } => {
            prepare_entry(ctx, name, path)?;
            ctx.mark_changed(path)?;
            host.fs.symlink(target, path)?;
        }
        Action::EnsureDir { path, mode } => ctx.ensure_dir(name, path, *mode)?,
        Action::Run { argv, effect, .. } => {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| StepError::failed("empty command"))?;
            let mut spec = CommandSpec::new(program).args(args.iter().cloned());
            spec.effect = *effect;
            host.run_checked(&spec).await?;
        }
        Action::Service { op, unit } => {
            let was = host.unit_state(unit).await?;
            {
                let mut j = ctx.journal();
                journal::ensure_state_dir(host, &mut j)?;
                j.record_unit(host, name, unit, was)?;
            }
            host.service(*op, unit).await?;
        }
        Action::DaemonReload => host.daemon_reload().await?,
        Action::InstallArtifact(a) => {
            install::apply(ctx, name, a).await?;
        }
        Action::ApplySysctls { file, keys } => {
            effects::apply_sysctls(ctx, name, file, keys).await?
        }
        Action::SwapOff => effects::swap_off(ctx, name).await?,
        Action::RecordRuntimeDirs { dirs } => effects::record_runtime_dirs(ctx, name, dirs)?,
        Action::SettleServices {
            watch,
            consumed,
            settle_seconds,
        } => effects::settle(ctx, watch, consumed, *settle_seconds).await?,
        Action::ArcConnect { .. }
        | Action::AssignRole { .. }
        | Action::WaitRoles { .. }
        | Action::VerifyRoles { .. }
        | Action::WaitNodeReady { .. } => step.apply_remote(ctx, action).await?,
        // Read while planning (read-only); nothing is left to do.
        Action::UseClusterEndpoint { .. } => {}
    }
    Ok(())
}

/// Before replacing `path`: create (and record) missing parent directories and record the original.
fn prepare_entry(ctx: &Context, step: &str, path: &Path) -> StepResult<()> {
    if let Some(parent) = path.parent() {
        ctx.ensure_dir(step, parent, 0o755)?;
    }
    ctx.record_original(step, path)?;
    Ok(())
}

/// What unbootstrap could not undo.
#[derive(Debug, Default, Serialize)]
pub struct UndoReport {
    pub undone: Vec<String>,
    pub failures: Vec<String>,
    /// Directories left in place because something else put files in them.
    pub kept: Vec<String>,
    /// Set when there was no journal: the machine was never bootstrapped by this agent (the message says
    /// so and where the journal would be). Not a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nothing_to_do: Option<String>,
}

/// Undo everything the journal records, step by step in reverse order. Best effort: every failure is
/// reported and what could not be undone stays in the journal for a later attempt. If the journal itself
/// cannot be updated after an undo, unbootstrap stops there (reported as a failure): going on would leave
/// a journal on disk that no longer matches the machine.
pub async fn unbootstrap(ctx: &Context, steps: &[Box<dyn Step>]) -> UndoReport {
    let mut report = UndoReport::default();
    let journal_path = Path::new(journal::JOURNAL_PATH);
    let no_journal = |ctx: &Context| {
        ctx.journal().is_empty() && !ctx.host.fs.exists(journal_path).unwrap_or(false)
    };
    let nothing = || {
        format!(
            "nothing to undo: this machine was not bootstrapped by aks-flex-node (no journal at {})",
            ctx.host
                .fs
                .root()
                .join(journal::JOURNAL_PATH.trim_start_matches('/'))
                .display()
        )
    };
    if no_journal(ctx) && !ctx.host.fs.exists(Path::new(STATE_DIR)).unwrap_or(false) {
        report.nothing_to_do = Some(nothing());
        return report;
    }
    let _lock = match lock(ctx) {
        Ok(l) => l,
        Err(e) => {
            report.failures.push(e.to_string());
            return report;
        }
    };
    if let Err(e) = ctx.reload_journal() {
        report.failures.push(e.to_string());
        return report;
    }
    if no_journal(ctx) {
        // Still go on: leftovers without a journal (a lock file) are cleaned up below.
        report.nothing_to_do = Some(nothing());
    }
    // Steps in reverse; then anything journaled by a step this agent no longer knows.
    let mut names: Vec<&str> = steps.iter().rev().map(|s| s.name()).collect();
    let journal_steps: Vec<String> = ctx.journal().undo.iter().map(|e| e.step.clone()).collect();
    for s in journal_steps.iter().rev() {
        if !names.contains(&s.as_str()) {
            names.push(s.as_str());
        }
    }
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name.to_string()) {
            continue;
        }
        let step = steps.iter().find(|s| s.name() == name);
        let entries = ctx.journal().undo_for(name);
        let had_entries = !entries.is_empty() || ctx.journal().steps.contains_key(name);
        if !had_entries {
            continue;
        }
        let mut ok = true;
        for entry in entries {
            let done = match undo_one(ctx, step.map(|s| s.as_ref()), &entry.op).await {
                Ok(UndoResult::Done) => true,
                // Not empty because one of our own undos failed in it (its file is still there): keep
                // the record, so the next run removes the directory once that undo succeeds.
                Ok(UndoResult::Kept(_)) if !report.failures.is_empty() => {
                    ok = false;
                    false
                }
                Ok(UndoResult::Kept(msg)) => {
                    report.kept.push(msg);
                    true
                }
                Err(e) => {
                    ok = false;
                    report.failures.push(format!("{name}: {e}"));
                    false
                }
            };
            if done {
                if let Err(e) = ctx.journal().drop_undo(&ctx.host, entry.seq) {
                    report.failures.push(journal_stuck(name, &e));
                    return report;
                }
            }
        }
        if let Some(step) = step {
            match step.after_undo(ctx).await {
                Ok(actions) => {
                    for a in actions {
                        if let Err(e) = apply_untracked(ctx, &a).await {
                            ok = false;
                            report
                                .failures
                                .push(format!("{name}: {}: {e}", a.summary()));
                        }
                    }
                }
                Err(e) => {
                    ok = false;
                    report.failures.push(format!("{name}: {e}"));
                }
            }
        }
        if ok {
            if let Err(e) = ctx.journal().forget_step(&ctx.host, name) {
                report.failures.push(journal_stuck(name, &e));
                return report;
            }
            report.undone.push(name.to_string());
        }
    }
    if report.failures.is_empty() {
        if let Err(e) = remove_state(ctx) {
            report
                .failures
                .push(format!("removing the agent's state: {e}"));
        }
    }
    report
}

/// The failure reported when the journal cannot be updated after an undo: unbootstrap stops there.
fn journal_stuck(step: &str, e: &JournalError) -> String {
    format!(
        "{step}: the journal could not be updated ({e}); stopped here so that the journal on disk still \
         lists everything not yet undone (what was just undone is listed too and is undone again, \
         harmlessly, next time): fix the cause and run unbootstrap again"
    )
}

enum UndoResult {
    Done,
    Kept(String),
}

async fn undo_one(ctx: &Context, step: Option<&dyn Step>, op: &UndoOp) -> StepResult<UndoResult> {
    let host = &ctx.host;
    match op {
        UndoOp::RestorePath { path, original } => {
            use journal::Original;
            match original {
                Original::Absent => {
                    if let Some(crate::host::Entry::Dir { .. }) = host.fs.entry(path)? {
                        if !host.fs.remove_dir_if_empty(path)? {
                            return Ok(UndoResult::Kept(format!(
                                "{} (directory not empty)",
                                path.display()
                            )));
                        }
                    } else {
                        host.fs.remove_file(path)?;
                    }
                }
                Original::File {
                    mode,
                    uid,
                    gid,
                    backup,
                } => {
                    let bpath = Path::new(journal::BACKUP_DIR).join(backup);
                    let bytes = host.fs.read(&bpath)?.ok_or_else(|| {
                        StepError::failed(format!(
                            "backup {} of {} is missing; cannot restore the original",
                            bpath.display(),
                            path.display()
                        ))
                    })?;
                    host.fs
                        .write_atomic(path, &bytes, *mode, Some((*uid, *gid)))?;
                }
                Original::Symlink { target } => host.fs.symlink(target, path)?,
                Original::Dir { .. } => {}
            }
        }
        UndoOp::RemoveDir { path } => {
            if !host.fs.remove_dir_if_empty(path)? && host.fs.exists(path)? {
                return Ok(UndoResult::Kept(format!(
                    "{} (directory not empty)",
                    path.display()
                )));
            }
        }
        UndoOp::RestoreUnit { unit, was } => {
            let now = host.unit_state(unit).await?;
            if now.active && !was.active {
                host.service(ServiceOp::Stop, unit).await?;
            }
            if now.enabled && !was.enabled {
                host.service(ServiceOp::Disable, unit).await?;
            }
            if was.enabled && !now.enabled {
                host.service(ServiceOp::Enable, unit).await?;
            }
            if was.active && !now.active {
                host.service(ServiceOp::Start, unit).await?;
            }
        }
        UndoOp::Custom { kind, data } => match step {
            Some(s) => s.undo_custom(ctx, kind, data).await?,
            None => {
                return Err(StepError::failed(format!(
                "journal holds a `{kind}` undo record of a step this agent version does not know"
            )))
            }
        },
    }
    Ok(UndoResult::Done)
}

/// Apply an action during undo (no journaling: it restores, it does not create).
async fn apply_untracked(ctx: &Context, action: &Action) -> StepResult<()> {
    let host = &ctx.host;
    match action {
        Action::Run { argv, effect, .. } => {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| StepError::failed("empty command"))?;
            let mut spec = CommandSpec::new(program).args(args.iter().cloned());
            spec.effect = *effect;
            host.run_checked(&spec).await?;
        }
        Action::DaemonReload => host.daemon_reload().await?,
        Action::Service { op, unit } => host.service(*op, unit).await?,
        Action::RemoveFile { path } => {
            host.fs.remove_file(path)?;
        }
        other => {
            return Err(StepError::failed(format!(
                "`{}` is not allowed during undo",
                other.summary()
            )))
        }
    }
    Ok(())
}

/// After a complete undo: remove the journal, backups, lock, sandbox record and the state directories the
/// agent created, leaving the root as it was before the first bootstrap.
fn remove_state(ctx: &Context) -> StepResult<()> {
    let fs = &ctx.host.fs;
    let created = ctx.journal().state_dirs_created.clone();
    let state = Path::new(STATE_DIR);
    fs.remove_dir_all(Path::new(journal::BACKUP_DIR))?;
    // The journal last: while anything else is left, a later run still knows what to remove.
    for f in ["sandbox.json", ".lock", "journal.json"] {
        fs.remove_file(&state.join(f))?;
    }
    for (i, d) in created.iter().enumerate().rev() {
        if let Err(e) = fs.remove_dir_if_empty(d) {
            // The journal is gone but this directory (and those above it) are not: write back a journal
            // listing only them, so the next run still knows to remove them.
            let mut left = Journal::default();
            left.state_dirs_created = created[..=i].to_vec();
            let _ = left.save(&ctx.host);
            *ctx.journal() = left;
            return Err(e.into());
        }
    }
    *ctx.journal() = Journal::default();
    Ok(())
}

/// A minimal valid configuration for unit tests, with `extra` merged over it (top-level sections).
#[cfg(test)]
pub(crate) fn test_config(extra: serde_json::Value) -> Arc<Config> {
    let env = |_: &str| None;
    let opts = crate::config::LoadOptions {
        hostname: "node-1".into(),
        env: &env,
    };
    let mut v = serde_json::json!({
        "azure": {
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "targetCluster": {
                "resourceId": "/subscriptions/8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/c",
                "location": "westus"
            }
        },
        "kubernetes": {"version": "1.30.4"}
    });
    if let (Some(base), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
        base.extend(extra);
    }
    Arc::new(
        crate::config::load_str(&v.to_string(), "test", &opts)
            .unwrap()
            .config,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn config() -> Arc<Config> {
        test_config(serde_json::json!({}))
    }

    fn context(root: &Path) -> Context {
        Context::new(config(), Arc::new(Host::new(root).unwrap())).unwrap()
    }

    /// Writes one file.
    struct Writes(&'static str, &'static str);

    #[async_trait::async_trait]
    impl Step for Writes {
        fn name(&self) -> &'static str {
            self.0
        }
        fn phase(&self) -> Phase {
            Phase::Installation
        }
        async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
            Ok(
                file_action(&ctx.host, Path::new(self.1), 0o644, "x\n", false)?
                    .into_iter()
                    .collect(),
            )
        }
    }

    #[derive(Clone, Copy)]
    enum OnUndo {
        Succeed,
        /// Fails while `<root>/fail-undo` exists.
        FailWhileMarked,
        /// Turns the state directory into a file (so the journal cannot be written), then succeeds.
        BreakStateDir,
    }

    /// Owns one step-specific undo record.
    struct OwnsUndo(&'static str, OnUndo);

    #[async_trait::async_trait]
    impl Step for OwnsUndo {
        fn name(&self) -> &'static str {
            self.0
        }
        fn phase(&self) -> Phase {
            Phase::Installation
        }
        async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
            if !ctx.journal_snapshot().undo_for(self.0).is_empty() {
                return Ok(Vec::new());
            }
            // The engine journals a step-owned undo record ("swapon") for it, which this step undoes.
            Ok(vec![Action::SwapOff])
        }
        async fn undo_custom(
            &self,
            ctx: &Context,
            _kind: &str,
            _data: &serde_json::Value,
        ) -> StepResult<()> {
            let root = ctx.host.fs.root();
            match self.1 {
                OnUndo::Succeed => Ok(()),
                OnUndo::FailWhileMarked if root.join("fail-undo").exists() => {
                    Err(StepError::failed("injected undo failure"))
                }
                OnUndo::FailWhileMarked => Ok(()),
                OnUndo::BreakStateDir => {
                    let aside = journal::tests::break_state_dir(root);
                    std::fs::write(root.join("aside"), aside.to_str().unwrap()).unwrap();
                    Ok(())
                }
            }
        }
    }

    /// Every entry under `root`: kind, mode and content.
    fn tree(root: &Path) -> BTreeMap<String, String> {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                use std::os::unix::fs::PermissionsExt;
                let mode = m.permissions().mode() & 0o7777;
                if m.is_dir() {
                    out.insert(rel, format!("dir {mode:o}"));
                    walk(root, &p, out);
                } else {
                    let content = std::fs::read_to_string(&p).unwrap_or_default();
                    out.insert(rel, format!("file {mode:o} {content}"));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(root, root, &mut out);
        out
    }

    fn sandbox() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib")).unwrap();
        dir
    }

    async fn bootstrapped(root: &Path, steps: &[Box<dyn Step>]) {
        let ctx = context(root);
        let (_r, res) = bootstrap(&ctx, steps, &BTreeSet::new()).await;
        res.unwrap();
    }

    #[tokio::test]
    async fn unbootstrap_stops_when_the_journal_cannot_be_updated() {
        let dir = sandbox();
        let root = dir.path();
        let before = tree(root);
        let steps: Vec<Box<dyn Step>> = vec![
            Box::new(Writes("First", "/etc/first.conf")),
            Box::new(OwnsUndo("Saboteur", OnUndo::BreakStateDir)),
        ];
        bootstrapped(root, &steps).await;
        let journal_path = root.join("var/lib/aks-flex-node/journal.json");
        let journal_before = std::fs::read(&journal_path).unwrap();

        let report = unbootstrap(&context(root), &steps).await;
        assert_eq!(report.failures.len(), 1, "{report:?}");
        assert!(
            report.failures[0].contains("Saboteur")
                && report.failures[0].contains("journal could not be updated"),
            "{report:?}"
        );
        assert!(report.undone.is_empty(), "{report:?}");
        assert!(
            root.join("etc/first.conf").exists(),
            "unbootstrap went on after the journal could not be updated"
        );
        // The journal on disk is exactly the one from before: nothing lost, nothing emptied.
        let aside = std::fs::read_to_string(root.join("aside")).unwrap();
        std::fs::remove_file(root.join("aside")).unwrap();
        journal::tests::repair_state_dir(root, Path::new(&aside));
        assert_eq!(std::fs::read(&journal_path).unwrap(), journal_before);

        // Run again once the journal can be written: everything is undone.
        let steps: Vec<Box<dyn Step>> = vec![
            Box::new(Writes("First", "/etc/first.conf")),
            Box::new(OwnsUndo("Saboteur", OnUndo::Succeed)),
        ];
        let report = unbootstrap(&context(root), &steps).await;
        assert!(report.failures.is_empty(), "{report:?}");
        assert_eq!(tree(root), before);
    }

    #[tokio::test]
    async fn a_second_unbootstrap_finishes_what_the_first_could_not() {
        let dir = sandbox();
        let root = dir.path();
        let before = tree(root);
        let steps: Vec<Box<dyn Step>> = vec![
            Box::new(Writes("First", "/etc/first/a.conf")),
            Box::new(OwnsUndo("Flaky", OnUndo::FailWhileMarked)),
            Box::new(Writes("Last", "/etc/last/b.conf")),
        ];
        bootstrapped(root, &steps).await;

        std::fs::write(root.join("fail-undo"), "").unwrap();
        let report = unbootstrap(&context(root), &steps).await;
        assert_eq!(report.failures.len(), 1, "{report:?}");
        assert!(
            report.failures[0].contains("injected undo failure"),
            "{report:?}"
        );
        assert_eq!(report.undone, vec!["Last", "First"], "{report:?}");
        assert!(!root.join("etc/first").exists() && !root.join("etc/last").exists());
        let left = Journal::load(&Host::new(root).unwrap()).unwrap();
        assert!(left.undo.iter().all(|e| e.step == "Flaky"), "{left:?}");
        assert!(!left.undo.is_empty());

        std::fs::remove_file(root.join("fail-undo")).unwrap();
        let report = unbootstrap(&context(root), &steps).await;
        assert!(report.failures.is_empty(), "{report:?}");
        assert_eq!(report.undone, vec!["Flaky"]);
        assert_eq!(
            tree(root),
            before,
            "the root is not as it was before bootstrap"
        );
    }

    #[tokio::test]
    async fn unbootstrap_of_a_machine_never_bootstrapped_says_so_and_changes_nothing() {
        let dir = sandbox();
        let root = dir.path();
        let before = tree(root);
        let steps: Vec<Box<dyn Step>> = vec![Box::new(Writes("First", "/etc/first.conf"))];
        let report = unbootstrap(&context(root), &steps).await;
        assert!(report.failures.is_empty(), "{report:?}");
        let msg = report.nothing_to_do.expect("no nothing-to-do message");
        let journal = root
            .canonicalize()
            .unwrap()
            .join("var/lib/aks-flex-node/journal.json");
        assert_eq!(
            msg,
            format!(
                "nothing to undo: this machine was not bootstrapped by aks-flex-node (no journal at {})",
                journal.display()
            )
        );
        assert_eq!(tree(root), before);

        // A bootstrapped machine is not "nothing to do".
        bootstrapped(root, &steps).await;
        let report = unbootstrap(&context(root), &steps).await;
        assert!(
            report.failures.is_empty() && report.nothing_to_do.is_none(),
            "{report:?}"
        );
        assert_eq!(tree(root), before);
    }

    /// Writes one file once; then waits (as NodeReady does on a converged node) every run.
    struct WriteThenWait {
        waited: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Step for WriteThenWait {
        fn name(&self) -> &'static str {
            "WriteThenWait"
        }
        fn phase(&self) -> Phase {
            Phase::Activation
        }
        async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
            let mut v: Vec<Action> =
                file_action(&ctx.host, Path::new("/etc/x.conf"), 0o644, "x\n", false)?
                    .into_iter()
                    .collect();
            v.push(Action::WaitNodeReady {
                node: "n".into(),
                timeout_seconds: 1,
            });
            Ok(v)
        }
        async fn apply_remote(&self, _ctx: &Context, action: &Action) -> StepResult<()> {
            assert!(action.is_wait(), "{action:?}");
            self.waited.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_run_that_only_waits_writes_nothing_not_even_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(Host::new(dir.path()).unwrap());
        let step = WriteThenWait {
            waited: AtomicUsize::new(0),
        };
        let steps: Vec<Box<dyn Step>> = vec![Box::new(step)];
        let ctx = Context::new(config(), host.clone()).unwrap();
        let (_, r) = bootstrap(&ctx, &steps, &BTreeSet::new()).await;
        r.unwrap();
        let journal = dir.path().join("var/lib/aks-flex-node/journal.json");
        let before = std::fs::metadata(&journal).unwrap();
        let (reports, r) = bootstrap(&ctx, &steps, &BTreeSet::new()).await;
        r.unwrap();
        assert!(
            matches!(reports[0].outcome, StepOutcome::Applied { actions: 1 }),
            "the wait ran: {:?}",
            reports[0].outcome
        );
        let after = std::fs::metadata(&journal).unwrap();
        assert_eq!(
            (before.ino(), before.mtime_nsec(), before.len()),
            (after.ino(), after.mtime_nsec(), after.len()),
            "the journal was rewritten by a run that only waited"
        );
    }

    #[test]
    fn the_run_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let held = lock(&ctx).unwrap();
        let err = lock(&ctx)
            .err()
            .expect("a second lock while the first is held");
        assert!(
            err.to_string().contains("another aks-flex-node is running"),
            "{err}"
        );
        drop(held);
        lock(&ctx).expect("the lock is free once dropped");
    }
}
