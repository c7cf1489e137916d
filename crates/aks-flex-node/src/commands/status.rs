//! `aks-flex-node status`: look at the node now (with the daemon's facts from its status file) and print
//! the result; exit 0 when healthy, 1 when degraded.

use std::sync::Arc;

use super::{exit, CliError, CmdResult};
use crate::agent::status::{self, Health};
use crate::cli::Output;
use crate::config::Config;
use crate::engine::Context;
use crate::host::Host;

pub async fn run(cfg: Arc<Config>, host: Arc<Host>, output: Output) -> CmdResult {
    let ctx = Context::new(cfg, host).map_err(CliError::failed)?;
    let st = status::collect_with_file(&ctx).await;
    match output {
        Output::Text => print!("{}", status::render_text(&st)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&st).map_err(CliError::failed)?
        ),
    }
    match st.health {
        Health::Healthy => Ok(()),
        // The output already says what is wrong.
        Health::Degraded => Err(CliError::quiet(exit::FAILED)),
    }
}

/// `status --schema`.
pub fn schema() -> CmdResult {
    println!(
        "{}",
        serde_json::to_string_pretty(&status::json_schema()).map_err(CliError::failed)?
    );
    Ok(())
}
