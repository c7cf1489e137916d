//! TEMPORARY STUB — replaced by the config branch at merge. Same public API.
use std::path::{Path, PathBuf};
pub struct LoadOptions<'a> {
    pub hostname: String,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warning,
    Error,
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentConfig {
    pub log_level: LogLevel,
    pub log_dir: PathBuf,
    pub node_name: String,
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub agent: AgentConfig,
}
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    Ok(Loaded {
        config: Config {
            agent: AgentConfig {
                log_level: LogLevel::Info,
                log_dir: "/var/log/aks-flex-node".into(),
                node_name: opts.hostname.clone(),
            },
        },
        warnings: vec![],
    })
}
impl Config {
    pub fn redacted_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap()
    }
}
pub fn json_schema() -> serde_json::Value {
    serde_json::json!({})
}
