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

pub fn mtime_ns(md: &std::fs::Metadata) -> i64 {
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

/// How many artifacts are downloaded at once.
pub const CONCURRENCY: usize = 4;

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

/// The pinned digest of a spec (known without network), for [`is_current`].
pub fn pinned(spec: &super::ArtifactSpec) -> Option<&str> {
    match &spec.digest {
        super::DigestSource::Pinned(d) => Some(d),
        _ => None,
    }
}
