//! `plan`, `bootstrap`, `unbootstrap` and `agent`.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{CliError, CmdResult};
use crate::agent::daemon::{self, Shutdown};
use crate::agent::notify::Notifier;
use crate::cli::Output;
use crate::config::Config;
use crate::engine;
use crate::engine::{Context, Step, StepOutcome, StepReport};
use crate::host::Host;
use crate::model::Phase;

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
    let plan = engine::plan(&ctx, &steps, &skip)
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
        r = engine::bootstrap(&ctx, &steps, &skip) => r,
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

/// The daemon (see [`crate::agent::daemon`]): bootstrap, then stay up and repair drift. SIGTERM/SIGINT
/// end it cleanly (exit 0); a configuration error exits 2; every other failure is retried. Preflight runs
/// before the first bootstrap pass, as for `bootstrap`, until it passes (its errors are retried too).
pub async fn agent(
    cfg: Arc<Config>,
    host: Arc<Host>,
    skip: BTreeSet<Phase>,
    steps: Vec<Box<dyn Step>>,
    ignore: crate::preflight::IgnoreSet,
) -> CmdResult {
    let opts = daemon::Options::from_env(skip).map_err(|e| CliError::usage(anyhow::anyhow!(e)))?;
    let ctx = context(cfg, host)?;
    let mut shutdown = Shutdown::install();
    let notifier = Notifier::new();
    let preflight_opts = crate::preflight::Options::for_bootstrap(ignore, &opts.skip, &steps);
    let preflight =
        || -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + '_>> {
            Box::pin(async {
                let report = crate::preflight::run_with(&ctx, &preflight_opts).await;
                for w in report.warnings() {
                    tracing::warn!(check = %w.name, "preflight: {}", w.message);
                }
                if report.errors().is_empty() {
                    Ok(())
                } else {
                    Err(report.refusal())
                }
            })
        };
    daemon::run(
        &ctx,
        &steps,
        &opts,
        &notifier,
        Some(&preflight),
        shutdown.recv(),
    )
    .await
    .map_err(CliError::usage)
}
