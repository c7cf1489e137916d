//! scripts/install.sh and scripts/uninstall.sh, run with bash against a temporary install root
//! (AKS_FLEX_NODE_INSTALL_ROOT) and a release server on 127.0.0.1. Nothing here touches the real /usr,
//! /etc, /var or systemd: with a root other than / the scripts never run systemctl or apt-get. The
//! "release" is a small fake tarball built here, not the real binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::tree::{Kind, Stamps, Tree};
use crate::support::{at, require, require_program, sha256};

const VERSION: &str = "9.8.7";
const UNIT: &str = "/etc/systemd/system/aks-flex-node-agent.service";
const BIN: &str = "/usr/local/bin/aks-flex-node";
const MANIFEST: &str = "/var/lib/aks-flex-node-install/manifest";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => panic!("no release architecture for {other}"),
    }
}

fn unit_text() -> Vec<u8> {
    std::fs::read(repo().join("packaging/aks-flex-node-agent.service")).unwrap()
}

/// The fake agent: records each call (its arguments, and whether the installed files were still there)
/// in $FAKE_LOG, and exits with $FAKE_EXIT.
fn fake_binary(tag: &str) -> Vec<u8> {
    format!(
        r#"#!/bin/sh
# fake aks-flex-node ({tag})
root=""; prev=""
for a in "$@"; do [ "$prev" = --root ] && root="$a"; prev="$a"; done
{{
  echo "args: $*"
  [ -f "$root{BIN}" ] && echo "binary present"
  [ -f "$root{UNIT}" ] && echo "unit present"
}} >>"${{FAKE_LOG:-/dev/null}}"
exit "${{FAKE_EXIT:-0}}"
"#
    )
    .into_bytes()
}

fn tarball(binary: &[u8], unit: &[u8]) -> Vec<u8> {
    let name = format!("aks-flex-node-{VERSION}-linux-{}", arch());
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (file, data, mode) in [
        ("aks-flex-node", binary, 0o755),
        ("aks-flex-node-agent.service", unit, 0o644),
        ("README.md", b"readme\n".as_slice(), 0o644),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_cksum();
        tar.append_data(&mut h, format!("{name}/{file}"), data)
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn tarball_name() -> String {
    format!("aks-flex-node-{VERSION}-linux-{}.tar.gz", arch())
}

/// A release tree laid out as GitHub serves it: download/v<V>/<files>, latest/download/VERSION.
struct Release {
    dir: tempfile::TempDir,
    binary: Vec<u8>,
}

impl Release {
    fn new() -> Release {
        let dir = tempfile::tempdir().unwrap();
        let binary = fake_binary("release");
        let tgz = tarball(&binary, &unit_text());
        let vdir = dir.path().join(format!("download/v{VERSION}"));
        std::fs::create_dir_all(&vdir).unwrap();
        std::fs::write(vdir.join(tarball_name()), &tgz).unwrap();
        std::fs::write(
            vdir.join("SHA256SUMS"),
            format!("{}  {}\n", sha256(&tgz), tarball_name()),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("latest/download")).unwrap();
        std::fs::write(
            dir.path().join("latest/download/VERSION"),
            format!("v{VERSION}\n"),
        )
        .unwrap();
        Release { dir, binary }
    }

    fn sums(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("download/v{VERSION}/SHA256SUMS"))
    }
}

/// A static file server for the release tree, on 127.0.0.1 only.
struct Server {
    url: String,
    _rt: tokio::runtime::Runtime,
}

fn serve(dir: &Path) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = dir.to_path_buf();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let dir = dir.clone();
        async move {
            let rel = uri.path().trim_start_matches('/');
            if rel.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(axum::http::StatusCode::NOT_FOUND);
            }
            tokio::fs::read(dir.join(rel))
                .await
                .map_err(|_| axum::http::StatusCode::NOT_FOUND)
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        url: format!("http://127.0.0.1:{port}"),
        _rt: rt,
    }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs a script with bash, in a new session (no controlling terminal, so a prompt can never block: the
/// scripts refuse instead), stdin from /dev/null.
fn script(name: &str, root: &Path, env: &[(&str, &str)], args: &[&str]) -> Out {
    script_at(&repo().join("scripts").join(name), root, env, args)
}

fn script_at(path: &Path, root: &Path, env: &[(&str, &str)], args: &[&str]) -> Out {
    // setsid(1), waiting for bash and passing on its exit status.
    let mut c = Command::new("setsid");
    c.args(["--wait", "bash"])
        .arg(path)
        .args(args)
        .env("AKS_FLEX_NODE_INSTALL_ROOT", root)
        .env_remove("AKS_FLEX_NODE_DOWNLOAD_URL")
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run bash");
    let o = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("--- {} {args:?} -> {}\n{}", path.display(), o.code, o.all());
    o
}

fn install(root: &Path, server: &Server, args: &[&str]) -> Out {
    script(
        "install.sh",
        root,
        &[("AKS_FLEX_NODE_DOWNLOAD_URL", &server.url)],
        args,
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// Every entry under root, with when it was last written.
fn snapshot(root: &Path) -> Tree {
    crate::support::tree::snapshot(root, Stamps::All, &[])
}

fn manifest_entries(root: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(at(root, MANIFEST))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn happy_path_installs_the_latest_release_with_modes_and_manifest() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &server, &[]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains(&format!("latest release: {VERSION}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("verified: sha256"), "{}", out.stdout);
    let r = root.path();
    assert_eq!(std::fs::read(at(r, BIN)).unwrap(), rel.binary);
    assert_eq!(mode(&at(r, BIN)), 0o755);
    assert_eq!(std::fs::read(at(r, UNIT)).unwrap(), unit_text());
    assert_eq!(mode(&at(r, UNIT)), 0o644);
    for d in ["/etc/aks-flex-node", "/var/log/aks-flex-node"] {
        assert!(at(r, d).is_dir(), "{d}");
        assert_eq!(mode(&at(r, d)), 0o750, "{d}");
    }
    let m = manifest_entries(r);
    let (bin_sum, unit_sum) = (sha256(&rel.binary), sha256(&unit_text()));
    let want = vec![
        vec!["file", "0755", bin_sum.as_str(), BIN, "-"],
        vec!["file", "0644", unit_sum.as_str(), UNIT, "-"],
        vec!["dir", "0750", "-", "/etc/aks-flex-node", "-"],
        vec!["dir", "0750", "-", "/var/log/aks-flex-node", "-"],
    ];
    assert_eq!(m, want);
    // Systemd is never touched outside the real root; it says what it skipped.
    assert!(out.stdout.contains("is not /): systemctl daemon-reload"));
    assert!(out
        .stdout
        .contains("systemctl enable --now aks-flex-node-agent"));
    assert!(out.stdout.contains("aks-flex-node config validate"));
    // Exactly these, nothing else.
    let files: Vec<String> = snapshot(r)
        .into_iter()
        .filter(|(_, v)| v.kind == Kind::File)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(files, vec![UNIT, BIN, MANIFEST]);
}

#[test]
fn rerun_is_a_noop_that_touches_nothing() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    let root = tempfile::tempdir().unwrap();
    assert_eq!(
        install(root.path(), &server, &["--version", VERSION]).code,
        0
    );
    let before = snapshot(root.path());
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = install(root.path(), &server, &["--version", VERSION]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("nothing to do"), "{}", out.stdout);
    assert!(!out.stdout.contains("daemon-reload"), "{}", out.stdout);
    assert_eq!(
        snapshot(root.path()),
        before,
        "mtimes, modes or contents changed"
    );
}

#[test]
fn wrong_checksum_is_refused_and_nothing_is_installed() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    std::fs::write(
        rel.sums(),
        format!("{}  {}\n", "0".repeat(64), tarball_name()),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &server, &["--version", VERSION, "--yes"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing was installed"),
        "{}",
        out.stderr
    );
    assert!(
        snapshot(root.path()).is_empty(),
        "{:?}",
        snapshot(root.path())
    );
}

#[test]
fn a_pinned_sha256_that_differs_is_refused() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    let root = tempfile::tempdir().unwrap();
    let pin = "a".repeat(64);
    let out = install(
        root.path(),
        &server,
        &["--version", VERSION, "--sha256", &pin],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--sha256 says"), "{}", out.stderr);
    assert!(snapshot(root.path()).is_empty());
}

#[test]
fn missing_sha256sums_or_entry_is_refused_and_nothing_is_installed() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    // An entry for another file only.
    std::fs::write(rel.sums(), format!("{}  other.tar.gz\n", "0".repeat(64))).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &server, &["--version", VERSION]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("SHA256SUMS has no entry"),
        "{}",
        out.stderr
    );
    assert!(snapshot(root.path()).is_empty());
    // No SHA256SUMS at all.
    std::fs::remove_file(rel.sums()).unwrap();
    let out = install(root.path(), &server, &["--version", VERSION]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot download") && out.stderr.contains("SHA256SUMS"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("refusing to install"), "{}", out.stderr);
    assert!(snapshot(root.path()).is_empty());
}

#[test]
fn plain_http_is_refused_except_on_loopback() {
    let root = tempfile::tempdir().unwrap();
    let out = script(
        "install.sh",
        root.path(),
        &[(
            "AKS_FLEX_NODE_DOWNLOAD_URL",
            "http://example.invalid/releases",
        )],
        &["--version", VERSION],
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("refusing to download over anything but https"),
        "{}",
        out.stderr
    );
    assert!(snapshot(root.path()).is_empty());
}

#[test]
fn binary_flag_installs_a_local_binary_with_the_packaging_unit() {
    let root = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("my-build");
    std::fs::write(&local, fake_binary("local")).unwrap();
    let out = script(
        "install.sh",
        root.path(),
        &[],
        &["--binary", local.to_str().unwrap()],
    );
    assert_eq!(out.code, 0);
    let r = root.path();
    assert_eq!(std::fs::read(at(r, BIN)).unwrap(), fake_binary("local"));
    assert_eq!(mode(&at(r, BIN)), 0o755);
    assert_eq!(std::fs::read(at(r, UNIT)).unwrap(), unit_text());
    let m = manifest_entries(r);
    assert_eq!(m[0][3], BIN);
    assert_eq!(m[0][2], sha256(&fake_binary("local")));
    // Again: a no-op.
    let before = snapshot(r);
    let out = script("install.sh", r, &[], &["--binary", local.to_str().unwrap()]);
    assert!(out.stdout.contains("nothing to do"), "{}", out.stdout);
    assert_eq!(snapshot(r), before);
}

#[test]
fn the_unit_embedded_in_install_sh_is_the_packaging_unit() {
    // install.sh alone (as under `curl | bash`): no packaging/ next to it, so it uses its embedded copy.
    let lone = tempfile::tempdir().unwrap();
    let copy = lone.path().join("install.sh");
    std::fs::copy(repo().join("scripts/install.sh"), &copy).unwrap();
    let local = lone.path().join("bin");
    std::fs::write(&local, fake_binary("lone")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = script_at(
        &copy,
        root.path(),
        &[],
        &["--binary", local.to_str().unwrap()],
    );
    assert_eq!(out.code, 0);
    assert_eq!(
        String::from_utf8(std::fs::read(at(root.path(), UNIT)).unwrap()).unwrap(),
        String::from_utf8(unit_text()).unwrap(),
        "the unit embedded in scripts/install.sh differs from packaging/aks-flex-node-agent.service: copy it over"
    );
}

#[test]
fn a_file_it_did_not_install_is_replaced_only_with_yes_and_put_back_by_uninstall() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(at(r, "/usr/local/bin")).unwrap();
    std::fs::write(at(r, BIN), b"someone else's binary\n").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("bin");
    std::fs::write(&local, fake_binary("local")).unwrap();
    let arg = local.to_str().unwrap();
    // No terminal and no --yes: it refuses and changes nothing.
    let before = snapshot(r);
    let out = script("install.sh", r, &[], &["--binary", arg]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("re-run with --yes"), "{}", out.stderr);
    assert_eq!(snapshot(r), before);
    // --yes: replaced, the original saved.
    let out = script("install.sh", r, &[], &["--binary", arg, "--yes"]);
    assert_eq!(out.code, 0);
    assert_eq!(std::fs::read(at(r, BIN)).unwrap(), fake_binary("local"));
    // Uninstall puts the original back.
    let out = script("uninstall.sh", r, &[], &["--force"]);
    assert_eq!(out.code, 0);
    assert_eq!(
        std::fs::read(at(r, BIN)).unwrap(),
        b"someone else's binary\n"
    );
    assert!(!at(r, "/var/lib/aks-flex-node-install").exists());
}

#[test]
fn uninstall_force_unbootstraps_first_then_removes_exactly_the_manifest() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    // Something that was there before and is none of install.sh's business.
    std::fs::create_dir_all(at(r, "/etc/systemd/system")).unwrap();
    std::fs::write(at(r, "/etc/systemd/system/other.service"), b"[Unit]\n").unwrap();
    let pristine = snapshot(r);
    assert_eq!(install(r, &server, &["--version", VERSION]).code, 0);
    // The operator's config and a bootstrapped node's journal (written by the agent, not install.sh).
    std::fs::write(at(r, "/etc/aks-flex-node/config.json"), b"{}\n").unwrap();
    std::fs::create_dir_all(at(r, "/var/lib/aks-flex-node")).unwrap();
    std::fs::write(at(r, "/var/lib/aks-flex-node/journal.json"), b"{}\n").unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let log_path = log.path().to_str().unwrap().to_string();
    let out = script("uninstall.sh", r, &[("FAKE_LOG", &log_path)], &["--force"]);
    assert_eq!(out.code, 0);

    // unbootstrap ran once, with the config and the root, before anything was removed.
    let calls = std::fs::read_to_string(log.path()).unwrap();
    let root_s = r.canonicalize().unwrap().display().to_string();
    assert_eq!(
        calls,
        format!(
            "args: unbootstrap --config {root_s}/etc/aks-flex-node/config.json --root {root_s}\nbinary present\nunit present\n"
        )
    );
    // The agent is stopped first (skipped and said so here), before unbootstrap.
    let stop = out
        .stdout
        .find("systemctl stop aks-flex-node-agent")
        .unwrap();
    let unb = out.stdout.find("running: ").unwrap();
    assert!(stop < unb, "{}", out.stdout);
    for path in [BIN, UNIT, "/var/log/aks-flex-node"] {
        assert!(
            out.stdout.contains(&format!("removed {path}")),
            "{path}: {}",
            out.stdout
        );
    }
    // What is left: what was there before, plus the operator's config and the agent's state.
    let mut expected: Vec<String> = pristine.keys().cloned().collect();
    expected.extend(
        [
            "/etc/aks-flex-node",
            "/etc/aks-flex-node/config.json",
            "/var/lib/aks-flex-node",
            "/var/lib/aks-flex-node/journal.json",
            // Parents install.sh created with mkdir -p in this empty root (a real root has them).
            "/usr",
            "/usr/local",
            "/usr/local/bin",
            "/var",
            "/var/log",
            "/var/lib",
        ]
        .map(String::from),
    );
    expected.sort();
    let left: Vec<String> = snapshot(r).keys().cloned().collect();
    assert_eq!(left, expected);
    assert!(
        out.stdout.contains("kept /etc/aks-flex-node/"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("removed /var/lib/aks-flex-node-install/manifest"));
    assert!(
        out.stdout
            .contains("left alone (not installed by install.sh): /var/lib/aks-flex-node"),
        "{}",
        out.stdout
    );
    // The unrelated unit is untouched.
    assert_eq!(
        snapshot(r)["/etc/systemd/system/other.service"],
        pristine["/etc/systemd/system/other.service"]
    );
}

#[test]
fn uninstall_keeps_a_file_changed_after_install_and_fails() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(install(r, &server, &["--version", VERSION]).code, 0);
    let mut unit = unit_text();
    unit.extend_from_slice(b"# local edit\n");
    std::fs::write(at(r, UNIT), &unit).unwrap();
    let out = script("uninstall.sh", r, &[], &["--force"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&format!("kept {UNIT}")),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(at(r, UNIT)).unwrap(), unit);
    assert!(!at(r, BIN).exists());
    assert!(!at(r, "/etc/aks-flex-node").exists());
    // The manifest now lists only what is left.
    let m = manifest_entries(r);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0][3], UNIT);
}

#[test]
fn uninstall_removes_nothing_when_unbootstrap_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("bin");
    std::fs::write(&local, fake_binary("local")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(
        script("install.sh", r, &[], &["--binary", local.to_str().unwrap()]).code,
        0
    );
    std::fs::write(at(r, "/etc/aks-flex-node/config.json"), b"{}\n").unwrap();
    std::fs::create_dir_all(at(r, "/var/lib/aks-flex-node")).unwrap();
    std::fs::write(at(r, "/var/lib/aks-flex-node/journal.json"), b"{}\n").unwrap();
    let before = snapshot(r);
    let out = script("uninstall.sh", r, &[("FAKE_EXIT", "1")], &["--force"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("unbootstrap failed"), "{}", out.stderr);
    assert_eq!(snapshot(r), before);
    // Without --force and no terminal: refuses, changes nothing.
    let out = script("uninstall.sh", r, &[], &[]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("--force"), "{}", out.stderr);
    assert_eq!(snapshot(r), before);
}

#[test]
fn with_arc_agent_prints_microsofts_documented_install_and_runs_nothing_in_a_test_root() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("bin");
    std::fs::write(&local, fake_binary("local")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(at(r, "/etc")).unwrap();
    std::fs::write(
        at(r, "/etc/os-release"),
        "ID=ubuntu\nVERSION_ID=\"22.04\"\n",
    )
    .unwrap();
    // Dry run: the plan, nothing changed.
    let before = snapshot(r);
    let out = script(
        "install.sh",
        r,
        &[],
        &[
            "--binary",
            local.to_str().unwrap(),
            "--with-arc-agent",
            "--dry-run",
        ],
    );
    assert_eq!(out.code, 0);
    for want in [
        "https://packages.microsoft.com/config/ubuntu/22.04/packages-microsoft-prod.deb",
        "would run: dpkg -i",
        "would run: apt-get update",
        "would run: apt-get install -y azcmagent",
        "dry run: nothing was changed",
    ] {
        assert!(out.stdout.contains(want), "{want}: {}", out.stdout);
    }
    assert_eq!(snapshot(r), before);
    // Without --yes and no terminal, it will not install it silently.
    let out = script(
        "install.sh",
        r,
        &[],
        &["--binary", local.to_str().unwrap(), "--with-arc-agent"],
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("re-run with --yes"), "{}", out.stderr);
    // With --yes in a test root: apt-get is printed as skipped, never run, and nothing is recorded.
    let out = script(
        "install.sh",
        r,
        &[],
        &[
            "--binary",
            local.to_str().unwrap(),
            "--with-arc-agent",
            "--yes",
        ],
    );
    assert_eq!(out.code, 0);
    assert!(
        out.stdout
            .contains("is not /): apt-get install -y azcmagent"),
        "{}",
        out.stdout
    );
    assert!(manifest_entries(r).iter().all(|e| e[0] != "pkg"));
}

#[test]
fn dry_run_changes_nothing() {
    let rel = Release::new();
    let server = serve(rel.dir.path());
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &server, &["--dry-run"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout.contains(&format!("would install {BIN}")),
        "{}",
        out.stdout
    );
    assert!(snapshot(root.path()).is_empty());
}

#[test]
fn scripts_are_shellcheck_clean() {
    require_program(&["shellcheck", "--version"], "shellcheck");
    let out = Command::new("shellcheck")
        .arg("-x")
        .arg(repo().join("scripts/install.sh"))
        .arg(repo().join("scripts/uninstall.sh"))
        .arg(repo().join("packaging/dist.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    require_program(&["systemd-analyze", "--version"], "systemd");
    require(
        Path::new("/lib/systemd/system/sysinit.target").exists(),
        "the machine's system units in /lib/systemd/system (Debian package systemd)",
    );
    // A root with the machine's system units (targets the unit refers to) and a stand-in binary.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(at(r, "/lib/systemd")).unwrap();
    let cp = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(at(r, "/lib/systemd/"))
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::create_dir_all(at(r, "/usr/local/bin")).unwrap();
    std::fs::write(at(r, BIN), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(at(r, BIN), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(at(r, "/etc/systemd/system")).unwrap();
    std::fs::write(at(r, UNIT), unit_text()).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", r.display()))
        .arg("aks-flex-node-agent.service")
        .output()
        .unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && msg.trim().is_empty(), "{msg}");
}
