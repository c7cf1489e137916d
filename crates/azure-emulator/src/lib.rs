//! `azure-emulator`: a local stand-in for the Azure endpoints aks-flex-node talks to, speaking
//! the public REST contracts on 127.0.0.1 — Entra ID tokens (client credentials, device code),
//! ARM (HybridCompute machines, ContainerService managed clusters, Authorization role
//! assignments with modelled permissions), Arc HIMDS with its challenge-file flow, AKS's Entra ID
//! webhooks for a real kube-apiserver (TokenReview, SubjectAccessReview with Azure RBAC) — plus
//! an `azcmagent` stand-in, fault injection, a request log and a JSON control API.
//!
//! Start it in-process from tests:
//!
//! ```no_run
//! # async fn demo() -> Result<(), azure_emulator::Error> {
//! use azure_emulator::{Emulator, EmulatorOptions, Scenario};
//! let emu = Emulator::start(EmulatorOptions {
//!     scenario: Scenario::demo(),
//!     ..Default::default()
//! })
//! .await?;
//! let token_url = format!("{}/{}/oauth2/v2.0/token", emu.urls().login, azure_emulator::scenario::DEMO_TENANT_ID);
//! # let _ = token_url;
//! emu.shutdown().await;
//! # Ok(()) }
//! ```

// Route handlers return the HTTP error response itself as the `Err` value so `?` goes straight
// to the answer; such values are built at most once per request, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod aks;
mod arm;
pub mod azcmagent;
mod control;
pub mod faults;
mod himds;
pub mod jwt;
mod login;
pub mod reqlog;
pub mod roles;
pub mod scenario;
mod server;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use faults::{FaultKind, FaultRule};
pub use reqlog::RequestLogEntry;
pub use scenario::Scenario;
pub use state::StateSnapshot;

/// Errors starting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address is not a loopback address.
    #[error("refusing to listen on {addr}: the emulator serves 127.0.0.1 (loopback) only")]
    NotLoopback {
        /// The address given.
        addr: SocketAddr,
    },
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    /// The state dir could not be used.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// A directory or file the emulator needs could not be created.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A fault rule from the scenario is invalid.
    #[error("invalid fault rule: {0}")]
    Fault(String),
}

/// How to start the emulator.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// The world to serve.
    pub scenario: Scenario,
    /// Listen address; must be loopback. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where HIMDS challenge key files are written (created 0700 if missing). Defaults to a
    /// fresh directory under the system temp dir.
    pub himds_key_dir: Option<PathBuf>,
    /// Persist state as JSON here (created if missing) and load it at start.
    pub state_dir: Option<PathBuf>,
    /// Also append the request log as JSON lines to this file.
    pub request_log_file: Option<PathBuf>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        EmulatorOptions {
            scenario: Scenario::demo(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            himds_key_dir: None,
            state_dir: None,
            request_log_file: None,
        }
    }
}

/// The endpoints, as printed on stdout by `flexnode-emulator serve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Urls {
    /// Entra ID authority host: token URL is `{login}/{tenant}/oauth2/v2.0/token`.
    pub login: String,
    /// ARM endpoint.
    pub arm: String,
    /// HIMDS base: token URL is `{himds}/metadata/identity/oauth2/token`.
    pub himds: String,
    /// Control API base.
    pub control: String,
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<server::Shared>,
    urls: Urls,
    addr: SocketAddr,
    handle: Option<server::ServerHandle>,
}

impl Emulator {
    /// Validate the scenario, load any persisted state, bind and start serving.
    pub async fn start(opts: EmulatorOptions) -> Result<Emulator, Error> {
        if !opts.listen.ip().is_loopback() {
            return Err(Error::NotLoopback { addr: opts.listen });
        }
        opts.scenario.validate()?;
        if let Some(dir) = &opts.state_dir {
            create_private_dir(dir)?;
        }
        let himds_dir = match &opts.himds_key_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!(
                "flexnode-emulator-himds-{}",
                uuid::Uuid::new_v4().simple()
            )),
        };
        create_private_dir(&himds_dir)?;
        let world = state::World::load(opts.scenario.clone(), opts.state_dir.as_deref())?;
        let mut faults = faults::FaultSet::default();
        for f in &opts.scenario.faults {
            faults.add(f.clone()).map_err(Error::Fault)?;
        }
        let log =
            reqlog::RequestLog::with_file(opts.request_log_file.as_deref()).map_err(|source| {
                Error::Io {
                    path: opts.request_log_file.clone().unwrap_or_default(),
                    source,
                }
            })?;
        let listener = tokio::net::TcpListener::bind(opts.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: opts.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
        let base = format!("http://{addr}");
        let urls = Urls {
            login: base.clone(),
            arm: base.clone(),
            himds: base.clone(),
            control: format!("{base}/_emulator"),
        };
        let shared = Arc::new(server::Shared::new(
            world,
            faults,
            log,
            base,
            himds_dir,
            opts.state_dir.clone(),
        ));
        if let Some(dir) = &opts.state_dir {
            shared.world().save(dir)?;
        }
        let handle = server::spawn(listener, shared.clone());
        Ok(Emulator {
            shared,
            urls,
            addr,
            handle: Some(handle),
        })
    }

    /// The endpoints.
    pub fn urls(&self) -> &Urls {
        &self.urls
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where HIMDS key files are written.
    pub fn himds_key_dir(&self) -> &Path {
        &self.shared.himds_dir
    }

    /// All requests served so far (control API requests are not logged).
    pub fn request_log(&self) -> Vec<RequestLogEntry> {
        self.shared.log.snapshot()
    }

    /// Forget the in-memory request log.
    pub fn clear_request_log(&self) {
        self.shared.log.clear();
    }

    /// Add (or replace, by id) a fault rule; returns its id.
    pub fn set_fault(&self, rule: FaultRule) -> Result<String, Error> {
        self.shared.faults().add(rule).map_err(Error::Fault)
    }

    /// Remove every fault rule.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// A copy of the mutable state (machines, role assignments, host agents).
    pub fn state(&self) -> StateSnapshot {
        self.shared.world().snapshot()
    }

    /// Approve a pending device code as `user` (UPN or object id; the tenant's first user when
    /// `None`).
    pub fn approve_device_code(&self, user_code: &str, user: Option<&str>) -> Result<(), String> {
        login::approve(&self.shared, user_code, user)
    }

    /// Change the lifetime of tokens issued from now on (0 = already expired).
    pub fn set_token_lifetime_secs(&self, secs: u64) {
        self.shared.world().settings.token_lifetime_secs = secs;
    }

    /// Change how many role-assignment attempts a new identity needs before it replicates.
    pub fn set_principal_replication_attempts(&self, attempts: u32) {
        self.shared.world().settings.principal_replication_attempts = attempts;
    }

    /// Stop serving and wait for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.stop().await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

fn create_private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    Ok(())
}
