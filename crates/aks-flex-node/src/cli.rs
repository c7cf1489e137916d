//! The command-line contract (clap derive). Every flag and command is defined here once; help text,
//! completions and the README's command table come from these definitions.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::model::Phase;

pub const DEFAULT_CONFIG: &str = "/etc/aks-flex-node/config.json";

#[derive(Debug, Parser)]
#[command(
    name = "aks-flex-node",
    about = "AKS Flex Node Agent: turn a Linux machine outside Azure into an AKS worker node",
    long_about = "Azure Kubernetes Service Flex Node Agent for edge computing scenarios.\n\n\
        Registers the machine with Azure Arc, installs and configures the node runtime (runc, containerd,\n\
        Kubernetes binaries, CNI, node-problem-detector), joins the AKS cluster and keeps the node healthy.",
    after_help = "Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error.\n\
        Documentation: see README.md.",
    disable_version_flag = true
)]
pub struct Cli {
    /// Path of the configuration JSON file (read as given, not under --root).
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG, env = "AKS_FLEX_NODE_CONFIG")]
    pub config: PathBuf,

    /// Treat DIR as the machine's root: every host path is resolved under it. Any root other than `/`
    /// is a sandbox: files are written there, host-changing commands and services are only recorded.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Log level (overrides agent.logLevel). Allowed values: debug, info, warning, error.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Never colour output (also honoured: the NO_COLOR environment variable).
    #[arg(long, global = true)]
    pub no_color: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bootstrap the node, then stay up as the daemon (what the systemd unit runs).
    ///
    /// Examples:
    ///   aks-flex-node agent --config /etc/aks-flex-node/config.json
    Agent {
        /// Skip a phase (repeatable), as for bootstrap.
        #[arg(long = "skip-phase", value_name = "PHASE")]
        skip_phase: Vec<Phase>,
        /// Run only the named step(s) (repeatable).
        #[arg(long = "only", value_name = "STEP")]
        only: Vec<String>,
        /// As for bootstrap: the named preflight errors become warnings (comma-separated or repeated;
        /// `all` for every check). Accepted now; the daemon's preflight is not wired in yet.
        #[arg(
            long = "ignore-preflight-errors",
            value_name = "CHECK",
            value_delimiter = ','
        )]
        ignore_preflight_errors: Vec<String>,
    },

    /// Bootstrap once and exit (cloud-init, CI, tests).
    ///
    /// Runs the preflight checks first (see `preflight`) and changes nothing if one of them fails.
    ///
    /// Examples:
    ///   aks-flex-node bootstrap
    ///   aks-flex-node bootstrap --skip-phase identity --root /tmp/sandbox
    Bootstrap {
        /// Skip a phase (repeatable). Skipping `identity` makes no Azure call at all.
        #[arg(long = "skip-phase", value_name = "PHASE")]
        skip_phase: Vec<Phase>,
        /// Run only the named step(s) (repeatable), e.g. `--only SystemConfigured`.
        #[arg(long = "only", value_name = "STEP")]
        only: Vec<String>,
        /// Turn the named preflight errors into warnings (comma-separated or repeated; case-insensitive;
        /// `all` for every check), e.g. `--ignore-preflight-errors=Swap,Port-10250`.
        #[arg(
            long = "ignore-preflight-errors",
            value_name = "CHECK",
            value_delimiter = ','
        )]
        ignore_preflight_errors: Vec<String>,
    },

    /// Undo everything bootstrap did, in reverse order, Azure side included.
    ///
    /// Stops the agent's service first (in any state), takes the node's workload down (pods, their
    /// mounts and network namespaces, the CNI bridge, the kubelet's and CNI plugins' iptables chains),
    /// then undoes the journal and removes the runtime directories the services created.
    ///
    /// Examples:
    ///   aks-flex-node unbootstrap --verify --delete-node
    Unbootstrap {
        /// Afterwards, check that nothing the agent installed or caused is left (files, units, processes,
        /// mounts, network devices, iptables chains); list what is and exit 1 if anything remains.
        #[arg(long)]
        verify: bool,
        /// Delete this node's Node object from the cluster (with the node's own credential, before the
        /// identity is removed). Without it the Node object stays and `kubectl delete node` removes it.
        #[arg(long)]
        delete_node: bool,
    },

    /// Show what bootstrap would change, without changing anything.
    ///
    /// Examples:
    ///   aks-flex-node plan
    ///   aks-flex-node plan -o json | jq '.steps[] | select(.status == "changes")'
    Plan {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
        /// Skip a phase (repeatable), as for bootstrap.
        #[arg(long = "skip-phase", value_name = "PHASE")]
        skip_phase: Vec<Phase>,
        /// Plan only the named step(s) (repeatable).
        #[arg(long = "only", value_name = "STEP")]
        only: Vec<String>,
    },

    /// Show the node's health: runtime versions and services, readiness on the API server, Arc,
    /// bootstrap steps and the agent daemon's last pass.
    ///
    /// Looks at everything live (read-only, each probe bounded to a few seconds) and takes the daemon's
    /// facts from /run/aks-flex-node/status.json. Exit 0 healthy, 1 degraded (the problems are listed).
    ///
    /// Examples:
    ///   sudo aks-flex-node status
    ///   sudo aks-flex-node status -o json | jq .problems
    ///   aks-flex-node status --schema
    Status {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
        /// Print the JSON Schema of the status (`-o json` and the status file) and exit. Needs no config.
        #[arg(long)]
        schema: bool,
    },

    /// Check the machine, the configuration and Azure before bootstrap; changes nothing.
    ///
    /// Runs every named check (OS, Arch, CPU, Memory, DiskSpace, Swap, CgroupVersion, CgroupDriver,
    /// Port-N, RequiredPrograms, ConflictingPackages, ArcAgent, ArcServices, AzureEndpoints, ClockSkew,
    /// AzureLogin, AzurePermissions, AzureUnbootstrapPermissions, ClusterAzureRBAC) and prints each with
    /// its status and, for a problem, a one-line fix. `bootstrap` runs the same checks before its first
    /// change. Exit 0 when no error is found (warnings allowed), 1 on errors, 2 on usage errors.
    /// Runs without root too; checks it cannot perform are reported as skipped.
    ///
    /// Examples:
    ///   aks-flex-node preflight
    ///   aks-flex-node preflight -o json | jq '.checks[] | select(.status == "fail")'
    ///   aks-flex-node preflight --ignore-preflight-errors=Swap,Port-10250
    ///   aks-flex-node preflight --skip-phase identity   # host checks only, no Azure call
    #[command(verbatim_doc_comment)]
    Preflight {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
        /// Skip the checks of a phase (repeatable), as for bootstrap: `identity` skips every Azure check.
        #[arg(long = "skip-phase", value_name = "PHASE")]
        skip_phase: Vec<Phase>,
        /// Turn the named preflight errors into warnings (comma-separated or repeated; case-insensitive;
        /// `all` for every check), e.g. `--ignore-preflight-errors=Swap,Port-10250`.
        #[arg(
            long = "ignore-preflight-errors",
            value_name = "CHECK",
            value_delimiter = ','
        )]
        ignore_preflight_errors: Vec<String>,
    },

    /// Kubelet exec credential plugin: print an ExecCredential with an Entra token from the Arc identity.
    ///
    /// Used by the kubelet kubeconfig; reads KUBERNETES_EXEC_INFO, caches the token until 5 minutes
    /// before expiry. Needs no config.
    Token,

    /// Print version information.
    Version {
        #[arg(short, long, value_enum, default_value_t)]
        output: Output,
    },

    /// Inspect the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),

    /// Work with the runtime artifacts (runc, containerd, Kubernetes, CNI, node-problem-detector).
    #[command(subcommand)]
    Artifacts(ArtifactsCommand),

    /// Print shell completions.
    ///
    /// Examples:
    ///   aks-flex-node completions bash > /etc/bash_completion.d/aks-flex-node
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ArtifactsCommand {
    /// Build an offline bundle for the configured versions (air-gapped installs: build once with
    /// network, copy DIR to the node, set bootstrap.offlineArtifacts.source to it).
    ///
    /// Examples:
    ///   aks-flex-node artifacts bundle --output /srv/aks-flex-node-bundle
    Bundle {
        /// Directory to write the files and manifest.json into (created if missing).
        #[arg(long, value_name = "DIR")]
        output: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration file and report every problem at once.
    Validate,
    /// Print the effective configuration (defaults applied, secrets redacted) as JSON.
    Show,
    /// Print the JSON Schema of the configuration file.
    Schema,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn skip_phase_is_repeatable_and_checked() {
        let cli = Cli::try_parse_from([
            "aks-flex-node",
            "bootstrap",
            "--skip-phase",
            "identity",
            "--skip-phase",
            "activation",
        ])
        .unwrap();
        match cli.command {
            Command::Bootstrap { skip_phase, .. } => {
                assert_eq!(skip_phase, vec![Phase::Identity, Phase::Activation])
            }
            other => panic!("{other:?}"),
        }
        let err = Cli::try_parse_from(["aks-flex-node", "bootstrap", "--skip-phase", "nope"])
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("identity"), "{err}");
    }

    #[test]
    fn ignore_preflight_errors_is_comma_separated_and_repeatable() {
        let cli = Cli::try_parse_from([
            "aks-flex-node",
            "preflight",
            "--ignore-preflight-errors=Swap,Port-10250",
            "--ignore-preflight-errors",
            "all",
        ])
        .unwrap();
        match cli.command {
            Command::Preflight {
                ignore_preflight_errors,
                ..
            } => assert_eq!(ignore_preflight_errors, ["Swap", "Port-10250", "all"]),
            other => panic!("{other:?}"),
        }
        for cmd in ["bootstrap", "agent"] {
            let cli = Cli::try_parse_from([
                "aks-flex-node",
                cmd,
                "--ignore-preflight-errors=cgroupversion",
            ])
            .unwrap();
            match cli.command {
                Command::Bootstrap {
                    ignore_preflight_errors,
                    ..
                }
                | Command::Agent {
                    ignore_preflight_errors,
                    ..
                } => assert_eq!(ignore_preflight_errors, ["cgroupversion"]),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "aks-flex-node",
            "plan",
            "-o",
            "json",
            "--root",
            "/tmp/x",
            "--config",
            "/c.json",
        ])
        .unwrap();
        assert_eq!(cli.root, PathBuf::from("/tmp/x"));
        assert_eq!(cli.config, PathBuf::from("/c.json"));
    }
}
