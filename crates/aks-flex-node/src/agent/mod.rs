//! The long-running agent: the daemon loop (bootstrap, heal, Azure re-checks, backoff), its status file
//! and `status` command, systemd notification and the optional metrics endpoint.

pub mod daemon;
pub mod metrics;
pub mod notify;
pub mod status;
