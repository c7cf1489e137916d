//! `KubeBinariesInstaller`: `/usr/local/bin/{kubelet,kubectl}` (0755), and `kubeadm` only with
//! `kubernetes.installKubeadm` (the agent never runs kubeadm; it is there for operators who want it), from
//! the per-binary downloads with their published `.sha256` or the original's `kubernetes.urlTemplate`
//! tarball (only those binaries are taken, each verified against its configured pin). The kubelet's
//! `--version` must equal the configured version exactly before anything is installed (the original matched
//! substrings). A kubeadm this agent installed earlier is removed once the setting is off.

use std::path::{Path, PathBuf};

use super::{Action, Context, Step, StepError, StepResult};
use crate::artifacts::{self, install, KubeSource};
use crate::host::CommandSpec;
use crate::model::Phase;

pub struct KubeBinariesInstaller;

const NAME: &str = "KubeBinariesInstaller";
const BIN_DIR: &str = "/usr/local/bin";

/// `Kubernetes v1.30.4` -> ok when it names exactly `version`.
pub fn version_matches(output: &str, version: &str) -> bool {
    output
        .split_whitespace()
        .last()
        .is_some_and(|v| v.strip_prefix('v') == Some(version))
}

fn wanted(ctx: &Context) -> Vec<(PathBuf, u32)> {
    artifacts::kube_binaries(&ctx.config)
        .iter()
        .map(|b| (Path::new(BIN_DIR).join(b), 0o755))
        .collect()
}

fn installed(ctx: &Context) -> StepResult<bool> {
    install::is_current(
        &ctx.host,
        "kubernetes",
        &ctx.config.kubernetes.version,
        artifacts::host_arch(),
        None,
        &wanted(ctx),
    )
    .map_err(StepError::other)
}

/// Binaries this agent installed earlier (they are in its install record) that the configuration no
/// longer wants and that are still there: today only kubeadm after `kubernetes.installKubeadm` went off.
fn unwanted(ctx: &Context) -> StepResult<Vec<PathBuf>> {
    let Some(rec) = install::load_record(&ctx.host, "kubernetes").map_err(StepError::other)? else {
        return Ok(Vec::new());
    };
    let wanted = wanted(ctx);
    let mut out = Vec::new();
    for f in rec.files {
        if !wanted.iter().any(|(p, _)| *p == f.path) && ctx.host.fs.exists(&f.path)? {
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
        let arch = artifacts::host_arch();
        let source = artifacts::kube_source(&ctx.config, arch).map_err(StepError::other)?;
        let wanted = wanted(ctx);
        let removals: Vec<Action> = unwanted(ctx)?
            .into_iter()
            .map(|path| Action::RemoveFile { path })
            .collect();
        if installed(ctx)? {
            return Ok(removals);
        }
        let spec = match &source {
            KubeSource::Binaries(b) => b[0].clone(),
            KubeSource::Tarball { spec, .. } => spec.clone(),
        };
        let mut spec = spec;
        spec.component = "kubernetes".into();
        // Install first: a new install record replaces the old one, then the leftovers go.
        let mut actions = vec![install::install_action(
            &spec,
            &wanted.iter().map(|w| w.0.clone()).collect::<Vec<_>>(),
        )];
        actions.extend(removals);
        Ok(actions)
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        if installed(ctx)? {
            return Ok(vec![]);
        }
        Ok(
            match artifacts::kube_source(&ctx.config, artifacts::host_arch())
                .map_err(StepError::other)?
            {
                KubeSource::Binaries(specs) => specs,
                KubeSource::Tarball { spec, .. } => vec![spec],
            },
        )
    }

    async fn apply_custom(
        &self,
        ctx: &Context,
        _kind: &str,
        _detail: &serde_json::Value,
    ) -> StepResult<()> {
        let arch = artifacts::host_arch();
        let version = ctx.config.kubernetes.version.clone();
        let binaries = artifacts::kube_binaries(&ctx.config);
        let source = artifacts::kube_source(&ctx.config, arch).map_err(StepError::other)?;
        let (staged, source_sha, spec) = match &source {
            KubeSource::Binaries(specs) => {
                let fetched = install::fetch_journaled(ctx, NAME, specs).await?;
                let pairs: Vec<(&str, &artifacts::Fetched)> =
                    binaries.iter().copied().zip(fetched.iter()).collect();
                let staged = install::Staged::copies(&ctx.host, &pairs, 0o700)
                    .await
                    .map_err(StepError::other)?;
                (staged, fetched[0].sha256.clone(), specs[0].clone())
            }
            KubeSource::Tarball { spec, pins } => {
                let fetched =
                    install::fetch_journaled(ctx, NAME, std::slice::from_ref(spec)).await?;
                let staged = install::Staged::tar_gz(
                    &ctx.host,
                    &fetched[0],
                    &spec.component,
                    &spec.version,
                    |p| {
                        p.strip_prefix("kubernetes/node/bin/")
                            .filter(|n| binaries.contains(n))
                            .map(str::to_string)
                    },
                )
                .await
                .map_err(StepError::other)?;
                for (name, pin) in pins {
                    let path = staged.get(name).ok_or_else(|| {
                        StepError::failed(format!(
                            "{} does not contain kubernetes/node/bin/{name}",
                            spec.url
                        ))
                    })?;
                    let (actual, _) = install::hash_file(path)
                        .map_err(|e| StepError::failed(format!("reading staged {name}: {e}")))?;
                    if &actual != pin {
                        return Err(StepError::other(artifacts::ArtifactError::Mismatch {
                            component: name.clone(),
                            version: version.clone(),
                            url: spec.url.clone(),
                            expected: pin.clone(),
                            actual,
                        }));
                    }
                    set_exec(path)?;
                }
                (staged, fetched[0].sha256.clone(), spec.clone())
            }
        };
        // The exact version check runs the staged kubelet (read-only).
        let kubelet = staged
            .get("kubelet")
            .ok_or_else(|| StepError::failed("the Kubernetes artifacts have no kubelet"))?;
        let out = ctx
            .host
            .run_checked(&CommandSpec::new(kubelet.display().to_string()).arg("--version"))
            .await?;
        if !version_matches(&out.stdout, &version) {
            return Err(StepError::failed(format!(
                "the downloaded kubelet reports {:?}, but kubernetes.version is {version}; the artifact source serves the wrong version",
                out.stdout.trim()
            )));
        }
        let mut spec = spec;
        spec.component = "kubernetes".into();
        install::install_staged_into(
            ctx,
            NAME,
            &spec,
            &source_sha,
            &staged,
            Path::new(BIN_DIR),
            0o755,
            binaries,
        )
        .await?;
        Ok(())
    }
}

fn set_exec(path: &Path) -> StepResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StepError::failed(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::version_matches;

    #[test]
    fn version_is_matched_exactly() {
        assert!(version_matches("Kubernetes v1.30.4\n", "1.30.4"));
        assert!(!version_matches("Kubernetes v1.30.40\n", "1.30.4"));
        assert!(!version_matches("Kubernetes v1.30.4-rc.1\n", "1.30.4"));
        assert!(!version_matches("", "1.30.4"));
    }
}
