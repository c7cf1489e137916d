//! `aks-flex-node artifacts bundle --output DIR`: fetch every configured artifact (verified, through the
//! cache under --root) and write them with a `manifest.json` as an offline bundle.

use std::path::Path;
use std::sync::Arc;

use super::{CliError, CmdResult};
use crate::artifacts::bundle;
use crate::config::Config;
use crate::host::Host;

pub async fn bundle(cfg: Arc<Config>, host: Arc<Host>, output: &Path) -> CmdResult {
    let manifest = bundle::build(&cfg, host, output)
        .await
        .map_err(CliError::failed)?;
    println!(
        "Wrote {} artifact(s) and manifest.json to {}",
        manifest.artifacts.len(),
        output.display()
    );
    Ok(())
}
