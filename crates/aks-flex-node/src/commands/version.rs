//! `version`: the original's four lines, or JSON. Needs no config.

use super::CmdResult;
use crate::cli::Output;

pub const VERSION: &str = env!("AKS_FLEX_NODE_VERSION");
pub const GIT_COMMIT: &str = env!("AKS_FLEX_NODE_GIT_COMMIT");
pub const BUILD_TIME: &str = env!("AKS_FLEX_NODE_BUILD_TIME");

pub fn run(output: Output) -> CmdResult {
    match output {
        Output::Text => {
            println!("AKS Flex Node Agent");
            println!("Version: {VERSION}");
            println!("Git Commit: {GIT_COMMIT}");
            println!("Build Time: {BUILD_TIME}");
        }
        Output::Json => println!(
            "{}",
            serde_json::json!({ "version": VERSION, "gitCommit": GIT_COMMIT, "buildTime": BUILD_TIME })
        ),
    }
    Ok(())
}
