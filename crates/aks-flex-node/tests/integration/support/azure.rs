//! Support for the Azure tests: the `azcmagent` stand-in (the emulator's, built as this
//! crate's `azcmagent` example) that the agent runs as if it were the real Arc agent.

use std::path::PathBuf;

/// Path of the built `azcmagent` example next to this test binary's profile directory
/// (`target/<profile>/deps/<test>` -> `target/<profile>/examples/azcmagent`). `cargo test` builds
/// examples but `cargo test --test integration` does not, so it is built here when missing — once per process,
/// in the same profile as the test.
pub fn azcmagent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let p = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .join("examples/azcmagent");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        if !p.exists() {
            let mut cmd = std::process::Command::new(env!("CARGO"));
            cmd.args([
                "build",
                "-q",
                "-p",
                "aks-flex-node",
                "--example",
                "azcmagent",
            ]);
            if !cfg!(debug_assertions) {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo");
            assert!(st.success(), "building the azcmagent stand-in failed");
        }
    });
    assert!(p.exists(), "{} missing", p.display());
    p
}
