//! aks-flex-node: turns a Linux machine outside Azure into an AKS worker node.
//!
//! Module map (see DESIGN.md §2): [`cli`] the command-line contract, [`commands`] one module per command,
//! [`config`] the configuration file, [`model`] plain shared types (no I/O), [`host`] the only effect
//! boundary, [`artifacts`] downloads and install records, [`azure`] the cloud, [`engine`] plan/apply/undo,
//! the journal and typed actions, [`steps`] the bootstrap steps (plan, and undo of what they own),
//! [`agent`] the daemon, [`preflight`] the checks, [`render`] pure file renderers, [`logging`].

// No unsafe code but in the one audited module that allows it (`host::heap`: glibc's malloc_trim, which
// no safe wrapper offers); every other system call goes through std or rustix.
#![deny(unsafe_code)]

pub mod agent;
pub mod artifacts;
pub mod azure;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod host;
pub mod logging;
pub mod model;
pub mod net;
pub mod preflight;
pub mod render;
pub mod steps;
