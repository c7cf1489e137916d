//! One module per command, each thin: they build the context, call the library and print the result.
//! Errors are printed once here; the exit code says what kind of failure it was.

mod artifacts;
mod bootstrap;
mod config_cmd;
mod preflight;
mod status;
mod token;
mod unbootstrap;
mod version;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{self, Config, LoadOptions};
use crate::host::Host;

/// Documented exit codes.
pub mod exit {
    pub const OK: u8 = 0;
    /// The operation failed.
    pub const FAILED: u8 = 1;
    /// Usage or configuration error, detected before any side effect.
    pub const USAGE: u8 = 2;
}

/// An error with the exit code it deserves.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub error: anyhow::Error,
}

impl CliError {
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: exit::USAGE,
            error: e.into(),
        }
    }
    pub fn failed(e: impl Into<anyhow::Error>) -> Self {
        CliError {
            code: exit::FAILED,
            error: e.into(),
        }
    }
    /// Exit with `code` without printing an error: the command's output already said what is wrong.
    pub fn quiet(code: u8) -> Self {
        CliError {
            code,
            error: anyhow::Error::new(Quiet),
        }
    }
}

/// Marks a [`CliError::quiet`] error: nothing more to print.
#[derive(Debug, thiserror::Error)]
#[error("(reported above)")]
struct Quiet;

pub type CmdResult = Result<(), CliError>;

/// Run the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match dispatch(cli).await {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            if !e.error.is::<Quiet>() {
                eprintln!("error: {:#}", e.error);
            }
            ExitCode::from(e.code)
        }
    }
}

async fn dispatch(cli: Cli) -> CmdResult {
    match &cli.command {
        Command::Version { output } => return version::run(*output),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "aks-flex-node", &mut std::io::stdout());
            return Ok(());
        }
        Command::Config(ConfigCommand::Schema) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&config::json_schema()).unwrap_or_default()
            );
            return Ok(());
        }
        Command::Token => return token::run(&cli.root).await,
        Command::Status { schema: true, .. } => return status::schema(),
        _ => {}
    }

    let level = match &cli.log_level {
        Some(l) => Some(crate::logging::parse_level(l).ok_or_else(|| {
            CliError::usage(anyhow::anyhow!(
                "--log-level: {l:?} is not a log level; allowed values: debug, info, warning, error"
            ))
        })?),
        None => None,
    };
    let loaded = load_config(&cli.config)?;
    let cfg = Arc::new(loaded.config);
    let host = Arc::new(
        Host::new(&cli.root)
            .map_err(|e| CliError::usage(anyhow::anyhow!("--root {}: {e}", cli.root.display())))?,
    );
    let changes_the_machine = matches!(
        cli.command,
        Command::Agent { .. } | Command::Bootstrap { .. } | Command::Unbootstrap { .. }
    );
    if changes_the_machine && !host.is_sandbox() && !crate::host::fs::is_root_user() {
        return Err(CliError::usage(anyhow::anyhow!(
            "`{}` changes system files and services and must run as root: use sudo (or --root DIR to try it in a sandbox directory)",
            command_name(&cli.command)
        )));
    }

    let level = level.unwrap_or_else(|| level_of(&cfg));
    let log_dir = cfg.agent.log_dir.clone();
    let wants_file = !matches!(
        cli.command,
        Command::Config(_)
            | Command::Plan { .. }
            | Command::Status { .. }
            | Command::Preflight { .. }
    );
    crate::logging::init(
        level,
        cli.no_color,
        wants_file.then_some((&host.fs, log_dir.as_path())),
    );
    for w in &loaded.warnings {
        tracing::warn!("config: {w}");
    }

    match cli.command {
        Command::Config(ConfigCommand::Validate) => config_cmd::validate(&cli.config, &cfg),
        Command::Config(ConfigCommand::Show) => config_cmd::show(&cfg),
        Command::Artifacts(crate::cli::ArtifactsCommand::Bundle { output }) => {
            artifacts::bundle(cfg, host, &output).await
        }
        Command::Plan {
            output,
            skip_phase,
            only,
        } => bootstrap::plan(cfg, host, output, skip(skip_phase), select(&only)?).await,
        Command::Preflight {
            output,
            skip_phase,
            ignore_preflight_errors,
        } => {
            preflight::run(
                cfg,
                host,
                output,
                skip(skip_phase),
                crate::preflight::IgnoreSet::parse(&ignore_preflight_errors),
            )
            .await
        }
        Command::Bootstrap {
            skip_phase,
            only,
            ignore_preflight_errors,
        } => {
            bootstrap::bootstrap(
                cfg,
                host,
                skip(skip_phase),
                select(&only)?,
                crate::preflight::IgnoreSet::parse(&ignore_preflight_errors),
            )
            .await
        }
        Command::Unbootstrap {
            verify,
            delete_node,
        } => unbootstrap::unbootstrap(cfg, host, verify, delete_node).await,
        Command::Agent {
            skip_phase,
            only,
            ignore_preflight_errors,
        } => {
            bootstrap::agent(
                cfg,
                host,
                skip(skip_phase),
                select(&only)?,
                crate::preflight::IgnoreSet::parse(&ignore_preflight_errors),
            )
            .await
        }
        Command::Status { output, .. } => status::run(cfg, host, output).await,
        _ => unreachable!("handled above"),
    }
}

fn skip(phases: Vec<crate::model::Phase>) -> BTreeSet<crate::model::Phase> {
    phases.into_iter().collect()
}

/// The steps to run: all, or those named with `--only` (an unknown name is a usage error).
fn select(only: &[String]) -> Result<Vec<Box<dyn crate::engine::Step>>, CliError> {
    let all = crate::steps::all_steps();
    if only.is_empty() {
        return Ok(all);
    }
    let names: Vec<&str> = all.iter().map(|s| s.name()).collect();
    for o in only {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(o)) {
            return Err(CliError::usage(anyhow::anyhow!(
                "--only {o}: no such step; steps are: {}",
                names.join(", ")
            )));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| only.iter().any(|o| o.eq_ignore_ascii_case(s.name())))
        .collect())
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Status { .. } => "status",
        Command::Preflight { .. } => "preflight",
        Command::Token => "token",
        Command::Agent { .. } => "agent",
        Command::Bootstrap { .. } => "bootstrap",
        Command::Unbootstrap { .. } => "unbootstrap",
        _ => "command",
    }
}

fn level_of(cfg: &Config) -> tracing::Level {
    use crate::config::LogLevel;
    match cfg.agent.log_level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warning => tracing::Level::WARN,
        LogLevel::Error => tracing::Level::ERROR,
    }
}

/// Load and validate the config file; every problem is a usage error (exit 2).
pub fn load_config(path: &Path) -> Result<config::Loaded, CliError> {
    let env = |k: &str| std::env::var(k).ok();
    let opts = LoadOptions {
        hostname: hostname(),
        env: &env,
    };
    config::load_file(path, &opts).map_err(CliError::usage)
}

/// This machine's hostname (the default node and Arc machine name).
pub fn hostname() -> String {
    // What gethostname(2) returns on Linux: the UTS namespace's node name.
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}
