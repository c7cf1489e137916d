//! What several test modules share: the loopback artifact server and its fixtures (`runtime`), the
//! `azcmagent` stand-in (`azure`), and what a test that cannot run here does (fail, saying what it needs).

pub mod azure;
pub mod runtime;

use std::process::Command;

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A test that cannot run without `what` fails saying so: it never passes without having run.
#[track_caller]
pub fn require(present: bool, what: &str) {
    assert!(present, "this test needs {what}");
}

/// Fails unless `version` (a program and its version flag) runs; `package` is the Debian package that has it.
#[track_caller]
pub fn require_program(version: &[&str], package: &str) {
    let runs = Command::new(version[0])
        .args(&version[1..])
        .output()
        .is_ok();
    require(
        runs,
        &format!(
            "{}, which is not installed (Debian package {package})",
            version[0]
        ),
    );
}
