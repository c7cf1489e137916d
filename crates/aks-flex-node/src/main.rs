//! The `aks-flex-node` binary: parse the command line and hand over to the library.

#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before any thread exists: one malloc arena keeps the daemon's idle memory small (see host::heap).
    aks_flex_node::host::heap::single_arena();
    let cli = aks_flex_node::cli::Cli::parse();
    // One thread: every command is I/O-bound (hashing and unpacking run on tokio's blocking pool), and
    // the daemon stays small (one stack, one malloc arena) while it idles between passes.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    runtime.block_on(aks_flex_node::commands::run(cli))
}
