//! Plain shared types, no I/O: the values several layers name (the CLI, the Azure client, the config and
//! the step engine) live here, at the bottom, so no layer has to import a higher one to name them
//! (DESIGN.md §2).

pub mod cluster;
pub mod phase;
pub mod roles;
pub mod secret;

pub use cluster::ClusterEndpoint;
pub use phase::Phase;
pub use roles::RoleSpec;
pub use secret::Secret;
