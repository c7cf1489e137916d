//! `preflight`: run the checks, print them (text or JSON), exit 1 when an error is found. Changes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{CliError, CmdResult};
use crate::cli::Output;
use crate::config::Config;
use crate::engine::Context;
use crate::host::Host;
use crate::model::Phase;
use crate::preflight::{self, IgnoreSet, Options};

pub async fn run(
    cfg: Arc<Config>,
    host: Arc<Host>,
    output: Output,
    skip: BTreeSet<Phase>,
    ignore: IgnoreSet,
) -> CmdResult {
    let ctx = Context::new(cfg, host).map_err(|e| {
        let hint = if crate::host::fs::is_root_user() {
            ""
        } else {
            " (run as root to read it)"
        };
        CliError::failed(anyhow::anyhow!(
            "cannot read the agent's journal{hint}: {e}"
        ))
    })?;
    let report = preflight::run_with(&ctx, &Options::for_phases(ignore, &skip)).await;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Output::Text => print!("{}", report.render_text()),
    }
    let errors = report.errors();
    if errors.is_empty() {
        Ok(())
    } else {
        // The report above already lists them; this is the one-line summary on stderr.
        Err(CliError::failed(anyhow::anyhow!(
            "preflight found {} error(s): {}",
            errors.len(),
            errors
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}
