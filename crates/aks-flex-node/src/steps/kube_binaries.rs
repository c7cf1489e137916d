//! `KubeBinariesInstaller`: `/usr/local/bin/{kubelet,kubectl}` (0755), and `kubeadm` only with
//! `kubernetes.installKubeadm` (the agent never runs kubeadm; it is there for operators who want it), from
//! the per-binary downloads with their published `.sha256` or the original's `kubernetes.urlTemplate`
//! tarball (only those binaries are taken, each verified against its configured pin). The kubelet's
//! `--version` must equal the configured version exactly before anything is installed (the original matched
//! substrings). A kubeadm this agent installed earlier is removed once the setting is off.

use std::path::{Path, PathBuf};

use super::install::{self, InstallArtifact, InstallTarget, Unpack};
use super::{Action, Context, Step, StepError, StepResult};
use crate::artifacts::{self, KubeSource};
use crate::model::Phase;

pub struct KubeBinariesInstaller;

const NAME: &str = "KubeBinariesInstaller";
const BIN_DIR: &str = "/usr/local/bin";

/// The planned install: kubelet, kubectl (and kubeadm) into [`BIN_DIR`] (0755), recorded as
/// `kubernetes`, from the per-binary downloads or the configured tarball (each binary checked against its
/// pin); the staged kubelet must report exactly `kubernetes.version`.
fn install_of(ctx: &Context) -> StepResult<InstallArtifact> {
    let arch = artifacts::host_arch();
    let version = ctx.config.kubernetes.version.clone();
    let binaries = artifacts::kube_binaries(&ctx.config);
    let files = binaries
        .iter()
        .map(|b| InstallTarget::new(*b, Path::new(BIN_DIR).join(b), 0o755))
        .collect();
    let (sources, unpack, pins) =
        match artifacts::kube_source(&ctx.config, arch).map_err(StepError::other)? {
            KubeSource::Binaries(specs) => (specs, Unpack::FilePerSource, Vec::new()),
            KubeSource::Tarball { spec, pins } => (
                vec![spec],
                Unpack::TarGz {
                    prefix: "kubernetes/node/bin/".into(),
                },
                pins,
            ),
        };
    Ok(InstallArtifact {
        component: "kubernetes".into(),
        version: version.clone(),
        arch: arch.into(),
        sources,
        unpack,
        files,
        others: None,
        pins,
        version_check: Some(("kubelet".into(), version)),
        blocked: None,
    })
}

/// Binaries this agent installed earlier (they are in its install record) that the configuration no
/// longer wants (not among `install`'s files) and that are still there: today only kubeadm after
/// `kubernetes.installKubeadm` went off.
fn unwanted(ctx: &Context, install: &InstallArtifact) -> StepResult<Vec<PathBuf>> {
    let Some(rec) =
        artifacts::install::load_record(&ctx.host, "kubernetes").map_err(StepError::other)?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for f in rec.files {
        if !install.files.iter().any(|t| t.path == f.path) && ctx.host.fs.exists(&f.path)? {
            out.push(f.path);
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Step for KubeBinariesInstaller {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Installation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let install = install_of(ctx)?;
        let removals: Vec<Action> = unwanted(ctx, &install)?
            .into_iter()
            .map(|path| Action::RemoveFile { path })
            .collect();
        if install::is_current(ctx, &install)? {
            return Ok(removals);
        }
        // Install first: a new install record replaces the old one, then the leftovers go.
        let mut actions = vec![Action::InstallArtifact(Box::new(install))];
        actions.extend(removals);
        Ok(actions)
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        Ok(install::unless_current(ctx, install_of(ctx)?)?
            .map(|a| a.sources)
            .unwrap_or_default())
    }
}
