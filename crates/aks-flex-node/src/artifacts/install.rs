//! Staging and installing verified artifacts, and the install records that make re-runs cheap.
//!
//! A component's files are extracted from the verified cache file into a staging directory under the
//! cache, checked, and only then written into place one by one with the root's atomic write (temp file in
//! the target directory + rename), each journaled first so `unbootstrap` restores exactly what was there.
//! A record `/var/lib/aks-flex-node/artifacts/<component>.json` lists what was installed (version, digests,
//! sizes, mtimes): planning compares the files against it by metadata and only re-hashes a file whose
//! metadata changed, so a converged node is checked in milliseconds without network.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ArtifactError, Fetched, CACHE_DIR, RECORD_DIR};
use crate::host::Host;
use crate::steps::{Context, StepError, StepResult};

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallFile {
    pub path: PathBuf,
    pub mode: u32,
    pub sha256: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What a component's installation put on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallRecord {
    pub component: String,
    pub version: String,
    pub arch: String,
    /// Digest of the downloaded artifact the files came from.
    pub source_sha256: String,
    pub files: Vec<InstallFile>,
}

pub fn record_path(component: &str) -> PathBuf {
    Path::new(RECORD_DIR).join(format!("{component}.json"))
}

pub fn load_record(host: &Host, component: &str) -> Result<Option<InstallRecord>, ArtifactError> {
    match host.fs.read(&record_path(component))? {
        None => Ok(None),
        // An unreadable record only means "reinstall".
        Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
    }
}

/// [`is_current`] for a single-artifact component whose install record is named after the artifact
/// (runc, containerd, cni, npd): true when exactly this version, arch and pin is installed with `wanted`.
pub fn spec_is_current(
    ctx: &Context,
    spec: &super::ArtifactSpec,
    wanted: &[(PathBuf, u32)],
) -> StepResult<bool> {
    is_current(
        &ctx.host,
        &spec.component,
        &spec.version,
        &spec.arch,
        pinned(spec),
        wanted,
    )
    .map_err(crate::steps::StepError::other)
}

/// Is `component` installed at `version`/`arch` with every file in `wanted` (path, mode) intact?
/// `source` is the expected artifact digest when it is known without network (a pin).
pub fn is_current(
    host: &Host,
    component: &str,
    version: &str,
    arch: &str,
    source: Option<&str>,
    wanted: &[(PathBuf, u32)],
) -> Result<bool, ArtifactError> {
    let Some(rec) = load_record(host, component)? else {
        return Ok(false);
    };
    if rec.version != version || rec.arch != arch {
        return Ok(false);
    }
    if source.is_some_and(|s| s != rec.source_sha256) {
        return Ok(false);
    }
    for (path, mode) in wanted {
        let Some(f) = rec
            .files
            .iter()
            .find(|f| &f.path == path && f.mode == *mode)
        else {
            return Ok(false);
        };
        if !file_intact(host, f)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A file matches its record: same type, mode and size, and either the same mtime or the same content.
fn file_intact(host: &Host, f: &InstallFile) -> Result<bool, ArtifactError> {
    let real = host.fs.resolve(&f.path)?;
    let Ok(md) = std::fs::symlink_metadata(&real) else {
        return Ok(false);
    };
    if !md.is_file() || md.mode() & 0o7777 != f.mode || md.len() != f.size {
        return Ok(false);
    }
    if mtime_ns(&md) == f.mtime_ns {
        return Ok(true);
    }
    Ok(hash_file(&real)
        .map(|(d, _)| d == f.sha256)
        .unwrap_or(false))
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec()
}

pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Files of an artifact made ready to install: name -> real path of the staged copy.
#[derive(Debug)]
pub struct Staged {
    dir: Option<PathBuf>,
    pub files: BTreeMap<String, PathBuf>,
}

impl Staged {
    /// A single-file artifact is installed straight from the (verified) cache file.
    pub fn single(fetched: &Fetched, name: &str) -> Staged {
        Staged {
            dir: None,
            files: BTreeMap::from([(name.to_string(), fetched.real_path.clone())]),
        }
    }

    /// Extract the entries of a `.tar.gz` that `select` maps to a name (plain file names only) into a new
    /// staging directory under the cache.
    pub async fn tar_gz(
        host: &Host,
        fetched: &Fetched,
        component: &str,
        version: &str,
        select: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> Result<Staged, ArtifactError> {
        let staging_host = Path::new(CACHE_DIR).join(format!("staging-{}", uuid::Uuid::new_v4()));
        host.fs.create_dir_all(&staging_host, 0o700)?;
        let dir = host.fs.resolve(&staging_host)?;
        let src = fetched.real_path.clone();
        let (c, v) = (component.to_string(), version.to_string());
        let dir2 = dir.clone();
        let res = tokio::task::spawn_blocking(move || extract(&src, &dir2, &select, &c, &v))
            .await
            .map_err(|e| ArtifactError::Other(format!("extraction task failed: {e}")))?;
        match res {
            Ok(files) => Ok(Staged {
                dir: Some(dir),
                files,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&Path> {
        self.files.get(name).map(PathBuf::as_path)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn extract(
    src: &Path,
    dir: &Path,
    select: &dyn Fn(&str) -> Option<String>,
    component: &str,
    version: &str,
) -> Result<BTreeMap<String, PathBuf>, ArtifactError> {
    let file_name = src.display().to_string();
    let err = |message: String| ArtifactError::Archive {
        component: component.into(),
        version: version.into(),
        file: file_name.clone(),
        message,
    };
    let f = std::fs::File::open(src).map_err(|e| err(format!("cannot open: {e}")))?;
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut out = BTreeMap::new();
    for entry in ar
        .entries()
        .map_err(|e| err(format!("not a tar.gz: {e}")))?
    {
        let mut entry = entry.map_err(|e| err(format!("corrupt archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| err(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let Some(name) = select(&path) else { continue };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(err(format!("entry {path} maps to an unsafe name {name:?}")));
        }
        let dest = dir.join(&name);
        let mut w = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(|e| err(format!("staging {name}: {e}")))?;
        std::io::copy(&mut entry, &mut w).map_err(|e| err(format!("extracting {path}: {e}")))?;
        out.insert(name, dest);
    }
    Ok(out)
}

/// Install staged files (`dest host path`, `staged real path`, `mode`) and write the component's record.
/// Every destination is journaled before it is replaced and marked changed for the services reading it.
pub async fn install(
    ctx: &Context,
    step: &str,
    component: &str,
    version: &str,
    arch: &str,
    source_sha256: &str,
    files: &[(PathBuf, PathBuf, u32)],
) -> StepResult<InstallRecord> {
    let host = &ctx.host;
    let mut installed = Vec::new();
    for (dest, src, mode) in files {
        if let Some(parent) = dest.parent() {
            ctx.ensure_dir(step, parent, 0o755)?;
        }
        let bytes = tokio::fs::read(src)
            .await
            .map_err(|e| StepError::failed(format!("reading staged {}: {e}", src.display())))?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        ctx.record_original(step, dest)?;
        host.fs.write_atomic(dest, &bytes, *mode, None)?;
        ctx.mark_changed(dest)?;
        let md = std::fs::symlink_metadata(host.fs.resolve(dest)?)
            .map_err(|e| StepError::failed(format!("{}: {e}", dest.display())))?;
        installed.push(InstallFile {
            path: dest.clone(),
            mode: *mode,
            sha256,
            size: bytes.len() as u64,
            mtime_ns: mtime_ns(&md),
        });
    }
    let rec = InstallRecord {
        component: component.into(),
        version: version.into(),
        arch: arch.into(),
        source_sha256: source_sha256.into(),
        files: installed,
    };
    ctx.ensure_dir(step, Path::new(RECORD_DIR), 0o700)?;
    let path = record_path(component);
    ctx.record_original(step, &path)?;
    let text = serde_json::to_vec_pretty(&rec).unwrap_or_default();
    host.fs.write_atomic(&path, &text, 0o600, None)?;
    Ok(rec)
}

/// Create (and journal) the cache directories before fetching.
pub fn prepare_cache(ctx: &Context, step: &str) -> StepResult<()> {
    ctx.ensure_dir(step, &Path::new(CACHE_DIR).join("sha256"), 0o700)?;
    ctx.ensure_dir(step, &Path::new(CACHE_DIR).join("tmp"), 0o700)?;
    Ok(())
}

/// The artifacts a step still needs for `Step::artifacts`: `spec`, unless it is installed already.
pub fn unless_installed(installed: bool, spec: super::ArtifactSpec) -> Vec<super::ArtifactSpec> {
    if installed {
        Vec::new()
    } else {
        vec![spec]
    }
}

/// Fetch one `.tar.gz` artifact (from this run's prefetch or the network, journaled) and stage the entries
/// `select` names. Returns the verified download too (its digest is recorded by the install).
pub async fn fetch_tar_gz(
    ctx: &Context,
    step: &str,
    spec: &super::ArtifactSpec,
    select: impl Fn(&str) -> Option<String> + Send + 'static,
) -> StepResult<(Fetched, Staged)> {
    let fetched = fetch_journaled(ctx, step, std::slice::from_ref(spec))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| crate::steps::StepError::failed(format!("{spec}: nothing was fetched")))?;
    let staged = Staged::tar_gz(&ctx.host, &fetched, &spec.component, &spec.version, select)
        .await
        .map_err(crate::steps::StepError::other)?;
    Ok((fetched, staged))
}

/// Fetch with every created cache file journaled under `step`. Artifacts already fetched in this run
/// (by [`prefetch`]) are taken from the cache without network; the rest are fetched now.
pub async fn fetch_journaled(
    ctx: &Context,
    step: &str,
    specs: &[super::ArtifactSpec],
) -> StepResult<Vec<Fetched>> {
    let mut out: Vec<Option<Fetched>> = specs.iter().map(|s| still_cached(ctx, s)).collect();
    let missing: Vec<super::ArtifactSpec> = specs
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
fn still_cached(ctx: &Context, spec: &super::ArtifactSpec) -> Option<Fetched> {
    let f = ctx.prefetched(&spec.url)?;
    let md = std::fs::symlink_metadata(&f.real_path).ok()?;
    (md.is_file() && md.len() == f.bytes).then_some(f)
}

/// How many artifacts are downloaded at once.
pub const CONCURRENCY: usize = 4;

/// Fetch the artifacts the steps about to run will install (`(step name, spec)`), up to
/// [`CONCURRENCY`] at once, into the digest cache; each created cache file is journaled under its step.
/// On failure: the index in `wanted` of the first artifact (in step order) that failed.
pub async fn prefetch(
    ctx: &Context,
    wanted: &[(&str, super::ArtifactSpec)],
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

impl Staged {
    /// Copy single files out of the cache into a staging directory with `mode` (so they can be run for a
    /// version check before being installed).
    pub async fn copies(
        host: &Host,
        files: &[(&str, &Fetched)],
        mode: u32,
    ) -> Result<Staged, ArtifactError> {
        use std::os::unix::fs::PermissionsExt;
        let staging_host = Path::new(CACHE_DIR).join(format!("staging-{}", uuid::Uuid::new_v4()));
        host.fs.create_dir_all(&staging_host, 0o700)?;
        let dir = host.fs.resolve(&staging_host)?;
        let mut staged = Staged {
            dir: Some(dir.clone()),
            files: BTreeMap::new(),
        };
        for (name, f) in files {
            let dest = dir.join(name);
            tokio::fs::copy(&f.real_path, &dest)
                .await
                .map_err(|e| ArtifactError::io(format!("staging {name}"), e))?;
            tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .await
                .map_err(|e| ArtifactError::io(format!("staging {name}"), e))?;
            staged.files.insert(name.to_string(), dest);
        }
        Ok(staged)
    }
}

/// The custom action an installer step plans when its component is missing or out of date.
pub fn install_action(spec: &super::ArtifactSpec, dests: &[PathBuf]) -> crate::steps::Action {
    crate::steps::Action::Custom {
        kind: "install".into(),
        summary: format!(
            "install {} {} ({}) from {}",
            spec.component, spec.version, spec.arch, spec.file
        ),
        detail: serde_json::json!({
            "component": spec.component,
            "version": spec.version,
            "arch": spec.arch,
            "url": spec.url,
            "files": dests,
        }),
    }
}

/// The pinned digest of a spec (known without network), for [`is_current`].
pub fn pinned(spec: &super::ArtifactSpec) -> Option<&str> {
    match &spec.digest {
        super::DigestSource::Pinned(d) => Some(d),
        _ => None,
    }
}

/// The fetcher for a context's configuration.
pub fn fetcher(ctx: &Context) -> StepResult<super::Fetcher> {
    super::Fetcher::new(
        ctx.host.clone(),
        super::FetcherOptions::from_config(&ctx.config),
    )
    .map_err(StepError::other)
}

/// Install every staged file `name` as `dir/name` with `mode`; fail naming any `required` file missing.
#[allow(clippy::too_many_arguments)]
pub async fn install_staged_into(
    ctx: &Context,
    step: &str,
    spec: &super::ArtifactSpec,
    source_sha256: &str,
    staged: &Staged,
    dir: &Path,
    mode: u32,
    required: &[&str],
) -> StepResult<InstallRecord> {
    for r in required {
        if staged.get(r).is_none() {
            return Err(StepError::failed(format!(
                "{} {} ({}): {} does not contain {r}; is this the right artifact for the version?",
                spec.component, spec.version, spec.arch, spec.file
            )));
        }
    }
    let files: Vec<(PathBuf, PathBuf, u32)> = staged
        .files
        .iter()
        .map(|(n, p)| (dir.join(n), p.clone(), mode))
        .collect();
    install(
        ctx,
        step,
        &spec.component,
        &spec.version,
        &spec.arch,
        source_sha256,
        &files,
    )
    .await
}
