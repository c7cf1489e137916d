//! The daemon (`aks-flex-node agent`): bootstrap, then stay up and keep the node as configured.
//!
//! It never gives up on a failure that time can fix: a failed pass is retried with capped exponential
//! backoff (10 s doubling up to 5 minutes, with jitter) while the process stays up, reports its state
//! (status file, `systemctl status` line) and keeps healing what it can. Only a configuration error -
//! something no retry can fix - ends it, with exit 2, which the unit does not restart on.
//!
//! Three kinds of pass, each the same engine run with some phases skipped:
//! - **full** (identity + host): until the identity phase has succeeded once for the configured cluster;
//! - **host** (no Azure call): every `AKS_FLEX_NODE_HEAL_INTERVAL` (120 s). The cluster's API server and
//!   CA come from the journal (kept there by the identity phase), so a restart or reboot of a bootstrapped
//!   node heals the host even while Azure is unreachable;
//! - **Azure** (identity only): every `AKS_FLEX_NODE_AZURE_RECHECK_INTERVAL` (1 hour). It re-reads the
//!   cluster's endpoint; when the server or CA changed, a host pass follows at once and rewrites the
//!   kubeconfig and CA (and restarts the kubelet) - only then.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

use super::metrics::Metrics;
use super::notify::Notifier;
use super::status::{self, DaemonFacts, Repair};
use crate::engine;
use crate::engine::{Context, Step, StepOutcome, StepReport};
use crate::model::Phase;

/// How often the host is re-converged (the original's health-check cadence).
pub const HEAL_INTERVAL: Duration = Duration::from_secs(120);
/// How often the Azure side is re-verified (Arc machine, roles, cluster endpoint). Host checks are local
/// and cheap; Azure checks cost ARM reads, which are throttled per principal across a whole fleet.
pub const AZURE_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest wait between two attempts of a failing Azure pass (never longer than its interval).
pub const AZURE_RETRY_MAX: Duration = Duration::from_secs(600);
/// How often the status file is rewritten.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(60);
/// Backoff after a failed pass: first wait, and the longest one.
pub const RETRY_MIN: Duration = Duration::from_secs(10);
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// The daemon's schedule.
#[derive(Debug, Clone)]
pub struct Options {
    /// Phases never run (`--skip-phase`).
    pub skip: BTreeSet<Phase>,
    pub heal_every: Duration,
    pub azure_every: Duration,
    pub status_every: Duration,
    /// Randomise backoff waits (off in tests, so the schedule is exact).
    pub jitter: bool,
}

impl Options {
    /// The schedule, with intervals from the environment (whole seconds, at least 1). A bad value is
    /// returned as an error naming the variable (a usage error, so a typo in a unit file is noticed).
    pub fn from_env(skip: BTreeSet<Phase>) -> Result<Self, String> {
        Ok(Options {
            skip,
            heal_every: interval("AKS_FLEX_NODE_HEAL_INTERVAL", HEAL_INTERVAL)?,
            azure_every: interval("AKS_FLEX_NODE_AZURE_RECHECK_INTERVAL", AZURE_INTERVAL)?,
            status_every: interval("AKS_FLEX_NODE_STATUS_INTERVAL", STATUS_INTERVAL)?,
            jitter: true,
        })
    }
}

fn interval(var: &str, default: Duration) -> Result<Duration, String> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "{var}={v:?}: expected a whole number of seconds (at least 1)"
            )),
        },
    }
}

/// Why the daemon stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Only an edit of the configuration can fix this; the caller exits 2 (no restart).
    #[error("{0}\nThis is a configuration problem: retrying cannot fix it. Edit the configuration, check it with `aks-flex-node config validate`, then restart the agent.")]
    Config(String),
}

/// Capped exponential backoff between attempts of one kind of pass; reset by a success.
pub struct Retry {
    builder: ExponentialBuilder,
    current: ExponentialBackoff,
    cap: Duration,
    /// Failed attempts in a row.
    pub failures: u32,
}

impl Retry {
    pub fn new(cap: Duration, jitter: bool) -> Self {
        let min = RETRY_MIN.min(cap);
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(cap)
            .with_factor(2.0)
            .without_max_times();
        if jitter {
            builder = builder.with_jitter();
        }
        Retry {
            current: builder.build(),
            builder,
            cap,
            failures: 0,
        }
    }

    /// One more failure: how long to wait before the next attempt (never more than the cap).
    pub fn failed(&mut self) -> Duration {
        self.failures += 1;
        self.current.next().unwrap_or(self.cap).min(self.cap)
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.current = self.builder.build();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Full,
    Host,
    Azure,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Full => "bootstrap",
            Pass::Host => "host",
            Pass::Azure => "Azure",
        }
    }

    /// The phases this pass skips, on top of the operator's.
    fn skip(self, base: &BTreeSet<Phase>) -> BTreeSet<Phase> {
        let extra: &[Phase] = match self {
            Pass::Full => &[],
            Pass::Host => &[Phase::Identity],
            Pass::Azure => &[Phase::Installation, Phase::Activation],
        };
        base.iter().chain(extra).copied().collect()
    }
}

/// The repairs a host pass made: every applied action except waiting for the node (not a repair).
pub fn repairs(reports: &[StepReport]) -> Vec<(&'static str, &str)> {
    reports
        .iter()
        .filter(|r| matches!(r.outcome, StepOutcome::Applied { .. }))
        .filter(|r| r.name != crate::steps::node_ready::NAME)
        .flat_map(|r| r.applied.iter().map(move |a| (r.name, a.as_str())))
        .collect()
}

/// A check run before a full pass until it has passed once (the command layer supplies preflight): its
/// error fails that attempt like a failed pass, with the same backoff and status.
pub type Gate<'a> =
    &'a dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

/// A kind of pass that is failing (how many times in a row: its [`Retry`]).
struct Failure {
    pass: Pass,
    wait: Duration,
    next: chrono::DateTime<chrono::Utc>,
    error: String,
}

/// The daemon's state and schedule; one pass at a time.
struct Daemon<'a> {
    gate: Option<Gate<'a>>,
    gate_passed: std::cell::Cell<bool>,
    ctx: &'a Context,
    steps: &'a [Box<dyn Step>],
    opts: &'a Options,
    notifier: &'a Notifier,
    facts: DaemonFacts,
    /// When the next host (or, before the identity phase succeeded, full) pass is due.
    next_host: Instant,
    /// When the next Azure pass is due; `None` while the identity phase has not succeeded in this process
    /// or when it is skipped.
    next_azure: Option<Instant>,
    host_retry: Retry,
    azure_retry: Retry,
    /// The failing host (or full) pass and the failing Azure pass, until one of its kind succeeds.
    host_failure: Option<Failure>,
    azure_failure: Option<Failure>,
    bootstrapped: bool,
    metrics: std::sync::Arc<Metrics>,
}

/// Run until `shutdown` resolves (`Ok`, exit 0) or a configuration error (`Err`, exit 2).
pub async fn run<'a>(
    ctx: &'a Context,
    steps: &'a [Box<dyn Step>],
    opts: &'a Options,
    notifier: &'a Notifier,
    gate: Option<Gate<'a>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut d = Daemon {
        gate,
        gate_passed: std::cell::Cell::new(false),
        ctx,
        steps,
        opts,
        notifier,
        facts: DaemonFacts {
            state: "bootstrapping".into(),
            ..DaemonFacts::default()
        },
        next_host: Instant::now(),
        next_azure: None,
        host_retry: Retry::new(RETRY_MAX, opts.jitter),
        azure_retry: Retry::new(AZURE_RETRY_MAX.min(opts.azure_every), opts.jitter),
        host_failure: None,
        azure_failure: None,
        bootstrapped: false,
        metrics: std::sync::Arc::new(Metrics::new()),
    };
    if let Some(addr) = &ctx.config.agent.metrics_address {
        match super::metrics::serve(&ctx.host, addr, d.metrics.clone()).await {
            Ok(()) => tracing::info!("serving metrics at {addr}/metrics"),
            // Not fatal: the node matters more than its metrics; the error says what to fix.
            Err(e) => tracing::error!("{e}; running without metrics"),
        }
    }
    if d.identity_done() && !opts.skip.contains(&Phase::Identity) {
        // Bootstrapped before: heal the host now from the journal, ask Azure later.
        d.next_azure = Some(Instant::now() + opts.azure_every);
        tracing::info!(
            "the identity phase completed in an earlier run: healing the host from the journal; next Azure check in {}s",
            opts.azure_every.as_secs()
        );
    }
    notifier.status("bootstrapping");
    tokio::pin!(shutdown);
    let mut status_tick = tokio::time::interval(opts.status_every);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = Notifier::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        let due = d.next_due();
        let sleep = tokio::time::sleep_until(due.into());
        tokio::pin!(sleep);
        // Wait for the next pass; keep the status file and the watchdog fresh meanwhile.
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = status_tick.tick() => d.write_status().await,
                _ = watchdog_tick.tick(), if watchdog.is_some() => notifier.watchdog(),
                _ = &mut shutdown => return d.stop(),
            }
        }
        let pass = d.which_pass();
        let endpoint_before = ctx.persisted_cluster_endpoint();
        let started = Instant::now();
        let outcome = {
            let run = d.run_pass(pass);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = status_tick.tick() => d.write_status().await,
                    _ = watchdog_tick.tick(), if watchdog.is_some() => notifier.watchdog(),
                    _ = &mut shutdown => {
                        tracing::info!("received shutdown signal during the {} pass; stopping (the journal records how far it got)", pass.name());
                        notifier.stopping();
                        return Ok(());
                    }
                }
            }
        };
        let endpoint_changed = ctx.persisted_cluster_endpoint() != endpoint_before;
        d.metrics.record_pass(
            pass.name(),
            outcome.1.is_ok(),
            started.elapsed(),
            &outcome.0,
        );
        d.after_pass(pass, outcome, endpoint_changed)?;
        d.write_status().await;
    }
}

impl Daemon<'_> {
    /// The identity phase has succeeded for the configured cluster (now or in an earlier run), or is
    /// skipped: host passes can run without Azure.
    fn identity_done(&self) -> bool {
        self.opts.skip.contains(&Phase::Identity) || self.ctx.persisted_cluster_endpoint().is_some()
    }

    fn next_due(&self) -> Instant {
        match self.next_azure {
            Some(a) if a < self.next_host => a,
            _ => self.next_host,
        }
    }

    fn which_pass(&self) -> Pass {
        let now = Instant::now();
        if !self.identity_done() {
            return Pass::Full;
        }
        match self.next_azure {
            Some(a) if a <= now && a <= self.next_host => Pass::Azure,
            _ => Pass::Host,
        }
    }

    async fn run_pass(&self, pass: Pass) -> (Vec<StepReport>, Result<(), engine::StepError>) {
        if pass == Pass::Azure {
            // Read the endpoint from Azure again rather than trusting this run's copy.
            self.ctx.clear_cluster_endpoint();
        }
        if let (Pass::Full, Some(gate), false) = (pass, self.gate, self.gate_passed.get()) {
            match gate().await {
                Ok(()) => self.gate_passed.set(true),
                Err(e) => return (Vec::new(), Err(engine::StepError::failed(e))),
            }
        }
        tracing::debug!("starting the {} pass", pass.name());
        engine::bootstrap(self.ctx, self.steps, &pass.skip(&self.opts.skip)).await
    }

    fn after_pass(
        &mut self,
        pass: Pass,
        (reports, result): (Vec<StepReport>, Result<(), engine::StepError>),
        endpoint_changed: bool,
    ) -> Result<(), DaemonError> {
        let now = Instant::now();
        let at = chrono::Utc::now();
        // Anything a pass changes after the node was bootstrapped (in this process, or in an earlier run:
        // host passes) had drifted.
        if pass != Pass::Full || self.bootstrapped {
            for (step, what) in repairs(&reports) {
                tracing::warn!(step, "repaired drift: {what}");
                self.metrics.record_repair(step);
                self.facts.last_repair = Some(Repair {
                    step: step.to_string(),
                    what: what.to_string(),
                    at,
                });
            }
        }
        match result {
            Ok(()) => {
                self.facts.last_pass = Some(at);
                match pass {
                    Pass::Azure => {
                        self.facts.last_azure_pass = Some(at);
                        self.azure_retry.succeeded();
                        self.azure_failure = None;
                        self.next_azure = Some(now + self.opts.azure_every);
                        if endpoint_changed {
                            tracing::info!("the cluster's API server or CA changed: re-converging the host now");
                            self.next_host = now;
                        }
                        tracing::info!("Azure check passed");
                    }
                    Pass::Full | Pass::Host => {
                        if pass == Pass::Full {
                            self.facts.last_azure_pass = Some(at);
                            self.azure_failure = None;
                            self.next_azure = (!self.opts.skip.contains(&Phase::Identity))
                                .then(|| now + self.opts.azure_every);
                        }
                        self.host_retry.succeeded();
                        self.host_failure = None;
                        self.next_host = now + self.opts.heal_every;
                        if !self.bootstrapped {
                            self.bootstrapped = true;
                            tracing::info!(
                                "bootstrap completed; running as daemon (re-converging the host every {}s, Azure every {}s)",
                                self.opts.heal_every.as_secs(),
                                self.opts.azure_every.as_secs()
                            );
                        }
                    }
                }
            }
            Err(e) if e.is_config() => {
                self.notifier
                    .status(&format!("stopped: configuration error: {e}"));
                return Err(DaemonError::Config(e.to_string()));
            }
            Err(e) => {
                let (wait, failures) = match pass {
                    Pass::Azure => {
                        let w = self.azure_retry.failed();
                        self.next_azure = Some(now + w);
                        (w, self.azure_retry.failures)
                    }
                    Pass::Full | Pass::Host => {
                        let w = self.host_retry.failed().min(self.opts.heal_every);
                        self.next_host = now + w;
                        (w, self.host_retry.failures)
                    }
                };
                tracing::error!(
                    "{} pass failed ({failures} in a row); next attempt in {}s: {e}",
                    pass.name(),
                    wait.as_secs()
                );
                let failure = Failure {
                    pass,
                    wait,
                    next: at + chrono::Duration::from_std(wait).unwrap_or_default(),
                    error: e.to_string(),
                };
                match pass {
                    Pass::Azure => self.azure_failure = Some(failure),
                    Pass::Full | Pass::Host => self.host_failure = Some(failure),
                }
            }
        }
        self.publish();
        Ok(())
    }

    /// The daemon's state, from the host AND the Azure side, into the status facts and systemd's status
    /// line. One place, so a passing host pass never hides a failing Azure pass (or the other way round).
    /// READY is sent after the first pass whatever its outcome: the daemon is up and healing; the status
    /// says what is wrong.
    fn publish(&mut self) {
        let failing: Vec<&Failure> = [&self.host_failure, &self.azure_failure]
            .into_iter()
            .flatten()
            .collect();
        let in_a_row = |x: &Failure| match x.pass {
            Pass::Azure => self.azure_retry.failures,
            Pass::Full | Pass::Host => self.host_retry.failures,
        };
        let f = &mut self.facts;
        f.last_error = failing
            .iter()
            .map(|x| format!("{} pass: {}", x.pass.name(), x.error))
            .reduce(|a, b| format!("{a}; {b}"));
        f.next_retry = failing.iter().map(|x| x.next).min();
        f.state = match (self.bootstrapped, failing.is_empty()) {
            (false, _) => "retrying",
            (true, true) => "running",
            (true, false) => "degraded",
        }
        .into();
        let line = match failing.first() {
            None => "running: node bootstrapped; healing drift on every pass".to_string(),
            Some(x) => {
                let what = if self.bootstrapped {
                    format!("degraded: {} pass failed", x.pass.name())
                } else {
                    "bootstrap failed".to_string()
                };
                let also = match failing.get(1) {
                    Some(y) => format!(" (the {} pass is failing too)", y.pass.name()),
                    None => String::new(),
                };
                format!(
                    "{what} ({} in a row), retrying in {}s{also}: {}",
                    in_a_row(x),
                    x.wait.as_secs(),
                    super::notify::status_line(&x.error)
                )
            }
        };
        self.notifier.ready(&line);
    }

    async fn write_status(&self) {
        let s = status::collect(self.ctx, Some(&self.facts)).await;
        self.metrics
            .set_healthy(s.health == status::Health::Healthy);
        self.metrics
            .set_token_expiry(s.credential_expiry.arc_token.map(|t| t.timestamp()));
        if let Err(e) = status::write(&self.ctx.host, &s) {
            tracing::warn!("cannot write the status file {}: {e}", status::STATUS_PATH);
        }
        // After every pass and every status tick: what the pass allocated is garbage now, and the blocking
        // threads a bootstrap used (hashing, unpacking) have exited by the next tick; give their memory back
        // so the idle daemon is small.
        crate::host::heap::release_free_memory();
    }

    fn stop(&self) -> Result<(), DaemonError> {
        tracing::info!("received shutdown signal; stopping");
        self.notifier.stopping();
        Ok(())
    }
}

/// SIGTERM/SIGINT, with the handlers installed at construction (not at first poll), so a signal that
/// arrives at any point after start-up is seen and never falls back to the default "terminate" action.
pub struct Shutdown {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Shutdown {
    pub fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Shutdown {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    pub async fn recv(&mut self) {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.term) => {}
            _ = one(&mut self.int) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_up_to_the_cap_and_resets_on_success() {
        let mut r = Retry::new(RETRY_MAX, false);
        let waits: Vec<u64> = (0..8).map(|_| r.failed().as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(r.failures, 8);
        r.succeeded();
        assert_eq!(r.failures, 0);
        assert_eq!(r.failed(), RETRY_MIN);
    }

    #[test]
    fn jittered_backoff_never_exceeds_the_cap() {
        let mut r = Retry::new(Duration::from_secs(30), true);
        for _ in 0..50 {
            let w = r.failed();
            assert!(w >= RETRY_MIN && w <= Duration::from_secs(30), "{w:?}");
        }
        // A cap below the first wait is the wait.
        let mut r = Retry::new(Duration::from_secs(3), false);
        assert_eq!(r.failed(), Duration::from_secs(3));
    }

    #[test]
    fn passes_skip_the_right_phases() {
        let none = BTreeSet::new();
        assert!(Pass::Full.skip(&none).is_empty());
        assert_eq!(Pass::Host.skip(&none), BTreeSet::from([Phase::Identity]));
        assert_eq!(
            Pass::Azure.skip(&none),
            BTreeSet::from([Phase::Installation, Phase::Activation])
        );
        let op = BTreeSet::from([Phase::Activation]);
        assert_eq!(
            Pass::Host.skip(&op),
            BTreeSet::from([Phase::Identity, Phase::Activation])
        );
    }

    fn ctx(dir: &std::path::Path) -> Context {
        let host = std::sync::Arc::new(crate::host::Host::new(dir).unwrap());
        Context::new(crate::engine::test_config(serde_json::json!({})), host).unwrap()
    }

    fn opts() -> Options {
        Options {
            skip: BTreeSet::new(),
            heal_every: Duration::from_secs(120),
            azure_every: Duration::from_secs(300),
            status_every: STATUS_INTERVAL,
            jitter: false,
        }
    }

    fn daemon<'a>(ctx: &'a Context, opts: &'a Options, n: &'a Notifier) -> Daemon<'a> {
        Daemon {
            gate: None,
            gate_passed: std::cell::Cell::new(false),
            ctx,
            steps: &[],
            opts,
            notifier: n,
            facts: DaemonFacts::default(),
            next_host: Instant::now(),
            next_azure: None,
            host_retry: Retry::new(RETRY_MAX, false),
            azure_retry: Retry::new(AZURE_RETRY_MAX.min(opts.azure_every), false),
            host_failure: None,
            azure_failure: None,
            bootstrapped: false,
            metrics: std::sync::Arc::new(Metrics::new()),
        }
    }

    fn report(name: &'static str, phase: Phase, applied: &[&str]) -> StepReport {
        StepReport {
            name,
            phase,
            outcome: if applied.is_empty() {
                StepOutcome::Converged
            } else {
                StepOutcome::Applied {
                    actions: applied.len(),
                }
            },
            applied: applied.iter().map(|s| s.to_string()).collect(),
            elapsed: Duration::ZERO,
        }
    }

    fn persist(ctx: &Context, server: &str) {
        ctx.set_cluster_endpoint(crate::engine::ClusterEndpoint {
            server: server.into(),
            ca_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
            dns_service_ip: None,
        });
        ctx.persist_cluster_endpoint().unwrap();
    }

    #[test]
    fn every_azure_pass_is_scheduled_with_the_configured_interval() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let (o, n) = (opts(), Notifier::new());
        let mut d = daemon(&ctx, &o, &n);
        persist(&ctx, "https://a:443");
        // Not only the first: every converged Azure pass schedules the next one `azure_every` later.
        for _ in 0..3 {
            let before = Instant::now();
            d.after_pass(Pass::Azure, (vec![], Ok(())), false).unwrap();
            let next = d.next_azure.unwrap();
            assert!(next >= before + o.azure_every && next <= Instant::now() + o.azure_every);
        }
        // A failing one backs off from 10 s, never beyond min(10 min, the interval).
        let err = || Err(crate::engine::StepError::failed("ARM said 503"));
        let mut waits = Vec::new();
        for _ in 0..6 {
            let now = Instant::now();
            d.after_pass(Pass::Azure, (vec![], err()), false).unwrap();
            waits.push((d.next_azure.unwrap() - now).as_secs());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300]);
        assert!(d
            .facts
            .last_error
            .as_deref()
            .unwrap()
            .contains("ARM said 503"));
    }

    #[test]
    fn a_changed_cluster_endpoint_triggers_a_host_pass_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let (o, n) = (opts(), Notifier::new());
        let mut d = daemon(&ctx, &o, &n);
        d.next_host = Instant::now() + Duration::from_secs(100);
        d.after_pass(Pass::Azure, (vec![], Ok(())), false).unwrap();
        assert!(d.next_host > Instant::now() + Duration::from_secs(50));
        d.after_pass(Pass::Azure, (vec![], Ok(())), true).unwrap();
        assert!(d.next_host <= Instant::now());
    }

    #[test]
    fn bootstrap_failures_are_retried_and_configuration_errors_stop_the_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let (o, n) = (opts(), Notifier::new());
        let mut d = daemon(&ctx, &o, &n);
        assert_eq!(d.which_pass(), Pass::Full, "no identity yet: full pass");
        let now = Instant::now();
        d.after_pass(
            Pass::Full,
            (vec![], Err(crate::engine::StepError::failed("HIMDS down"))),
            false,
        )
        .unwrap();
        assert_eq!(d.facts.state, "retrying");
        assert_eq!((d.next_host - now).as_secs(), 10);
        assert!(
            n.is_ready(),
            "READY once the first attempt ended, so systemctl start returns"
        );
        // Host retries are capped by the heal interval.
        for _ in 0..6 {
            d.host_retry.failed();
        }
        let now = Instant::now();
        d.after_pass(
            Pass::Full,
            (vec![], Err(crate::engine::StepError::failed("x"))),
            false,
        )
        .unwrap();
        assert_eq!((d.next_host - now).as_secs(), 120);
        let e = d
            .after_pass(
                Pass::Full,
                (
                    vec![],
                    Err(crate::engine::StepError::config("set npd.sha256")),
                ),
                false,
            )
            .unwrap_err();
        assert!(e.to_string().contains("set npd.sha256"), "{e}");
        assert!(e.to_string().contains("config validate"), "{e}");
    }

    #[test]
    fn after_the_identity_phase_passes_are_host_only_until_azure_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let (o, n) = (opts(), Notifier::new());
        let mut d = daemon(&ctx, &o, &n);
        persist(&ctx, "https://a:443");
        // A fresh context (a restart) finds the endpoint in the journal: host pass, no Azure.
        let ctx2 = super::tests::ctx(dir.path());
        assert_eq!(
            ctx2.persisted_cluster_endpoint().unwrap().server,
            "https://a:443"
        );
        let mut d2 = daemon(&ctx2, &o, &n);
        assert_eq!(d2.which_pass(), Pass::Host);
        d2.next_azure = Some(Instant::now());
        d2.next_host = Instant::now() + Duration::from_secs(5);
        assert_eq!(d2.which_pass(), Pass::Azure);
        // A full pass that succeeded schedules the Azure check.
        d.after_pass(Pass::Full, (vec![], Ok(())), false).unwrap();
        assert!(d.next_azure.is_some());
        assert_eq!(d.facts.state, "running");
    }

    #[test]
    fn host_pass_repairs_are_logged_with_what_drifted_but_waiting_is_not_a_repair() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let (o, n) = (opts(), Notifier::new());
        let mut d = daemon(&ctx, &o, &n);
        let reports = vec![
            report(
                "ContainerdInstaller",
                Phase::Installation,
                &["write /etc/containerd/config.toml"],
            ),
            report(
                crate::steps::node_ready::NAME,
                Phase::Activation,
                &["wait for node"],
            ),
        ];
        assert_eq!(
            repairs(&reports),
            [("ContainerdInstaller", "write /etc/containerd/config.toml")]
        );
        d.after_pass(Pass::Host, (reports, Ok(())), false).unwrap();
        let r = d.facts.last_repair.unwrap();
        assert_eq!(
            (r.step.as_str(), r.what.as_str()),
            ("ContainerdInstaller", "write /etc/containerd/config.toml")
        );
    }

    #[test]
    fn a_passing_host_pass_does_not_hide_a_failing_azure_pass() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let (o, n) = (opts(), Notifier::new());
        let mut d = daemon(&ctx, &o, &n);
        d.after_pass(Pass::Full, (vec![], Ok(())), false).unwrap();
        assert_eq!(d.facts.state, "running");
        let arm_down = || Err(crate::engine::StepError::failed("ARM said 503"));
        d.after_pass(Pass::Azure, (vec![], arm_down()), false)
            .unwrap();
        // The host keeps converging while ARM is down: the state still says Azure is failing.
        d.after_pass(Pass::Host, (vec![], Ok(())), false).unwrap();
        assert_eq!(d.facts.state, "degraded");
        let line = n.last_status();
        assert!(
            line.starts_with("degraded: Azure pass failed (1 in a row), retrying in 10s"),
            "{line}"
        );
        assert!(line.contains("ARM said 503"), "{line}");
        assert!(d
            .facts
            .last_error
            .as_deref()
            .unwrap()
            .starts_with("Azure pass: "));
        assert!(d.facts.next_retry.is_some());
        // Both failing: the host first, the Azure pass mentioned.
        d.after_pass(
            Pass::Host,
            (vec![], Err(crate::engine::StepError::failed("disk full"))),
            false,
        )
        .unwrap();
        let line = n.last_status();
        assert!(
            line.starts_with("degraded: host pass failed (1 in a row)"),
            "{line}"
        );
        assert!(
            line.contains("(the Azure pass is failing too): disk full"),
            "{line}"
        );
        // Azure back, host healed: running again, no error left.
        d.after_pass(Pass::Azure, (vec![], Ok(())), false).unwrap();
        d.after_pass(Pass::Host, (vec![], Ok(())), false).unwrap();
        assert_eq!(d.facts.state, "running");
        assert_eq!(d.facts.last_error, None);
        assert_eq!(d.facts.next_retry, None);
        assert!(
            n.last_status().starts_with("running"),
            "{}",
            n.last_status()
        );
    }

    #[test]
    fn changes_made_by_a_full_pass_after_bootstrap_are_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        let (o, n) = (opts(), Notifier::new());
        let mut d = daemon(&ctx, &o, &n);
        let write = || {
            vec![report(
                "SystemConfigured",
                Phase::Installation,
                &["write /etc/sysctl.d/999-sysctl-aks.conf"],
            )]
        };
        // The first bootstrap's changes are not drift.
        d.after_pass(Pass::Full, (write(), Ok(())), false).unwrap();
        assert!(d.facts.last_repair.is_none());
        // With the identity phase filtered out (`--only`), later passes are full passes too.
        d.after_pass(Pass::Full, (write(), Ok(())), false).unwrap();
        assert_eq!(d.facts.last_repair.unwrap().step, "SystemConfigured");
    }

    #[test]
    fn a_persisted_endpoint_for_another_cluster_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ctx(dir.path());
        persist(&ctx, "https://a:443");
        let mut j = ctx.journal_snapshot();
        j.cluster.as_mut().unwrap().resource_id = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.ContainerService/managedClusters/other".into();
        j.save(&ctx.host).unwrap();
        let ctx2 = super::tests::ctx(dir.path());
        assert!(ctx2.persisted_cluster_endpoint().is_none());
        // Writing the same endpoint twice writes the journal once.
        let ctx3 = super::tests::ctx(dir.path());
        persist(&ctx3, "https://b:443");
        let path = dir.path().join("var/lib/aks-flex-node/journal.json");
        let m1 = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!ctx3.persist_cluster_endpoint().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), m1);
    }
}
