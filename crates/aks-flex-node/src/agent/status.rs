//! (being built: the status file and `status` command; this is the interface the daemon uses)

use serde::{Deserialize, Serialize};

pub const STATUS_PATH: &str = "/run/aks-flex-node/status.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DaemonFacts {
    pub state: String,
    pub last_pass: Option<chrono::DateTime<chrono::Utc>>,
    pub last_repair: Option<Repair>,
    pub last_error: Option<String>,
    pub next_retry: Option<chrono::DateTime<chrono::Utc>>,
    pub last_azure_pass: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Repair {
    pub step: String,
    pub what: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub daemon: Option<DaemonFacts>,
}

pub async fn collect(_ctx: &crate::steps::Context, facts: Option<&DaemonFacts>) -> Status {
    Status {
        daemon: facts.cloned(),
    }
}

pub fn write(host: &crate::host::Host, status: &Status) -> Result<(), crate::host::FsError> {
    let body = serde_json::to_vec_pretty(status).unwrap_or_default();
    host.fs
        .create_dir_all(std::path::Path::new("/run/aks-flex-node"), 0o755)?;
    host.fs.write_atomic(
        std::path::Path::new(STATUS_PATH),
        &body,
        0o644,
        Some((0, 0)),
    )
}
