//! Offline bundles: a directory (or `file://` URL) holding the artifact files and a `manifest.json`
//! listing component, version, arch, file and sha256 of each. `aks-flex-node artifacts bundle` builds one
//! with network access; `bootstrap.offlineArtifacts.source` installs from it without any.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ArtifactError, ArtifactSpec};

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleEntry {
    pub component: String,
    pub version: String,
    pub arch: String,
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    pub artifacts: Vec<BundleEntry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            api_version: "aks-flex-node/v1".into(),
            kind: "ArtifactBundle".into(),
            artifacts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
}

/// `/dir` or `file:///dir` to a path.
pub fn source_dir(source: &str) -> PathBuf {
    PathBuf::from(source.strip_prefix("file://").unwrap_or(source))
}

impl Bundle {
    pub fn open(source: &str) -> Result<Bundle, ArtifactError> {
        let dir = source_dir(source);
        let err = |message: String| ArtifactError::Bundle {
            source_dir: dir.display().to_string(),
            message,
        };
        let path = dir.join(MANIFEST);
        let text = std::fs::read(&path).map_err(|e| {
            err(format!(
                "cannot read {MANIFEST} ({e}); build the bundle with `aks-flex-node artifacts bundle --output DIR`"
            ))
        })?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| err(format!("{MANIFEST} is not a valid bundle manifest: {e}")))?;
        for a in &manifest.artifacts {
            if !super::is_sha256_hex(&a.sha256) {
                return Err(err(format!(
                    "{MANIFEST}: entry {} {} has an invalid sha256 {:?}",
                    a.component, a.version, a.sha256
                )));
            }
            if a.file.contains('/') || a.file.starts_with('.') {
                return Err(err(format!(
                    "{MANIFEST}: entry {} {} names file {:?}; files must be plain names in the bundle directory",
                    a.component, a.version, a.file
                )));
            }
        }
        Ok(Bundle { dir, manifest })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The entry for exactly this component, version, arch and file.
    pub fn find(&self, spec: &ArtifactSpec) -> Option<&BundleEntry> {
        self.manifest.artifacts.iter().find(|a| {
            a.component == spec.component
                && a.version == spec.version
                && a.arch == spec.arch
                && a.file == spec.file
        })
    }
}

/// Fetch every artifact `cfg` needs (verified, via the cache) and write them plus `manifest.json` into
/// `output`. The bundle source settings of `cfg` are ignored (a bundle is built from mirror/upstream).
pub async fn build(
    cfg: &crate::config::Config,
    host: std::sync::Arc<crate::host::Host>,
    output: &Path,
) -> Result<Manifest, ArtifactError> {
    let arch = super::host_arch();
    let specs = super::all_specs(cfg, arch)?;
    if let super::NpdDecision::Skipped { warning } = super::npd_decision(cfg, arch) {
        tracing::warn!("{warning}");
    }
    let mut opts = super::FetcherOptions::from_config(cfg);
    opts.offline = None;
    let fetcher = super::Fetcher::new(host, opts)?;
    let no_hook = |_: &Path| Ok(());
    let fetched = fetcher.fetch_all(&specs, &no_hook).await?;
    std::fs::create_dir_all(output)
        .map_err(|e| ArtifactError::io(format!("creating {}", output.display()), e))?;
    let mut manifest = Manifest::default();
    for (spec, f) in specs.iter().zip(&fetched) {
        let dest = output.join(&spec.file);
        std::fs::copy(&f.real_path, &dest)
            .map_err(|e| ArtifactError::io(format!("writing {}", dest.display()), e))?;
        manifest.artifacts.push(BundleEntry {
            component: spec.component.clone(),
            version: spec.version.clone(),
            arch: spec.arch.clone(),
            file: spec.file.clone(),
            sha256: f.sha256.clone(),
        });
    }
    let text = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let tmp = output.join(".manifest.json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, output.join(MANIFEST)))
        .map_err(|e| ArtifactError::io("writing manifest.json", e))?;
    Ok(manifest)
}
