//! What several test modules share: the agent binary with a clean environment, the fixtures, files staged
//! under a sandbox root, snapshots of a root (`tree`), the loopback artifact server and its fixtures
//! (`runtime`), and the Azure emulator world (`azure`).

pub mod azure;
pub mod runtime;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use runtime::sha256;

pub const BIN: &str = env!("CARGO_BIN_EXE_aks-flex-node");

/// The agent binary with none of the caller's settings that would change what it does (config path,
/// journal stream, azcmagent, HTTPS proxy) and no colours.
pub fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("AKS_FLEX_NODE_CONFIG")
        .env_remove("AKS_FLEX_NODE_AZCMAGENT")
        .env_remove("JOURNAL_STREAM")
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env("NO_COLOR", "1");
    c
}

/// `bin()` with `args`, then `--root root --config config`.
pub fn sandbox(root: &Path, config: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.args(args)
        .arg("--root")
        .arg(root)
        .arg("--config")
        .arg(config);
    c
}

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn text(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run aks-flex-node");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `bin()` with `args`.
pub fn run_args(args: &[&str]) -> Run {
    run(bin().args(args))
}

/// A file of `tests/fixtures/config`.
pub fn config_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// The README's quick-start config, verbatim.
pub fn readme_quick_start() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md at the repository root");
    let start = readme
        .find("config.json >/dev/null <<'EOF'\n")
        .expect("the quick-start heredoc in README.md");
    let body = &readme[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("\nEOF\n").expect("end of the heredoc")].to_string()
}

/// Where the host path `p` ("/etc/fstab") is under the sandbox root `root`.
pub fn at(root: &Path, p: &str) -> PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// Writes `content` at the host path `p` under `root` (parents created) with `mode`.
pub fn put(root: &Path, p: &str, content: impl AsRef<[u8]>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let full = at(root, p);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(&full, content).unwrap();
    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The environment of a config load in a test: nothing set.
pub fn no_env(_: &str) -> Option<String> {
    None
}

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
