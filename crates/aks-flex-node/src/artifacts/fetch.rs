//! Fetching one verified file: offline bundle first, then the mirror, then upstream; streaming sha256
//! while writing into the cache (`/var/cache/aks-flex-node/sha256/<digest>`), retries with backoff on
//! transient failures, and a clear error for 404s and mismatches. A cached file is re-hashed before use, so
//! a corrupted cache is noticed and refetched rather than installed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::bundle::Bundle;
use super::{
    mirror_url, parse_checksum_file, ArtifactError, ArtifactSpec, DigestSource, CACHE_DIR,
};
use crate::host::Host;

/// How a [`Fetcher`] finds files.
#[derive(Debug, Clone)]
pub struct FetcherOptions {
    /// `artifacts.mirror`: `https://HOST/PATH` is fetched as `<mirror>/HOST/PATH`.
    pub mirror: Option<String>,
    /// `bootstrap.offlineArtifacts.source`: a directory or `file://` URL (a path on the machine, not under
    /// the root: like the config file, it is given by the operator).
    pub offline: Option<String>,
    /// Retries after the first attempt for transient failures.
    pub retries: u32,
    /// First backoff delay (doubled per retry, capped at 30 s).
    pub backoff: Duration,
    /// Timeout of one HTTP request (whole body).
    pub timeout: Duration,
}

impl Default for FetcherOptions {
    fn default() -> Self {
        FetcherOptions {
            mirror: None,
            offline: None,
            retries: 4,
            backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(600),
        }
    }
}

impl FetcherOptions {
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        FetcherOptions {
            mirror: cfg.artifacts.mirror.clone(),
            offline: cfg.bootstrap.offline_artifacts.clone(),
            ..Default::default()
        }
    }
}

/// A verified file in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The host path of the cached file (under the root).
    pub path: PathBuf,
    /// The real path, to read it.
    pub real_path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub from_cache: bool,
}

/// Called with a host path right before the fetcher creates it (steps journal it for undo).
pub type BeforeCreate<'a> = &'a (dyn Fn(&Path) -> Result<(), ArtifactError> + Send + Sync);

pub struct Fetcher {
    host: Arc<Host>,
    client: reqwest::Client,
    opts: FetcherOptions,
    bundle: Option<Bundle>,
}

type Attempt = crate::net::Attempt<ArtifactError>;

impl Fetcher {
    pub fn new(host: Arc<Host>, opts: FetcherOptions) -> Result<Self, ArtifactError> {
        let client = crate::net::client(Duration::from_secs(30), opts.timeout, Vec::new())
            .map_err(|e| ArtifactError::Other(format!("cannot build the HTTP client: {e}")))?;
        let bundle = match &opts.offline {
            Some(src) => Some(Bundle::open(src)?),
            None => None,
        };
        Ok(Fetcher {
            host,
            client,
            opts,
            bundle,
        })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    fn cache_path(digest: &str) -> PathBuf {
        Path::new(CACHE_DIR).join("sha256").join(digest)
    }

    /// The URL a file is fetched from: through the mirror when one is set.
    pub fn effective_url(&self, upstream: &str) -> String {
        match &self.opts.mirror {
            Some(m) => mirror_url(m, upstream),
            None => upstream.to_string(),
        }
    }

    /// The expected digest of `spec` (`None` when it is only verified by its contents).
    pub async fn expected_digest(
        &self,
        spec: &ArtifactSpec,
    ) -> Result<Option<String>, ArtifactError> {
        if let DigestSource::Pinned(d) = &spec.digest {
            return Ok(Some(d.clone()));
        }
        if let Some(entry) = self.bundle.as_ref().and_then(|b| b.find(spec)) {
            return Ok(Some(entry.sha256.clone()));
        }
        match &spec.digest {
            DigestSource::Pinned(_) => unreachable!("handled above"),
            DigestSource::ChecksumFile { url } => {
                let url = self.effective_url(url);
                let text = self.get_small(spec, &url).await?;
                parse_checksum_file(&text, &spec.file)
                    .map(Some)
                    .ok_or_else(|| ArtifactError::BadChecksumFile {
                        component: spec.component.clone(),
                        version: spec.version.clone(),
                        url,
                        file: spec.file.clone(),
                    })
            }
            DigestSource::MirrorChecksumFile { url, hint } => {
                let url = self.effective_url(url);
                let text = match self.get_small(spec, &url).await {
                    Ok(t) => t,
                    Err(ArtifactError::NotFound { .. }) => {
                        return Err(ArtifactError::NoDigest {
                            component: spec.component.clone(),
                            version: spec.version.clone(),
                            file: spec.file.clone(),
                            hint: hint.clone(),
                        })
                    }
                    Err(e) => return Err(e),
                };
                parse_checksum_file(&text, &spec.file)
                    .map(Some)
                    .ok_or_else(|| ArtifactError::BadChecksumFile {
                        component: spec.component.clone(),
                        version: spec.version.clone(),
                        url,
                        file: spec.file.clone(),
                    })
            }
            DigestSource::Unknown { hint } if spec.component == "kubernetes-node" => {
                let _ = hint;
                Ok(None)
            }
            DigestSource::Unknown { hint } => Err(ArtifactError::NoDigest {
                component: spec.component.clone(),
                version: spec.version.clone(),
                file: spec.file.clone(),
                hint: hint.clone(),
            }),
        }
    }

    /// Fetch several files concurrently (at most [`super::install::CONCURRENCY`] at once), in order.
    pub async fn fetch_all(
        &self,
        specs: &[ArtifactSpec],
        before_create: BeforeCreate<'_>,
    ) -> Result<Vec<Fetched>, ArtifactError> {
        use futures_util::StreamExt;
        // Collected first: a lazily mapped iterator makes the future's Send bound unprovable.
        let futs: Vec<_> = specs.iter().map(|s| self.fetch(s, before_create)).collect();
        let results: Vec<_> = futures_util::stream::iter(futs)
            .buffered(super::install::CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Fetch one file into the cache, verified.
    pub async fn fetch(
        &self,
        spec: &ArtifactSpec,
        before_create: BeforeCreate<'_>,
    ) -> Result<Fetched, ArtifactError> {
        let expected = self.expected_digest(spec).await?;
        if let Some(d) = &expected {
            if let Some(hit) = self.cache_hit(d).await? {
                tracing::info!(artifact = %spec, "using cached {}", spec.file);
                return Ok(hit);
            }
        }
        let fs = &self.host.fs;
        let tmp_dir = Path::new(CACHE_DIR).join("tmp");
        // Steps create (and journal) these first with `Context::ensure_dir`; this only covers other callers.
        fs.create_dir_all(&tmp_dir, 0o700)?;
        fs.create_dir_all(&Path::new(CACHE_DIR).join("sha256"), 0o700)?;
        let tmp_host = tmp_dir.join(format!("{}.{}", spec.file, uuid::Uuid::new_v4()));
        let tmp = fs.resolve(&tmp_host)?;
        let result = self.fetch_to(spec, &tmp).await;
        let (actual, bytes, from) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Some(exp) = &expected {
            if *exp != actual {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(ArtifactError::Mismatch {
                    component: spec.component.clone(),
                    version: spec.version.clone(),
                    url: from,
                    expected: exp.clone(),
                    actual,
                });
            }
        }
        let host_path = Self::cache_path(&actual);
        let real = fs.resolve(&host_path)?;
        before_create(&host_path)?;
        tokio::fs::rename(&tmp, &real)
            .await
            .map_err(|e| ArtifactError::io(format!("moving {} into the cache", spec.file), e))?;
        tracing::info!(artifact = %spec, sha256 = %actual, bytes, "downloaded and verified {}", spec.file);
        Ok(Fetched {
            path: host_path,
            real_path: real,
            sha256: actual,
            bytes,
            from_cache: false,
        })
    }

    async fn cache_hit(&self, digest: &str) -> Result<Option<Fetched>, ArtifactError> {
        let host_path = Self::cache_path(digest);
        let real = self.host.fs.resolve(&host_path)?;
        if !real.is_file() {
            return Ok(None);
        }
        let r = real.clone();
        let (actual, bytes) = tokio::task::spawn_blocking(move || super::install::hash_file(&r))
            .await
            .map_err(|e| ArtifactError::Other(format!("hashing task failed: {e}")))?
            .map_err(|e| ArtifactError::io(format!("reading cached {}", real.display()), e))?;
        if actual != digest {
            tracing::warn!(path = %host_path.display(), "cached file is corrupt; fetching it again");
            let _ = tokio::fs::remove_file(&real).await;
            return Ok(None);
        }
        Ok(Some(Fetched {
            path: host_path,
            real_path: real,
            sha256: actual,
            bytes,
            from_cache: true,
        }))
    }

    /// Write the file to `tmp` from the best source; returns (sha256, bytes, where from).
    async fn fetch_to(
        &self,
        spec: &ArtifactSpec,
        tmp: &Path,
    ) -> Result<(String, u64, String), ArtifactError> {
        if let Some((b, entry)) = self
            .bundle
            .as_ref()
            .and_then(|b| b.find(spec).map(|e| (b, e)))
        {
            let src = b.dir().join(&entry.file);
            let mut input = tokio::fs::File::open(&src).await.map_err(|e| {
                ArtifactError::io(format!("opening bundle file {}", src.display()), e)
            })?;
            let mut out = create_tmp(tmp).await?;
            let (d, n) = copy_hashing(&mut input, &mut out)
                .await
                .map_err(|e| ArtifactError::io(format!("copying {}", src.display()), e))?;
            out.sync_all()
                .await
                .map_err(|e| ArtifactError::io("syncing the cache", e))?;
            return Ok((d, n, src.display().to_string()));
        }
        let url = self.effective_url(&spec.url);
        let got = crate::net::retry(
            self.backoff(),
            self.opts.retries,
            || self.download_once(spec, &url, tmp),
            |attempt, reason, delay| {
                tracing::warn!(artifact = %spec, %url, attempt, "transient failure ({reason}); retrying in {delay:?}")
            },
        )
        .await;
        let (d, n) = self.gave_up(spec, &url, got)?;
        Ok((d, n, url))
    }

    /// Downloads back off from `backoff` up to 30 s.
    fn backoff(&self) -> crate::net::Backoff {
        crate::net::Backoff {
            base: self.opts.backoff,
            cap: Duration::from_secs(30),
        }
    }

    /// A retried call's outcome as this fetcher's error.
    fn gave_up<T>(
        &self,
        spec: &ArtifactSpec,
        url: &str,
        got: Result<T, crate::net::GaveUp<ArtifactError>>,
    ) -> Result<T, ArtifactError> {
        got.map_err(|g| match g {
            crate::net::GaveUp::Fatal(e) => e,
            crate::net::GaveUp::Exhausted { attempts, reason } => ArtifactError::Download {
                component: spec.component.clone(),
                version: spec.version.clone(),
                url: url.to_string(),
                attempts,
                reason,
            },
        })
    }

    async fn download_once(
        &self,
        spec: &ArtifactSpec,
        url: &str,
        tmp: &Path,
    ) -> Result<(String, u64), Attempt> {
        let mut resp = self.send(spec, url).await?;
        let total = resp.content_length();
        let mut out = create_tmp(tmp).await.map_err(Attempt::Fatal)?;
        let bar = progress_bar(&spec.file, total);
        let mut hasher = Sha256::new();
        let mut n: u64 = 0;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk);
                    n += chunk.len() as u64;
                    out.write_all(&chunk).await.map_err(|e| {
                        Attempt::Fatal(ArtifactError::io(format!("writing {}", tmp.display()), e))
                    })?;
                    if let Some(b) = &bar {
                        b.set_position(n);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Attempt::Transient(format!(
                        "connection broken after {n} bytes: {}",
                        error_chain(&e)
                    )))
                }
            }
        }
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        if let Some(t) = total {
            if t != n {
                return Err(Attempt::Transient(format!(
                    "truncated download: {n} of {t} bytes"
                )));
            }
        }
        out.flush()
            .await
            .and(out.sync_all().await)
            .map_err(|e| Attempt::Fatal(ArtifactError::io("syncing the cache", e)))?;
        Ok((hex::encode(hasher.finalize()), n))
    }

    async fn send(&self, spec: &ArtifactSpec, url: &str) -> Result<reqwest::Response, Attempt> {
        let resp = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| Attempt::Transient(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(Attempt::Fatal(ArtifactError::NotFound {
                component: spec.component.clone(),
                version: spec.version.clone(),
                arch: spec.arch.clone(),
                url: url.to_string(),
            }));
        }
        if crate::net::retryable(status) {
            return Err(Attempt::Transient(format!("HTTP {status}")));
        }
        Err(Attempt::Fatal(ArtifactError::Download {
            component: spec.component.clone(),
            version: spec.version.clone(),
            url: url.to_string(),
            attempts: 1,
            reason: format!("HTTP {status}"),
        }))
    }

    /// A small text file (checksums), with the same retry rules.
    async fn get_small(&self, spec: &ArtifactSpec, url: &str) -> Result<String, ArtifactError> {
        let got = crate::net::retry(
            self.backoff(),
            self.opts.retries,
            || async {
                self.send(spec, url)
                    .await?
                    .text()
                    .await
                    .map_err(|e| Attempt::Transient(error_chain(&e)))
            },
            |_, _, _| {},
        )
        .await;
        self.gave_up(spec, url, got)
    }
}

async fn create_tmp(path: &Path) -> Result<tokio::fs::File, ArtifactError> {
    tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .await
        .map_err(|e| ArtifactError::io(format!("creating {}", path.display()), e))
}

async fn copy_hashing(
    input: &mut tokio::fs::File,
    out: &mut tokio::fs::File,
) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = input.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k]).await?;
        n += k as u64;
    }
    out.flush().await?;
    Ok((hex::encode(hasher.finalize()), n))
}

fn progress_bar(file: &str, total: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        tracing::info!("downloading {file}");
        return None;
    }
    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:30} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(file.to_string());
    Some(bar)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
