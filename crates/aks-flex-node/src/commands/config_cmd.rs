//! `config validate` and `config show`.

use std::path::Path;

use super::CmdResult;
use crate::config::Config;

/// Loading already validated; reaching here means the file is good (warnings were logged).
pub fn validate(path: &Path, _cfg: &Config) -> CmdResult {
    println!("{}: configuration is valid", path.display());
    Ok(())
}

pub fn show(cfg: &Config) -> CmdResult {
    println!(
        "{}",
        serde_json::to_string_pretty(&cfg.redacted_json()).unwrap_or_default()
    );
    Ok(())
}
