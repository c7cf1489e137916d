//! What several test modules share: the loopback artifact server and its fixtures (`runtime`), and the
//! `azcmagent` stand-in (`azure`).

pub mod azure;
pub mod runtime;
