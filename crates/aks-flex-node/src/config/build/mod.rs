//! Turns the on-disk `ConfigFile` into the effective `Config`: applies the original's defaults,
//! merges legacy and newer key shapes (conflicting values are an error naming both paths),
//! resolves secrets, and validates every field, collecting all problems instead of stopping at
//! the first.
//!
//! One module per config section, each holding that section's defaults, legacy keys and validation;
//! `check` has the checks they share, `secrets` the service-principal secret's sources. [`build`]
//! runs the sections in a fixed order (problems and warnings come out in that order) and assembles
//! the `Config` when nothing is wrong.

mod agent;
mod azure;
mod check;
mod components;
mod networking;
mod node;
mod paths;
mod secrets;
mod sources;

use super::file::ConfigFile;
use super::model::*;
use super::{LoadOptions, Problem};
use check::{B, UNSUPPORTED};

pub(super) use secrets::loose_mode_warning;

pub(super) struct BuildOutput {
    pub config: Option<Config>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// The file itself holds a secret (inline clientSecret, or a bootstrap token, which is refused).
    pub inline_secret: bool,
}

pub(super) fn build(f: ConfigFile, opts: &LoadOptions) -> BuildOutput {
    let mut b = B::new(opts);
    b.ignored("hostRouting", f.host_routing.is_some(), UNSUPPORTED);
    let azure = azure::azure(&mut b, f.azure.unwrap_or_default());
    let agent = agent::agent(&mut b, f.agent.unwrap_or_default());
    let comp = f.components.unwrap_or_default();
    let kubernetes =
        components::kubernetes(&mut b, f.kubernetes.unwrap_or_default(), comp.kubernetes);
    let containerd = components::containerd(
        &mut b,
        f.containerd.unwrap_or_default(),
        comp.containerd,
        comp.sandbox_image,
    );
    let runc = components::runc(&mut b, f.runc.unwrap_or_default(), comp.runc);
    let mut nf = f.networking.unwrap_or_default();
    let cni = components::cni(&mut b, f.cni.unwrap_or_default(), nf.cni_version.take());
    let npd = components::npd(&mut b, f.npd.unwrap_or_default());
    let node = node::node(&mut b, f.node.unwrap_or_default());
    let networking = networking::networking(&mut b, nf, cni.mode, &agent.node_name);
    let paths = paths::paths(&mut b, f.paths.unwrap_or_default());
    let bootstrap = sources::bootstrap(&mut b, f.bootstrap.unwrap_or_default());
    let artifacts = sources::artifacts(&mut b, f.artifacts.unwrap_or_default());

    let config = b.problems.is_empty().then_some(Config {
        azure,
        agent,
        kubernetes,
        containerd,
        runc,
        cni,
        npd,
        node,
        networking,
        paths,
        bootstrap,
        artifacts,
    });
    BuildOutput {
        config,
        problems: b.problems,
        warnings: b.warnings,
        inline_secret: b.inline_secret,
    }
}
