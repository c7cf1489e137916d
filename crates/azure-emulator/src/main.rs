//! `flexnode-emulator`: thin CLI over the `azure_emulator` library — `serve`, `scenario`, and
//! the busybox-style `azcmagent` stand-in (also selected when invoked as `azcmagent`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use azure_emulator::{Emulator, EmulatorOptions, Scenario};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "flexnode-emulator",
    version,
    about = "Local stand-in for the Azure endpoints aks-flex-node uses (Entra ID, ARM, Arc HIMDS, azcmagent)",
    after_help = "Examples:\n  flexnode-emulator serve --listen 127.0.0.1:0\n  flexnode-emulator scenario --example > scenario.json\n  flexnode-emulator webhook-config --url http://127.0.0.1:PORT --out-dir /etc/kubernetes/aks-webhooks\n  FLEXNODE_EMULATOR_URL=http://127.0.0.1:PORT flexnode-emulator azcmagent show\n\nExit codes: 0 success, 1 failure, 2 usage or configuration error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every endpoint on one loopback port; prints the endpoints as one JSON line.
    Serve {
        /// Loopback address to listen on (port 0 = any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Scenario JSON file (default: the built-in demo scenario).
        #[arg(long, value_name = "FILE")]
        scenario: Option<PathBuf>,
        /// Persist state as JSON in this directory and reload it at start.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Directory for HIMDS challenge key files (default: a new temp dir).
        #[arg(long, value_name = "DIR")]
        himds_key_dir: Option<PathBuf>,
        /// Also append the request log to this file as JSON lines.
        #[arg(long, value_name = "FILE")]
        request_log: Option<PathBuf>,
    },
    /// Print or check scenario files.
    Scenario {
        /// Print the built-in demo scenario (a documented example).
        #[arg(long, conflicts_with = "check")]
        example: bool,
        /// Validate a scenario file and report the first problem.
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
    /// Write kube-apiserver's webhook config files (kubeconfig format) for the emulated AKS
    /// Entra ID authentication (TokenReview) and Azure RBAC authorization (SubjectAccessReview).
    WebhookConfig {
        /// The emulator's base URL, as printed by `serve` (e.g. http://127.0.0.1:8642).
        #[arg(long)]
        url: String,
        /// Directory for authn-webhook.yaml and authz-webhook.yaml (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
        /// Name of the scenario cluster to serve (default: the scenario's first cluster).
        #[arg(long, value_name = "NAME")]
        cluster: Option<String>,
    },
    /// Act as `azcmagent` (connect, show, disconnect, version).
    #[command(disable_help_flag = true)]
    Azcmagent {
        /// Arguments for azcmagent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let invoked_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if invoked_as == "azcmagent" {
        return ExitCode::from(runtime.block_on(azure_emulator::azcmagent::run(argv)) as u8);
    }
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Azcmagent { args } => {
            let mut full = vec![OsString::from("azcmagent")];
            full.extend(args);
            ExitCode::from(runtime.block_on(azure_emulator::azcmagent::run(full)) as u8)
        }
        Command::Scenario { example, check } => scenario(example, check),
        Command::WebhookConfig {
            url,
            out_dir,
            cluster,
        } => webhook_config(&url, &out_dir, cluster.as_deref()),
        Command::Serve {
            listen,
            scenario,
            state_dir,
            himds_key_dir,
            request_log,
        } => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("FLEXNODE_EMULATOR_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
                )
                .init();
            match runtime.block_on(serve(
                listen,
                scenario,
                state_dir,
                himds_key_dir,
                request_log,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn scenario(example: bool, check: Option<PathBuf>) -> ExitCode {
    if let Some(path) = check {
        return match Scenario::from_file(&path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    if !example {
        eprintln!(
            "error: give --example to print the demo scenario or --check FILE to validate one"
        );
        return ExitCode::from(2);
    }
    match serde_json::to_string_pretty(&Scenario::demo()) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn webhook_config(url: &str, out_dir: &std::path::Path, cluster: Option<&str>) -> ExitCode {
    match azure_emulator::aks::write_webhook_configs(url, cluster, out_dir) {
        Ok((authn, authz)) => {
            let out = serde_json::json!({
                "authentication_config": authn,
                "authorization_config": authz,
                "kube_apiserver_flags": [
                    format!("--authentication-token-webhook-config-file={}", authn.display()),
                    "--authorization-mode=Node,Webhook,RBAC".to_string(),
                    format!("--authorization-webhook-config-file={}", authz.display()),
                ],
            });
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn serve(
    listen: SocketAddr,
    scenario: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    himds_key_dir: Option<PathBuf>,
    request_log: Option<PathBuf>,
) -> anyhow::Result<()> {
    let scenario = match scenario {
        Some(p) => Scenario::from_file(&p)?,
        None => Scenario::demo(),
    };
    let emu = Emulator::start(EmulatorOptions {
        scenario,
        listen,
        himds_key_dir,
        state_dir,
        request_log_file: request_log,
    })
    .await
    .context("cannot start the emulator")?;
    println!("{}", serde_json::to_string(emu.urls())?);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    emu.shutdown().await;
    Ok(())
}
