//! The agent's integration tests, in one binary (one link instead of one per file): the real binary on
//! sandbox roots, the engine against a loopback artifact server, and the Azure side against the in-process
//! emulator on 127.0.0.1. Run one file's tests with `cargo test -p aks-flex-node --test integration
//! <module>::`. A test that needs root is `#[ignore]`d with the reason, and `make e2e` runs it (as root);
//! no test skips itself: without what it needs, it fails saying so.

mod support;

mod azure_bootstrap;
mod azure_credentials;
mod azure_scale;
mod cli_foundation;
mod config_load;
mod config_props;
mod config_snapshots;
mod install_scripts;
mod preflight;
mod runtime_artifacts;
mod runtime_e2e;
mod runtime_npd;
mod runtime_prefetch;
mod runtime_real;
mod runtime_variants;
mod status_cli;
