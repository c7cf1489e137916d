//! Verified artifacts: which files each runtime component needs (upstream URLs, checksum files, pinned
//! digests), where they come from (offline bundle, mirror, upstream), downloading them with a streaming
//! sha256 into a cache keyed by digest, extracting them into a staging directory and installing them
//! atomically under the root. See DESIGN.md §6.
//!
//! No unverified byte is ever installed: every file is checked against a digest that comes either from a
//! pin (config or the offline bundle's manifest) or from the checksum file upstream publishes next to it.

pub mod bundle;
pub mod fetch;
pub mod install;

use std::fmt;

use crate::config::Config;

pub use fetch::{Fetched, Fetcher, FetcherOptions};
pub use install::{InstallFile, InstallRecord};

/// Where the download cache lives (under the root).
pub const CACHE_DIR: &str = "/var/cache/aks-flex-node";
/// Where installed-artifact records live (under the root).
pub const RECORD_DIR: &str = "/var/lib/aks-flex-node/artifacts";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{component} {version}: sha256 mismatch for {url}: expected {expected}, got {actual}; the file was discarded (a corrupted download, a wrong pin, or a tampered mirror)")]
    Mismatch {
        component: String,
        version: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{component} {version} ({arch}) is not published at {url} (HTTP 404); check the version in the config and that the mirror/bundle carries it for this architecture")]
    NotFound {
        component: String,
        version: String,
        arch: String,
        url: String,
    },
    #[error(
        "{component} {version}: downloading {url} failed after {attempts} attempt(s): {reason}"
    )]
    Download {
        component: String,
        version: String,
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("{component} {version}: no sha256 is known for {file}: {hint}")]
    NoDigest {
        component: String,
        version: String,
        file: String,
        hint: String,
    },
    #[error("{component} {version}: checksum file {url} does not list a sha256 for {file}")]
    BadChecksumFile {
        component: String,
        version: String,
        url: String,
        file: String,
    },
    #[error("offline bundle {source_dir}: {message}")]
    Bundle { source_dir: String, message: String },
    #[error("{component} {version}: archive {file}: {message}")]
    Archive {
        component: String,
        version: String,
        file: String,
        message: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] crate::host::FsError),
    #[error("{0}")]
    Other(String),
}

impl ArtifactError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ArtifactError::Io {
            what: what.into(),
            source,
        }
    }
}

/// The architecture names the upstream release files use.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Where the expected digest of a file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestSource {
    /// A pinned digest (config, the agent's own table, or a bundle manifest): it wins over checksum files.
    Pinned(String),
    /// The checksum file upstream publishes; the line for `file` (or its only digest) is taken.
    ChecksumFile { url: String },
    /// A checksum file upstream does NOT publish but a mirror may carry next to the file (`<file>.sha256`,
    /// fetched through the mirror like every checksum file). When the mirror has none, fetching fails with
    /// `hint`.
    MirrorChecksumFile { url: String, hint: String },
    /// Nothing known: fetching fails with this hint.
    Unknown { hint: String },
}

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactSpec {
    /// `runc`, `containerd`, `cni`, `kubelet`, `kubectl`, `kubeadm`, `kubernetes-node`, `npd`.
    pub component: String,
    pub version: String,
    pub arch: String,
    /// The upstream URL (the mirror and bundle are derived from it).
    pub url: String,
    /// The file name (last URL segment), also its name in a bundle.
    pub file: String,
    pub digest: DigestSource,
}

impl fmt::Display for ArtifactSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} ({})", self.component, self.version, self.arch)
    }
}

fn file_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_string()
}

fn spec(
    component: &str,
    version: &str,
    arch: &str,
    url: String,
    pin: Option<&str>,
    checksum_url: Option<String>,
    hint: &str,
) -> ArtifactSpec {
    let digest = match (pin, checksum_url) {
        (Some(p), _) => DigestSource::Pinned(p.to_ascii_lowercase()),
        (None, Some(u)) => DigestSource::ChecksumFile { url: u },
        (None, None) => match pinned_default(component, version, arch) {
            Some(d) => DigestSource::Pinned(d.to_string()),
            None => DigestSource::Unknown {
                hint: hint.to_string(),
            },
        },
    };
    ArtifactSpec {
        component: component.into(),
        version: version.into(),
        arch: arch.into(),
        file: file_name(&url),
        url,
        digest,
    }
}

/// Digests the agent carries for default versions of components whose upstream publishes no checksum
/// file (node-problem-detector). Each entry is (component, version, arch, sha256). Entries are only added
/// from a verified upstream download; until then such versions need a configured pin.
const PINNED_DEFAULTS: &[(&str, &str, &str, &str)] = &[];

fn pinned_default(component: &str, version: &str, arch: &str) -> Option<&'static str> {
    PINNED_DEFAULTS
        .iter()
        .find(|(c, v, a, _)| *c == component && *v == version && *a == arch)
        .map(|(_, _, _, d)| *d)
}

pub fn runc_spec(cfg: &Config, arch: &str) -> ArtifactSpec {
    let v = &cfg.runc.version;
    let base = format!("https://github.com/opencontainers/runc/releases/download/v{v}");
    spec(
        "runc",
        v,
        arch,
        format!("{base}/runc.{arch}"),
        cfg.runc.sha256.as_deref(),
        Some(format!("{base}/runc.sha256sum")),
        "set runc.sha256",
    )
}

pub fn containerd_spec(cfg: &Config, arch: &str) -> ArtifactSpec {
    let v = &cfg.containerd.version;
    let url = format!("https://github.com/containerd/containerd/releases/download/v{v}/containerd-{v}-linux-{arch}.tar.gz");
    spec(
        "containerd",
        v,
        arch,
        url.clone(),
        cfg.containerd.sha256.as_deref(),
        Some(format!("{url}.sha256sum")),
        "set containerd.sha256",
    )
}

pub fn cni_spec(cfg: &Config, arch: &str) -> ArtifactSpec {
    let v = &cfg.cni.version;
    let url = format!("https://github.com/containernetworking/plugins/releases/download/v{v}/cni-plugins-linux-{arch}-v{v}.tgz");
    spec(
        "cni",
        v,
        arch,
        url.clone(),
        cfg.cni.sha256.as_deref(),
        Some(format!("{url}.sha256")),
        "set cni.sha256",
    )
}

/// Where node-problem-detector's digest comes from, in order: `npd.sha256`, the agent's own table (empty
/// until a digest is taken from a verified upstream download: digests are never invented), an offline
/// bundle's manifest (looked up by the fetcher), and a `.sha256` file next to the tarball on the mirror.
/// Upstream publishes no checksum file, so with none of these the install is refused.
pub fn npd_spec(cfg: &Config, arch: &str) -> ArtifactSpec {
    let v = &cfg.npd.version;
    let url = format!("https://github.com/kubernetes/node-problem-detector/releases/download/{v}/node-problem-detector-{v}-linux_{arch}.tar.gz");
    let file = file_name(&url);
    let what = format!(
        "set npd.sha256 to the sha256 of {file} (the file at {url}), or set npd.enabled: false to skip node-problem-detector"
    );
    let mut s = spec(
        "npd",
        v,
        arch,
        url.clone(),
        cfg.npd.sha256.as_deref(),
        None,
        &format!("upstream publishes no checksum file for node-problem-detector and the agent carries no digest for {v}; {what} (an offline bundle listing it, or a mirror with {file}.sha256 next to it, also works)"),
    );
    if matches!(s.digest, DigestSource::Unknown { .. }) && cfg.artifacts.mirror.is_some() {
        s.digest = DigestSource::MirrorChecksumFile {
            url: format!("{url}.sha256"),
            hint: format!(
                "upstream publishes no checksum file for node-problem-detector and the mirror has no {file}.sha256 either; {what}"
            ),
        };
    }
    s
}

/// Whether node-problem-detector is installed: the one decision `NPD_Installer`, `ServicesEnabled` and
/// `artifacts bundle` share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpdDecision {
    /// `npd.enabled: false`.
    Disabled,
    /// Installed and started. With an explicit `npd.enabled: true` and no digest source this is still
    /// the answer: the install is then refused (before anything changes), as the user asked for NPD.
    Wanted,
    /// `npd.enabled` unset and nothing can verify the tarball (no `npd.sha256`, no built-in digest, no
    /// offline bundle entry, no mirror): not installed; `warning` says how to enable it. Unverified bytes
    /// are never installed.
    Skipped { warning: String },
}

/// See [`NpdDecision`]. Reads the offline bundle's manifest when one is configured (no network).
pub fn npd_decision(cfg: &Config, arch: &str) -> NpdDecision {
    if !cfg.npd.enabled {
        return NpdDecision::Disabled;
    }
    if cfg.npd.enabled_explicitly {
        return NpdDecision::Wanted;
    }
    let spec = npd_spec(cfg, arch);
    match check_digest_source(&spec, cfg.bootstrap.offline_artifacts.as_deref()) {
        Err(ArtifactError::NoDigest { .. }) => NpdDecision::Skipped {
            warning: format!(
                "node-problem-detector skipped: no verified SHA-256 for {v} (set npd.sha256 to the SHA-256 of {file}, give an offline bundle or a mirror with .sha256 files, or set npd.enabled: true with one of those; npd.enabled: false silences this)",
                v = spec.version,
                file = spec.file,
            ),
        },
        // A digest source exists, or the bundle cannot be read: installing reports that error.
        _ => NpdDecision::Wanted,
    }
}

/// Fail (without network) when nothing can ever verify `spec`: no pin, no checksum file, and no entry in
/// the offline bundle `offline`. Steps call this while planning, so the operator learns what to set
/// before anything is changed.
pub fn check_digest_source(
    spec: &ArtifactSpec,
    offline: Option<&str>,
) -> Result<(), ArtifactError> {
    let DigestSource::Unknown { hint } = &spec.digest else {
        return Ok(());
    };
    if let Some(src) = offline {
        if bundle::Bundle::open(src)?.find(spec).is_some() {
            return Ok(());
        }
    }
    Err(ArtifactError::NoDigest {
        component: spec.component.clone(),
        version: spec.version.clone(),
        file: spec.file.clone(),
        hint: hint.clone(),
    })
}

/// Every Kubernetes binary the agent can install, in install order.
pub const KUBE_BINARIES: [&str; 3] = ["kubelet", "kubectl", "kubeadm"];

/// The Kubernetes binaries this configuration installs: kubelet and kubectl, and kubeadm only with
/// `kubernetes.installKubeadm` (the agent never runs it).
pub fn kube_binaries(cfg: &Config) -> &'static [&'static str] {
    if cfg.kubernetes.install_kubeadm {
        &KUBE_BINARIES
    } else {
        &KUBE_BINARIES[..2]
    }
}

fn kube_pin<'a>(cfg: &'a Config, name: &str) -> Option<&'a str> {
    let s = &cfg.kubernetes.sha256;
    match name {
        "kubelet" => s.kubelet.as_deref(),
        "kubectl" => s.kubectl.as_deref(),
        "kubeadm" => s.kubeadm.as_deref(),
        _ => None,
    }
}

/// How the Kubernetes binaries are fetched.
#[derive(Debug, Clone)]
pub enum KubeSource {
    /// The per-binary files with their published `.sha256`.
    Binaries(Vec<ArtifactSpec>),
    /// The original's `kubernetes.urlTemplate` tarball; the binaries taken from it are verified against the
    /// configured `kubernetes.sha256` pins (no checksum is published for the tarball).
    Tarball {
        spec: ArtifactSpec,
        pins: Vec<(String, String)>,
    },
}

pub fn kube_source(cfg: &Config, arch: &str) -> Result<KubeSource, ArtifactError> {
    let v = &cfg.kubernetes.version;
    if let Some(t) = &cfg.kubernetes.url_template {
        let url = t.replacen("%s", v, 1).replacen("%s", arch, 1);
        let mut pins = Vec::new();
        for &b in kube_binaries(cfg) {
            let pin = kube_pin(cfg, b).ok_or_else(|| ArtifactError::NoDigest {
                component: "kubernetes-node".into(),
                version: v.clone(),
                file: b.into(),
                hint: format!("kubernetes.urlTemplate tarballs have no published checksum; set kubernetes.sha256.{b} for every binary installed (kubelet, kubectl, and kubeadm with kubernetes.installKubeadm)"),
            })?;
            pins.push((b.to_string(), pin.to_ascii_lowercase()));
        }
        let mut s = spec("kubernetes-node", v, arch, url, None, None, "");
        // The tarball itself is verified through its contents' pins; recording its own digest happens
        // after the first download (cache by digest).
        s.digest = DigestSource::Unknown {
            hint: "verified by its contents".into(),
        };
        return Ok(KubeSource::Tarball { spec: s, pins });
    }
    Ok(KubeSource::Binaries(
        kube_binaries(cfg)
            .iter()
            .map(|b| {
                let url = format!("https://dl.k8s.io/release/v{v}/bin/linux/{arch}/{b}");
                spec(
                    b,
                    v,
                    arch,
                    url.clone(),
                    kube_pin(cfg, b),
                    Some(format!("{url}.sha256")),
                    "",
                )
            })
            .collect(),
    ))
}

/// Every artifact the configuration needs (for `artifacts bundle`).
pub fn all_specs(cfg: &Config, arch: &str) -> Result<Vec<ArtifactSpec>, ArtifactError> {
    let mut v = vec![
        runc_spec(cfg, arch),
        containerd_spec(cfg, arch),
        cni_spec(cfg, arch),
    ];
    match kube_source(cfg, arch)? {
        KubeSource::Binaries(b) => v.extend(b),
        KubeSource::Tarball { spec, .. } => v.push(spec),
    }
    if npd_decision(cfg, arch) == NpdDecision::Wanted {
        v.push(npd_spec(cfg, arch));
    }
    Ok(v)
}

/// `https://HOST/PATH` as fetched through a mirror: `<mirror>/HOST/PATH`.
pub fn mirror_url(mirror: &str, upstream: &str) -> String {
    let rest = upstream
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(upstream);
    format!("{}/{}", mirror.trim_end_matches('/'), rest)
}

/// The digest for `file` in a checksum file (`<hex>  <name>` lines, or a lone digest).
pub fn parse_checksum_file(text: &str, file: &str) -> Option<String> {
    let mut lone = None;
    let mut count = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        count += 1;
        let mut parts = line.split_whitespace();
        let digest = parts.next()?;
        if !is_sha256_hex(digest) {
            continue;
        }
        match parts.next() {
            Some(name) => {
                let name = name.trim_start_matches('*');
                let base = name.rsplit('/').next().unwrap_or(name);
                if base == file {
                    return Some(digest.to_ascii_lowercase());
                }
            }
            None => lone = Some(digest.to_ascii_lowercase()),
        }
    }
    if count == 1 {
        lone
    } else {
        None
    }
}

pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mirror_maps_host_and_path() {
        assert_eq!(
            mirror_url(
                "http://127.0.0.1:8080/m/",
                "https://dl.k8s.io/release/v1.30.3/bin/linux/amd64/kubelet"
            ),
            "http://127.0.0.1:8080/m/dl.k8s.io/release/v1.30.3/bin/linux/amd64/kubelet"
        );
    }

    #[test]
    fn checksum_file_forms() {
        let d = "a".repeat(64);
        assert_eq!(parse_checksum_file(&format!("{d}\n"), "x"), Some(d.clone()));
        let other = "b".repeat(64);
        let text = format!("{other}  runc.arm64\n{d} *runc.amd64\n");
        assert_eq!(parse_checksum_file(&text, "runc.amd64"), Some(d.clone()));
        assert_eq!(parse_checksum_file(&text, "runc.s390x"), None);
        assert_eq!(parse_checksum_file("<html>404</html>", "x"), None);
    }

    proptest! {
        #[test]
        fn checksum_parser_never_panics(text in ".{0,300}", file in "[a-z.]{0,12}") {
            let _ = parse_checksum_file(&text, &file);
        }
    }
}
