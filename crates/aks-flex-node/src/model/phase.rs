//! The bootstrap phases.

use serde::Serialize;

/// The original's three phases; `--skip-phase` takes these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Azure: authenticate, Arc registration, role assignments.
    Identity,
    /// Host: kernel settings, runtime, Kubernetes binaries, CNI.
    Installation,
    /// Join: cluster credentials, kubelet, services, node ready.
    Activation,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Identity => "identity",
            Phase::Installation => "installation",
            Phase::Activation => "activation",
        })
    }
}
