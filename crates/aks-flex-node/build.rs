//! Embeds version, git commit and build time (the original's `version` output).
//! Overridable with AKS_FLEX_NODE_VERSION / AKS_FLEX_NODE_GIT_COMMIT / AKS_FLEX_NODE_BUILD_TIME;
//! otherwise the package version, `git rev-parse --short HEAD` (or `unknown`) and, for reproducible
//! builds, SOURCE_DATE_EPOCH (or `unknown`).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    for v in [
        "AKS_FLEX_NODE_VERSION",
        "AKS_FLEX_NODE_GIT_COMMIT",
        "AKS_FLEX_NODE_BUILD_TIME",
        "SOURCE_DATE_EPOCH",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
    }
    let version = std::env::var("AKS_FLEX_NODE_VERSION")
        .unwrap_or_else(|_| std::env::var("CARGO_PKG_VERSION").unwrap_or_else(|_| "dev".into()));
    let commit = std::env::var("AKS_FLEX_NODE_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let time = std::env::var("AKS_FLEX_NODE_BUILD_TIME")
        .ok()
        .or_else(|| {
            let secs: i64 = std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok()?;
            let out = Command::new("date")
                .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
                .output()
                .ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=AKS_FLEX_NODE_VERSION={version}");
    println!("cargo:rustc-env=AKS_FLEX_NODE_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=AKS_FLEX_NODE_BUILD_TIME={time}");
}
