//! `plan`, `bootstrap`, `unbootstrap` and `agent`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::{CliError, CmdResult};
use crate::cli::Output;
use crate::config::Config;
use crate::host::Host;
use crate::steps::{self, Context, Phase, Step, StepOutcome, StepReport};

/// How often the daemon re-converges (the original's health-check cadence).
const HEAL_INTERVAL: Duration = Duration::from_secs(120);
/// How often the daemon re-verifies the Azure side (Arc machine, roles, cluster endpoint). Host checks are
/// local and cheap; Azure checks cost ARM reads, which are throttled per principal across a whole fleet.
const IDENTITY_INTERVAL: Duration = Duration::from_secs(3600);
/// After a failed Azure re-check, try again sooner than the full interval (never later than it).
const IDENTITY_RETRY: Duration = Duration::from_secs(600);

/// When the next Azure re-check is due after one that ended at `now`: the configured interval `every`
/// after a converged pass, [`IDENTITY_RETRY`] (capped at `every`) after a failed one.
fn next_azure_check(now: tokio::time::Instant, ok: bool, every: Duration) -> tokio::time::Instant {
    now + if ok { every } else { IDENTITY_RETRY.min(every) }
}

/// An interval from the environment (whole seconds, at least 1), or the default. A bad value is a usage
/// error rather than a silent default, so a typo in a unit file is noticed.
fn interval(var: &str, default: Duration) -> Result<Duration, CliError> {
    match std::env::var(var) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => Ok(Duration::from_secs(n)),
            _ => Err(CliError::usage(anyhow::anyhow!(
                "{var}={v:?}: expected a whole number of seconds (at least 1)"
            ))),
        },
    }
}

pub(super) fn context(cfg: Arc<Config>, host: Arc<Host>) -> Result<Context, CliError> {
    Context::new(cfg, host).map_err(CliError::failed)
}

pub async fn plan(
    cfg: Arc<Config>,
    host: Arc<Host>,
    output: Output,
    skip: BTreeSet<Phase>,
    steps: Vec<Box<dyn Step>>,
) -> CmdResult {
    let ctx = context(cfg, host)?;
    let plan = steps::plan(&ctx, &steps, &skip)
        .await
        .map_err(CliError::failed)?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        ),
        Output::Text => {
            println!("Plan for root {}:", plan.root.display());
            for s in &plan.steps {
                match s.status {
                    "changes" => {
                        println!("  {} ({}): {} change(s)", s.name, s.phase, s.actions.len());
                        for a in &s.actions {
                            println!("    - {}", a["summary"].as_str().unwrap_or_default());
                            if let Some(diff) = a["diff"].as_str() {
                                for line in diff.lines() {
                                    println!("        {line}");
                                }
                            }
                        }
                    }
                    other => println!("  {} ({}): {other}", s.name, s.phase),
                }
                for n in &s.notes {
                    println!("    warning: {n}");
                }
            }
            if plan.converged {
                println!("Nothing to do: the node is converged.");
            }
        }
    }
    Ok(())
}

fn print_reports(reports: &[StepReport]) {
    for r in reports {
        let what = match &r.outcome {
            StepOutcome::Converged => "up to date".to_string(),
            StepOutcome::Applied { actions } => format!("applied {actions} change(s)"),
            StepOutcome::Skipped => format!("skipped (phase {})", r.phase),
            StepOutcome::Failed { .. } => "FAILED".to_string(),
        };
        println!("{:<24} {what}", r.name);
    }
}

/// Bootstrap once: the preflight checks first (an error stops it before any change, unless named in
/// `ignore`), then every step.
pub async fn bootstrap(
    cfg: Arc<Config>,
    host: Arc<Host>,
    skip: BTreeSet<Phase>,
    steps: Vec<Box<dyn Step>>,
    ignore: crate::preflight::IgnoreSet,
) -> CmdResult {
    let ctx = context(cfg, host)?;
    let opts = crate::preflight::Options::for_bootstrap(ignore, &skip, &steps);
    let report = crate::preflight::run_with(&ctx, &opts).await;
    for w in report.warnings() {
        match w.remediation.as_str() {
            "" => tracing::warn!(check = %w.name, "preflight: {}", w.message),
            fix => tracing::warn!(check = %w.name, "preflight: {} (fix: {fix})", w.message),
        }
    }
    if !report.errors().is_empty() {
        return Err(CliError::failed(anyhow::anyhow!("{}", report.refusal())));
    }
    let mut shutdown = Shutdown::install();
    let (reports, result) = tokio::select! {
        r = steps::bootstrap(&ctx, &steps, &skip) => r,
        _ = shutdown.recv() => {
            return Err(CliError::failed(anyhow::anyhow!(
                "interrupted; the journal records how far bootstrap got: re-run to resume"
            )))
        }
    };
    print_reports(&reports);
    result.map_err(CliError::failed)?;
    tracing::info!("bootstrap completed");
    Ok(())
}

/// Bootstrap, then stay up and re-converge so drift is repaired: the host every two minutes (local checks
/// only), the Azure side every hour. A healthy node is left alone: a converged plan writes and restarts
/// nothing. SIGTERM/SIGINT end it cleanly (exit 0).
pub async fn agent(
    cfg: Arc<Config>,
    host: Arc<Host>,
    skip: BTreeSet<Phase>,
    steps: Vec<Box<dyn Step>>,
) -> CmdResult {
    let heal_every = interval("AKS_FLEX_NODE_HEAL_INTERVAL", HEAL_INTERVAL)?;
    let azure_every = interval("AKS_FLEX_NODE_AZURE_RECHECK_INTERVAL", IDENTITY_INTERVAL)?;
    let ctx = context(cfg, host)?;
    let mut shutdown = Shutdown::install();
    tokio::select! {
        (reports, result) = steps::bootstrap(&ctx, &steps, &skip) => {
            print_reports(&reports);
            result.map_err(CliError::failed)?;
        }
        _ = shutdown.recv() => {
            tracing::info!("received shutdown signal during bootstrap; stopping");
            return Ok(());
        }
    }
    tracing::info!(
        "bootstrap completed; running as daemon (re-converging the host every {}s, Azure every {}s)",
        heal_every.as_secs(),
        azure_every.as_secs()
    );
    let host_only: BTreeSet<Phase> = skip.iter().copied().chain([Phase::Identity]).collect();
    let identity_only: BTreeSet<Phase> = skip
        .iter()
        .copied()
        .chain([Phase::Installation, Phase::Activation])
        .collect();
    let mut next_identity = tokio::time::Instant::now() + azure_every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(heal_every) => {}
            _ = shutdown.recv() => {
                tracing::info!("received shutdown signal; stopping");
                return Ok(());
            }
        }
        heal(&ctx, &steps, &host_only, "host").await;
        if !skip.contains(&Phase::Identity) && tokio::time::Instant::now() >= next_identity {
            let ok = heal(&ctx, &steps, &identity_only, "Azure").await;
            next_identity = next_azure_check(tokio::time::Instant::now(), ok, azure_every);
        }
    }
}

/// One self-heal pass; true when it ended converged.
async fn heal(ctx: &Context, steps: &[Box<dyn Step>], skip: &BTreeSet<Phase>, what: &str) -> bool {
    let (reports, result) = steps::bootstrap(ctx, steps, skip).await;
    for r in reports
        .iter()
        .filter(|r| matches!(r.outcome, StepOutcome::Applied { .. }))
    {
        if r.name == crate::steps::node_ready::NAME {
            // Waiting is not a repair: nothing was written or restarted for it.
            tracing::info!(step = r.name, "the node was not Ready; waited until it was");
        } else {
            tracing::warn!(step = r.name, "repaired drift ({what})");
        }
    }
    match result {
        Ok(()) => true,
        Err(e) => {
            tracing::error!("self-heal ({what}) failed: {e}");
            false
        }
    }
}

/// SIGTERM/SIGINT, with the handlers installed at construction (not at first poll), so a signal that
/// arrives at any point after start-up is seen and never falls back to the default "terminate" action.
struct Shutdown {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Shutdown {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Shutdown {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    async fn recv(&mut self) {
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
    fn every_azure_recheck_uses_the_configured_interval() {
        let now = tokio::time::Instant::now();
        // Configured shorter than the default hour: used after every converged pass, not only the first.
        let every = Duration::from_secs(300);
        assert_eq!(next_azure_check(now, true, every), now + every);
        // A failed pass retries sooner, but never later than the configured interval.
        assert_eq!(next_azure_check(now, false, every), now + every);
        let every = Duration::from_secs(7200);
        assert_eq!(next_azure_check(now, true, every), now + every);
        assert_eq!(next_azure_check(now, false, every), now + IDENTITY_RETRY);
        assert_eq!(
            next_azure_check(now, true, IDENTITY_INTERVAL),
            now + IDENTITY_INTERVAL
        );
    }
}
