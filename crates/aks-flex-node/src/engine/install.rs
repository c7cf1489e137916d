//! The engine's artifact installer: what [`Action::InstallArtifact`](super::Action::InstallArtifact)
//! carries and how the engine applies it. An installer step plans an [`InstallArtifact`] (the downloads, how
//! to unpack them, where each file goes); the engine fetches the downloads (from this run's prefetch or the
//! network, each cache file journaled), stages and checks the files, then writes each one into place,
//! journaled first, and writes the component's install record. The step is not consulted again: what
//! `plan -o json` shows is what is applied.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Context, StepError, StepResult};
use crate::artifacts::install::CONCURRENCY;
use crate::artifacts::install::{self as records, InstallFile, InstallRecord, Staged};
use crate::artifacts::{ArtifactError, ArtifactSpec, DigestSource, Fetched, Fetcher};
use crate::artifacts::{FetcherOptions, CACHE_DIR, RECORD_DIR};
use crate::host::CommandSpec;

/// One component to install, as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallArtifact {
    /// The install record's name (`/var/lib/aks-flex-node/artifacts/<component>.json`).
    pub component: String,
    pub version: String,
    pub arch: String,
    /// What is downloaded: one file, or one per binary ([`Unpack::FilePerSource`]).
    pub sources: Vec<ArtifactSpec>,
    pub unpack: Unpack,
    /// The files that must be there, each with its destination and mode.
    pub files: Vec<InstallTarget>,
    /// Where any other file the archive holds goes, with its mode (containerd and the CNI plugins ship
    /// more binaries than the agent needs); `None`: only [`InstallArtifact::files`] are installed.
    pub others: Option<(PathBuf, u32)>,
    /// A sha256 each named staged file must have (the Kubernetes tarball is verified through them).
    pub pins: Vec<(String, String)>,
    /// `(file, version)`: run that staged file with `--version` before installing anything and require
    /// exactly `version` (the kubelet, against `kubernetes.version`).
    pub version_check: Option<(String, String)>,
    /// Why this cannot be applied (shown by `plan`; bootstrap refuses before any step runs).
    pub blocked: Option<String>,
}

/// One file of a component: its name among the staged files, its destination and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallTarget {
    pub name: String,
    pub path: PathBuf,
    pub mode: u32,
}

impl InstallTarget {
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>, mode: u32) -> Self {
        InstallTarget {
            name: name.into(),
            path: path.into(),
            mode,
        }
    }
}

/// How the downloaded file becomes the staged files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Unpack {
    /// The download is the one file (named as the first target).
    File,
    /// One download per target, in order.
    FilePerSource,
    /// A `.tar.gz`: each file directly under `prefix` (`""`: the top level) is staged under its name.
    TarGz { prefix: String },
    /// A `.tar.gz`: exactly these entries, each staged under the target name it maps to.
    TarGzEntries { entries: Vec<(String, String)> },
}

impl Unpack {
    /// The staged name of archive entry `path`, if it is taken.
    fn select(&self, path: &str, names: &[String], any: bool) -> Option<String> {
        match self {
            Unpack::TarGz { prefix } => path
                .strip_prefix(prefix.as_str())
                .filter(|n| !n.is_empty() && !n.contains('/'))
                .filter(|n| any || names.iter().any(|x| x == n))
                .map(str::to_string),
            Unpack::TarGzEntries { entries } => entries
                .iter()
                .find(|(entry, _)| entry == path)
                .map(|(_, name)| name.clone()),
            Unpack::File | Unpack::FilePerSource => None,
        }
    }
}

/// The shape `plan -o json` shows (next to `type` and `summary`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct View<'a> {
    component: &'a str,
    version: &'a str,
    arch: &'a str,
    sources: Vec<SourceView<'a>>,
    unpack: &'a Unpack,
    files: Vec<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blocked: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SourceView<'a> {
    url: &'a str,
    file: &'a str,
    /// The pinned digest, or how the digest is learnt (`checksum file <url>`).
    sha256: String,
}

impl Serialize for InstallArtifact {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        View {
            component: &self.component,
            version: &self.version,
            arch: &self.arch,
            sources: self
                .sources
                .iter()
                .map(|spec| SourceView {
                    url: &spec.url,
                    file: &spec.file,
                    sha256: match &spec.digest {
                        DigestSource::Pinned(d) => d.clone(),
                        DigestSource::ChecksumFile { url }
                        | DigestSource::MirrorChecksumFile { url, .. } => {
                            format!("from checksum file {url}")
                        }
                        DigestSource::Unknown { hint } => format!("unknown: {hint}"),
                    },
                })
                .collect(),
            unpack: &self.unpack,
            files: self.files.iter().map(|f| f.path.as_path()).collect(),
            blocked: self.blocked.as_deref(),
        }
        .serialize(s)
    }
}

impl InstallArtifact {
    /// A component from one download (its record named after the download's component).
    pub fn new(spec: ArtifactSpec, unpack: Unpack, files: Vec<InstallTarget>) -> Self {
        InstallArtifact {
            component: spec.component.clone(),
            version: spec.version.clone(),
            arch: spec.arch.clone(),
            sources: vec![spec],
            unpack,
            files,
            others: None,
            pins: Vec::new(),
            version_check: None,
            blocked: None,
        }
    }

    /// The same, installing any other file of the archive into `dir` with `mode`.
    pub fn with_others(mut self, dir: impl Into<PathBuf>, mode: u32) -> Self {
        self.others = Some((dir.into(), mode));
        self
    }

    pub fn summary(&self) -> String {
        let file = self.sources.first().map_or("", |s| s.file.as_str());
        let mut s = format!(
            "install {} {} ({}) from {file}",
            self.component, self.version, self.arch
        );
        if let Some(b) = &self.blocked {
            s.push_str(&format!(" -- BLOCKED: {b}"));
        }
        s
    }

    /// The (path, mode) pairs an intact installation has.
    pub fn wanted(&self) -> Vec<(PathBuf, u32)> {
        self.files
            .iter()
            .map(|f| (f.path.clone(), f.mode))
            .collect()
    }
}

/// Apply a planned install under `step`: fetch, stage, check, write each file (journaled) and the record.
pub async fn apply(ctx: &Context, step: &str, a: &InstallArtifact) -> StepResult<InstallRecord> {
    if let Some(b) = &a.blocked {
        return Err(StepError::failed(format!("{}: {b}", a.summary())));
    }
    let fetched = fetch_journaled(ctx, step, &a.sources).await?;
    let first = fetched
        .first()
        .ok_or_else(|| StepError::failed(format!("{}: nothing to fetch", a.component)))?;
    let names: Vec<String> = a.files.iter().map(|f| f.name.clone()).collect();
    let staged = match &a.unpack {
        Unpack::File => {
            let name = names
                .first()
                .ok_or_else(|| StepError::failed(format!("{}: no file to install", a.component)))?;
            Staged::single(first, name)
        }
        Unpack::FilePerSource => {
            let pairs: Vec<(&str, &Fetched)> = names
                .iter()
                .map(String::as_str)
                .zip(fetched.iter())
                .collect();
            Staged::copies(&ctx.host, &pairs, 0o700)
                .await
                .map_err(StepError::other)?
        }
        unpack @ (Unpack::TarGz { .. } | Unpack::TarGzEntries { .. }) => {
            let unpack = unpack.clone();
            let any = a.others.is_some();
            let select_names = names.clone();
            Staged::tar_gz(
                &ctx.host,
                first,
                &a.sources[0].component,
                &a.version,
                move |p| unpack.select(p, &select_names, any),
            )
            .await
            .map_err(StepError::other)?
        }
    };
    let source = &a.sources[0];
    for name in &names {
        if staged.get(name).is_none() {
            return Err(StepError::failed(format!(
                "{} {} ({}): {} does not contain {name}; is this the right artifact for the version?",
                a.component, a.version, a.arch, source.file
            )));
        }
    }
    for (name, pin) in &a.pins {
        let path = staged
            .get(name)
            .ok_or_else(|| StepError::failed(format!("{} does not contain {name}", source.url)))?;
        let (actual, _) = records::hash_file(path)
            .map_err(|e| StepError::failed(format!("reading staged {name}: {e}")))?;
        if &actual != pin {
            return Err(StepError::other(ArtifactError::Mismatch {
                component: name.clone(),
                version: a.version.clone(),
                url: source.url.clone(),
                expected: pin.clone(),
                actual,
            }));
        }
        set_exec(path)?;
    }
    if let Some((name, want)) = &a.version_check {
        let program = staged.get(name).ok_or_else(|| {
            StepError::failed(format!("the {} artifacts have no {name}", a.component))
        })?;
        // Read-only: the staged binary reports its version before anything is installed.
        let out = ctx
            .host
            .run_checked(&CommandSpec::new(program.display().to_string()).arg("--version"))
            .await?;
        if !version_matches(&out.stdout, want) {
            return Err(StepError::failed(format!(
                "the downloaded {name} reports {:?}, but kubernetes.version is {want}; the artifact source serves the wrong version",
                out.stdout.trim()
            )));
        }
    }
    let mut files: Vec<(PathBuf, PathBuf, u32)> = Vec::new();
    for (name, real) in &staged.files {
        if let Some(t) = a.files.iter().find(|t| &t.name == name) {
            files.push((t.path.clone(), real.clone(), t.mode));
        } else if let Some((dir, mode)) = &a.others {
            files.push((dir.join(name), real.clone(), *mode));
        }
    }
    install(ctx, step, a, &first.sha256, &files).await
}

/// `Kubernetes v1.30.4` -> ok when it names exactly `version`.
pub fn version_matches(output: &str, version: &str) -> bool {
    output
        .split_whitespace()
        .last()
        .is_some_and(|v| v.strip_prefix('v') == Some(version))
}

fn set_exec(path: &Path) -> StepResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StepError::failed(format!("{}: {e}", path.display())))
}

/// Install staged files (`dest host path`, `staged real path`, `mode`) and write the component's record.
/// Every destination is prepared like a file write ([`super::prepare_entry`]: parents created and
/// recorded, the original recorded) and marked changed before it is replaced.
async fn install(
    ctx: &Context,
    step: &str,
    a: &InstallArtifact,
    source_sha256: &str,
    files: &[(PathBuf, PathBuf, u32)],
) -> StepResult<InstallRecord> {
    let host = &ctx.host;
    let mut installed = Vec::new();
    for (dest, src, mode) in files {
        let bytes = tokio::fs::read(src)
            .await
            .map_err(|e| StepError::failed(format!("reading staged {}: {e}", src.display())))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        super::prepare_entry(ctx, step, dest)?;
        ctx.mark_changed(dest)?;
        host.fs.write_atomic(dest, &bytes, *mode, None)?;
        let md = std::fs::symlink_metadata(host.fs.resolve(dest)?)
            .map_err(|e| StepError::failed(format!("{}: {e}", dest.display())))?;
        installed.push(InstallFile {
            path: dest.clone(),
            mode: *mode,
            sha256,
            size: bytes.len() as u64,
            mtime_ns: records::mtime_ns(&md),
        });
    }
    let rec = InstallRecord {
        component: a.component.clone(),
        version: a.version.clone(),
        arch: a.arch.clone(),
        source_sha256: source_sha256.into(),
        files: installed,
    };
    ctx.ensure_dir(step, Path::new(RECORD_DIR), 0o700)?;
    let path = records::record_path(&a.component);
    ctx.record_original(step, &path)?;
    let text = serde_json::to_vec_pretty(&rec).unwrap_or_default();
    host.fs.write_atomic(&path, &text, 0o600, None)?;
    Ok(rec)
}

/// True when `a`'s component is installed at its version/arch (and pin, when the download is pinned) with
/// every one of its files intact.
pub fn is_current(ctx: &Context, a: &InstallArtifact) -> StepResult<bool> {
    // The download's pin identifies what is installed only when the component is that one download.
    let pin = match a.sources.as_slice() {
        [only] if only.component == a.component => records::pinned(only),
        _ => None,
    };
    records::is_current(
        &ctx.host,
        &a.component,
        &a.version,
        &a.arch,
        pin,
        &a.wanted(),
    )
    .map_err(StepError::other)
}

/// `a`, unless its component is installed already ([`is_current`]): what an installer step plans, and
/// whose sources it names for the engine's prefetch.
pub fn unless_current(ctx: &Context, a: InstallArtifact) -> StepResult<Option<InstallArtifact>> {
    Ok((!is_current(ctx, &a)?).then_some(a))
}

/// The fetcher for a context's configuration.
pub fn fetcher(ctx: &Context) -> StepResult<Fetcher> {
    Fetcher::new(ctx.host.clone(), FetcherOptions::from_config(&ctx.config))
        .map_err(StepError::other)
}

/// Create (and journal) the cache directories before fetching.
pub fn prepare_cache(ctx: &Context, step: &str) -> StepResult<()> {
    ctx.ensure_dir(step, &Path::new(CACHE_DIR).join("sha256"), 0o700)?;
    ctx.ensure_dir(step, &Path::new(CACHE_DIR).join("tmp"), 0o700)?;
    Ok(())
}

/// Fetch with every created cache file journaled under `step`. Artifacts already fetched in this run
/// (by [`prefetch`]) are taken from the cache without network; the rest are fetched now.
pub async fn fetch_journaled(
    ctx: &Context,
    step: &str,
    specs: &[ArtifactSpec],
) -> StepResult<Vec<Fetched>> {
    let mut out: Vec<Option<Fetched>> = specs.iter().map(|s| still_cached(ctx, s)).collect();
    let missing: Vec<ArtifactSpec> = specs
        .iter()
        .zip(&out)
        .filter(|(_, f)| f.is_none())
        .map(|(s, _)| s.clone())
        .collect();
    if !missing.is_empty() {
        let fetcher = fetcher(ctx)?;
        prepare_cache(ctx, step)?;
        let hook = |p: &Path| -> Result<(), ArtifactError> {
            ctx.record_original(step, p)
                .map_err(|e| ArtifactError::Other(e.to_string()))
        };
        let mut fetched = fetcher
            .fetch_all(&missing, &hook)
            .await
            .map_err(StepError::other)?
            .into_iter();
        for slot in out.iter_mut().filter(|f| f.is_none()) {
            *slot = fetched.next();
        }
    }
    out.into_iter()
        .map(|f| f.ok_or_else(|| StepError::failed("internal error: an artifact went missing")))
        .collect()
}

/// The artifact [`prefetch`] put in the cache in this run, if its file is still there unchanged in size
/// (it was hashed as it was written, moments ago, into a root-only directory).
fn still_cached(ctx: &Context, spec: &ArtifactSpec) -> Option<Fetched> {
    let f = ctx.prefetched(&spec.url)?;
    let md = std::fs::symlink_metadata(&f.real_path).ok()?;
    (md.is_file() && md.len() == f.bytes).then_some(f)
}

/// Fetch the artifacts the steps about to run will install (`(step name, spec)`), up to
/// [`CONCURRENCY`] at once, into the digest cache; each created cache file is journaled under its step.
/// On failure: the index in `wanted` of the first artifact (in step order) that failed.
pub async fn prefetch(
    ctx: &Context,
    wanted: &[(&str, ArtifactSpec)],
) -> Result<(), (usize, StepError)> {
    use futures_util::StreamExt;
    let Some((first, _)) = wanted.first() else {
        return Ok(());
    };
    let fetcher = fetcher(ctx).map_err(|e| (0, e))?;
    prepare_cache(ctx, first).map_err(|e| (0, e))?;
    let started = std::time::Instant::now();
    let fetcher = &fetcher;
    // Collected first: a lazily mapped iterator makes the future's Send bound unprovable.
    let futs: Vec<_> = wanted
        .iter()
        .map(|(step, spec)| async move {
            let hook = move |p: &Path| -> Result<(), ArtifactError> {
                ctx.record_original(step, p)
                    .map_err(|e| ArtifactError::Other(e.to_string()))
            };
            fetcher.fetch(spec, &hook).await
        })
        .collect();
    let results: Vec<Result<Fetched, ArtifactError>> = futures_util::stream::iter(futs)
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let mut bytes = 0;
    let mut first_err = None;
    for (i, ((_, spec), r)) in wanted.iter().zip(results).enumerate() {
        match r {
            Ok(f) => {
                bytes += f.bytes;
                ctx.remember_prefetched(&spec.url, f);
            }
            Err(e) if first_err.is_none() => first_err = Some((i, StepError::other(e))),
            Err(_) => {}
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    tracing::info!(
        artifacts = wanted.len(),
        bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "artifacts verified into the cache (up to {CONCURRENCY} downloads at once)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Action;
    use crate::host::Host;
    use std::sync::Arc;

    fn spec(digest: DigestSource) -> ArtifactSpec {
        ArtifactSpec {
            component: "containerd".into(),
            version: "1.7.20".into(),
            arch: "amd64".into(),
            url: "https://example.invalid/containerd-1.7.20-linux-amd64.tar.gz".into(),
            file: "containerd-1.7.20-linux-amd64.tar.gz".into(),
            digest,
        }
    }

    #[test]
    fn the_plan_shows_an_install_with_its_sources_files_and_digests() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let a = InstallArtifact::new(
            spec(DigestSource::Pinned("ab".repeat(32))),
            Unpack::TarGz {
                prefix: "bin/".into(),
            },
            vec![InstallTarget::new("ctr", "/usr/bin/ctr", 0o755)],
        )
        .with_others("/usr/bin", 0o755);
        let v = Action::InstallArtifact(Box::new(a.clone()))
            .describe(&host)
            .unwrap();
        assert_eq!(v["type"], "installArtifact");
        assert_eq!(
            v["summary"],
            "install containerd 1.7.20 (amd64) from containerd-1.7.20-linux-amd64.tar.gz"
        );
        assert_eq!(v["sources"][0]["sha256"], "ab".repeat(32));
        assert_eq!(
            v["sources"][0]["file"],
            "containerd-1.7.20-linux-amd64.tar.gz"
        );
        assert_eq!(
            v["unpack"],
            serde_json::json!({"kind": "tarGz", "prefix": "bin/"})
        );
        assert_eq!(v["files"], serde_json::json!(["/usr/bin/ctr"]));
        assert!(v.get("blocked").is_none());

        // A download verified through a checksum file says so; a blocked one says why, also in its summary.
        let mut b = a;
        b.sources = vec![spec(DigestSource::ChecksumFile {
            url: "https://example.invalid/sums".into(),
        })];
        b.blocked = Some("no digest".into());
        let v = Action::InstallArtifact(Box::new(b))
            .describe(&host)
            .unwrap();
        assert_eq!(
            v["sources"][0]["sha256"],
            "from checksum file https://example.invalid/sums"
        );
        assert_eq!(v["blocked"], "no digest");
        assert!(v["summary"]
            .as_str()
            .unwrap()
            .ends_with(" -- BLOCKED: no digest"));
    }

    /// An offline bundle holding one runc binary of `version`.
    fn runc_bundle(dir: &Path, version: &str, content: &[u8]) {
        let arch = crate::artifacts::host_arch();
        let file = format!("runc.{arch}");
        std::fs::write(dir.join(&file), content).unwrap();
        let manifest = serde_json::json!({
            "apiVersion": "aks-flex-node/v1",
            "kind": "ArtifactBundle",
            "artifacts": [{
                "component": "runc", "version": version, "arch": arch, "file": file,
                "sha256": hex::encode(Sha256::digest(content)),
            }],
        });
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    }

    #[tokio::test]
    async fn an_install_applies_what_was_planned_not_what_the_config_says_now() {
        let bundle = tempfile::tempdir().unwrap();
        runc_bundle(bundle.path(), "1.1.12", b"#!/bin/sh\necho runc 1.1.12\n");
        let source = bundle.path().display().to_string();
        let planned_cfg = crate::engine::test_config(serde_json::json!({
            "runc": {"version": "1.1.12"},
            "bootstrap": {"offlineArtifacts": {"source": source}},
        }));
        let spec = crate::artifacts::runc_spec(&planned_cfg, crate::artifacts::host_arch());
        let planned = InstallArtifact::new(
            spec,
            Unpack::File,
            vec![InstallTarget::new("runc", "/usr/bin/runc", 0o755)],
        );
        // The config changed between plan and apply: the planned action still installs what it shows.
        let now_cfg = crate::engine::test_config(serde_json::json!({
            "runc": {"version": "1.2.0"},
            "bootstrap": {"offlineArtifacts": {"source": source}},
        }));
        let root = tempfile::tempdir().unwrap();
        let ctx = Context::new(
            now_cfg,
            std::sync::Arc::new(Host::new(root.path()).unwrap()),
        )
        .unwrap();
        let rec = apply(&ctx, "Runc_Installer", &planned).await.unwrap();
        assert_eq!(
            (rec.component.as_str(), rec.version.as_str()),
            ("runc", "1.1.12")
        );
        assert_eq!(
            std::fs::read(root.path().join("usr/bin/runc")).unwrap(),
            b"#!/bin/sh\necho runc 1.1.12\n"
        );
        assert!(is_current(&ctx, &planned).unwrap());
        // A blocked install is refused whole, before anything is fetched.
        let mut blocked = planned.clone();
        blocked.blocked = Some("no digest known".into());
        let e = apply(&ctx, "Runc_Installer", &blocked).await.unwrap_err();
        assert!(e.to_string().ends_with("no digest known"), "{e}");
    }

    #[tokio::test]
    async fn an_installed_file_is_never_left_unmarked_when_a_journal_save_fails() {
        use crate::host::{Faults, Op};
        let bundle = tempfile::tempdir().unwrap();
        let content = b"#!/bin/sh\necho runc 1.1.12\n";
        runc_bundle(bundle.path(), "1.1.12", content);
        let cfg = crate::engine::test_config(serde_json::json!({
            "runc": {"version": "1.1.12"},
            "bootstrap": {"offlineArtifacts": {"source": bundle.path().display().to_string()}},
        }));
        let planned = InstallArtifact::new(
            crate::artifacts::runc_spec(&cfg, crate::artifacts::host_arch()),
            Unpack::File,
            vec![InstallTarget::new("runc", "/usr/bin/runc", 0o755)],
        );
        // Fail the 1st, 2nd, ... journal save of the install until one run gets through: whatever save
        // failed, a runc that was written is marked changed (its services will restart for it).
        for n in 1.. {
            let root = tempfile::tempdir().unwrap();
            let faults = Faults::new();
            faults.fail_nth_on(Op::Write, super::super::journal::JOURNAL_PATH, n);
            let host = Arc::new(Host::new(root.path()).unwrap().with_faults(faults));
            let ctx = Context::new(cfg.clone(), host.clone()).unwrap();
            let res = apply(&ctx, "Runc_Installer", &planned).await;
            let written = std::fs::read(root.path().join("usr/bin/runc")).ok();
            if written.as_deref() == Some(&content[..]) {
                let journal = crate::engine::Journal::load(&host).unwrap();
                assert!(
                    journal.changed.contains(Path::new("/usr/bin/runc")),
                    "journal save #{n} failed ({res:?}) and /usr/bin/runc was written but not marked changed"
                );
            }
            if res.is_ok() {
                assert!(
                    n > 3,
                    "only {n} journal saves: the loop did not exercise the install"
                );
                break;
            }
        }
    }

    #[test]
    fn version_is_matched_exactly() {
        assert!(version_matches("Kubernetes v1.30.4\n", "1.30.4"));
        assert!(!version_matches("Kubernetes v1.30.40\n", "1.30.4"));
        assert!(!version_matches("Kubernetes v1.30.4-rc.1\n", "1.30.4"));
        assert!(!version_matches("", "1.30.4"));
    }

    #[test]
    fn archive_entries_are_selected_by_prefix_or_by_name() {
        let names = vec!["kubelet".to_string()];
        let under = Unpack::TarGz {
            prefix: "kubernetes/node/bin/".into(),
        };
        assert_eq!(
            under.select("kubernetes/node/bin/kubelet", &names, false),
            Some("kubelet".into())
        );
        // Only the named files unless the rest is wanted too; never a nested entry.
        assert_eq!(
            under.select("kubernetes/node/bin/kube-proxy", &names, false),
            None
        );
        assert_eq!(
            under.select("kubernetes/node/bin/kube-proxy", &names, true),
            Some("kube-proxy".into())
        );
        assert_eq!(
            under.select("kubernetes/node/bin/x/kubelet", &names, true),
            None
        );
        let top = Unpack::TarGz { prefix: "".into() };
        assert_eq!(top.select("bridge", &[], true), Some("bridge".into()));
        assert_eq!(top.select("docs/README", &[], true), None);
        let named = Unpack::TarGzEntries {
            entries: vec![(
                "config/kernel-monitor.json".into(),
                "kernel-monitor.json".into(),
            )],
        };
        assert_eq!(
            named.select("config/kernel-monitor.json", &[], false),
            Some("kernel-monitor.json".into())
        );
        assert_eq!(named.select("config/other.json", &[], true), None);
    }
}
