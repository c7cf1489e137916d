//! `aks-flex-node preflight` and bootstrap's preflight, through the real binary: sandbox roots with staged
//! host files, and the Azure checks against the emulator on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::Path;

use azure_emulator::scenario::{self, Scenario};

use crate::support::azure::{azcmagent_bin, cluster_id, contributor_on_rg, rg_scope, World};
use crate::support::tree::{snapshot, under, Stamps, Tree};
use crate::support::{bin, config_fixture, run, sandbox, Run};

/// Stages a host file under the sandbox root.
fn stage(root: &Path, path: &str, content: &str) {
    crate::support::put(root, path, content, 0o644);
}

const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
/// Something listening on 0.0.0.0:10250.
const TCP_10250: &str = "   0: 00000000:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n";

/// A root staged like a good Ubuntu 24.04 node.
fn good_node(root: &Path) {
    stage(
        root,
        "/etc/os-release",
        "ID=ubuntu\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\n",
    );
    stage(root, "/proc/cpuinfo", "processor\t: 0\n\nprocessor\t: 1\n");
    stage(root, "/proc/meminfo", "MemTotal:        4014000 kB\n");
    stage(
        root,
        "/proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n",
    );
    stage(
        root,
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory pids\n",
    );
    std::fs::create_dir_all(root.join("run/systemd/system")).unwrap();
    stage(root, "/proc/net/tcp", TCP_HEADER);
    stage(root, "/proc/net/tcp6", TCP_HEADER);
    stage(
        root,
        "/var/lib/dpkg/status",
        "Package: bash\nStatus: install ok installed\n",
    );
}

/// Host checks only (no Azure call): `--skip-phase identity`.
fn preflight_host(root: &Path, extra: &[&str]) -> Run {
    run(sandbox(
        root,
        &config_fixture("seed-example.json"),
        &["preflight", "--skip-phase", "identity"],
    )
    .args(extra))
}

#[test]
fn a_good_node_passes_with_exit_0_and_json_lists_every_check() {
    let d = tempfile::tempdir().unwrap();
    good_node(d.path());
    let r = preflight_host(d.path(), &[]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(r.stdout.contains("PASS    OS"), "{}", r.stdout);
    assert!(
        r.stdout.contains("Preflight passed: 0 errors"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("skipped: the identity phase is skipped (--skip-phase identity)"),
        "{}",
        r.stdout
    );

    let r = preflight_host(d.path(), &["-o", "json"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["apiVersion"], "aks-flex-node/v1");
    assert_eq!(v["kind"], "PreflightReport");
    let checks = v["checks"].as_array().unwrap();
    let by_name: BTreeMap<&str, &serde_json::Value> = checks
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c))
        .collect();
    for name in [
        "OS",
        "Arch",
        "CPU",
        "Memory",
        "DiskSpace",
        "Swap",
        "CgroupVersion",
        "CgroupDriver",
        "Port-10250",
        "Port-10248",
        "Port-1338",
        "RequiredPrograms",
        "ConflictingPackages",
        "ArcAgent",
        "ArcServices",
        "AzureEndpoints",
        "ClockSkew",
        "AzureLogin",
        "AzurePermissions",
        "AzureUnbootstrapPermissions",
        "ClusterAzureRBAC",
    ] {
        let c = by_name
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        for key in ["severity", "status", "message"] {
            assert!(c[key].is_string(), "{name}.{key}: {c}");
        }
        assert!(
            ["error", "warning"].contains(&c["severity"].as_str().unwrap()),
            "{c}"
        );
    }
    assert_eq!(by_name["Port-10250"]["status"], "pass");
    assert_eq!(by_name["AzureLogin"]["status"], "skipped");
    // Nothing was written under the root: preflight changes nothing.
    assert!(!d.path().join("var/lib/aks-flex-node").exists());
}

#[test]
fn errors_exit_1_and_ignored_errors_are_shown_as_warnings() {
    let d = tempfile::tempdir().unwrap();
    good_node(d.path());
    stage(
        d.path(),
        "/proc/net/tcp",
        &format!("{TCP_HEADER}{TCP_10250}"),
    );
    let r = preflight_host(d.path(), &[]);
    assert_eq!(r.code, 1, "{}", r.text());
    assert!(r.stdout.contains("FAIL    Port-10250"), "{}", r.stdout);
    assert!(
        r.stdout.contains("fix: find it with `ss -ltnp"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("--ignore-preflight-errors=Port-10250"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("Port-10250"), "{}", r.stderr);

    // Named (any case), repeated, or all: exit 0, the check still shown as ignored.
    for flags in [
        &["--ignore-preflight-errors=port-10250"][..],
        &["--ignore-preflight-errors", "Swap,PORT-10250"][..],
        &[
            "--ignore-preflight-errors=Swap",
            "--ignore-preflight-errors=Port-10250",
        ][..],
        &["--ignore-preflight-errors=all"][..],
    ] {
        let r = preflight_host(d.path(), flags);
        assert_eq!(r.code, 0, "{flags:?}: {}", r.text());
        assert!(r.stdout.contains("IGNORED Port-10250"), "{}", r.stdout);
    }
    let r = preflight_host(d.path(), &["-o", "json", "--ignore-preflight-errors=all"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let port = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Port-10250")
        .unwrap();
    assert_eq!(port["status"], "ignored");
    assert_eq!(port["severity"], "error");
    // Ignoring another check does not help.
    assert_eq!(
        preflight_host(d.path(), &["--ignore-preflight-errors=Swap"]).code,
        1
    );
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    assert_eq!(preflight_host(d.path(), &["-o", "yaml"]).code, 2);
    assert_eq!(preflight_host(d.path(), &["--skip-phase", "nope"]).code, 2);
    let r = run(bin()
        .args([
            "preflight",
            "--config",
            "/nonexistent/config.json",
            "--root",
        ])
        .arg(d.path()));
    assert_eq!(r.code, 2, "{}", r.text());
}

/// Every entry under `root` (a snapshot to compare), without the agent's own log (`/var/log/aks-flex-node`,
/// opened before anything runs).
fn snapshot_root(root: &Path) -> Tree {
    snapshot(root, Stamps::No, &["/var/log"])
}

#[test]
fn bootstrap_refuses_with_nothing_changed_until_the_error_is_ignored() {
    let d = tempfile::tempdir().unwrap();
    good_node(d.path());
    stage(
        d.path(),
        "/proc/net/tcp",
        &format!("{TCP_HEADER}{TCP_10250}"),
    );
    stage(
        d.path(),
        "/etc/fstab",
        "/dev/sda1 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n",
    );
    let before = snapshot_root(d.path());
    let bootstrap = |extra: &[&str]| {
        run(sandbox(
            d.path(),
            &config_fixture("seed-example.json"),
            &["bootstrap", "--only", "SystemConfigured"],
        )
        .args(extra))
    };
    let r = bootstrap(&[]);
    assert_eq!(r.code, 1, "{}", r.text());
    for needle in [
        "preflight found 1 error(s); nothing was changed",
        "- Port-10250: port 10250 (kubelet) is in use by another program",
        "fix: find it with `ss -ltnp 'sport = :10250'`",
        "--ignore-preflight-errors=Port-10250",
    ] {
        assert!(r.stderr.contains(needle), "{needle}: {}", r.stderr);
    }
    // Not one file under the root changed (no journal, no sysctl file, fstab untouched), and the
    // sandbox recorded no command.
    assert_eq!(snapshot_root(d.path()), before);

    let r = bootstrap(&["--ignore-preflight-errors=Port-10250"]);
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(d.path().join("etc/sysctl.d").exists());
    // The re-run on the now converged root passes its preflight and changes nothing.
    let after = snapshot_root(d.path());
    let r = bootstrap(&["--ignore-preflight-errors=Port-10250"]);
    assert_eq!(r.code, 0, "{}", r.text());
    let again = snapshot_root(d.path());
    let changed: Vec<&String> = again
        .iter()
        .filter(|(p, c)| after.get(*p) != Some(c))
        .map(|(p, _)| p)
        .collect();
    assert!(
        changed.iter().all(|p| under(p, "/var/lib/aks-flex-node")),
        "{changed:?}"
    );
}

#[test]
fn bootstrap_warns_about_swap_and_goes_ahead() {
    let d = tempfile::tempdir().unwrap();
    good_node(d.path());
    stage(
        d.path(),
        "/proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 4194300 0 -2\n",
    );
    let r = run(&mut sandbox(
        d.path(),
        &config_fixture("seed-example.json"),
        &["bootstrap", "--only", "SystemConfigured"],
    ));
    assert_eq!(r.code, 0, "{}", r.text());
    assert!(
        r.stderr.contains("preflight: swap is on (/swap.img)"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------------
// Azure checks against the emulator

const HOST: &str = "node-p";

async fn world(scenario: Scenario) -> World {
    World::start(scenario, HOST).await
}

/// `preflight -o json` (Azure checks only) with the environment the agent runs with.
fn preflight(
    w: &World,
    secret: &str,
    azcmagent: &Path,
) -> (Run, BTreeMap<String, serde_json::Value>) {
    let r = run(w.command(secret, azcmagent).args([
        "preflight",
        "-o",
        "json",
        "--skip-phase",
        "installation",
        "--skip-phase",
        "activation",
    ]));
    let v: serde_json::Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
    let checks = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c.clone()))
        .collect();
    assert!(
        !r.text().contains(scenario::DEMO_SP_SECRET) && !r.text().contains("eyJ"),
        "{}",
        r.text()
    );
    (r, checks)
}

fn status(checks: &BTreeMap<String, serde_json::Value>, name: &str) -> String {
    checks[name]["status"].as_str().unwrap().to_string()
}

/// The demo scenario plus Contributor on the resource group (what unbootstrap's machine delete needs).
fn full_rights() -> Scenario {
    let mut s = Scenario::demo();
    s.role_assignments.push(contributor_on_rg());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_checks_pass_for_an_identity_with_every_right() {
    let w = world(full_rights()).await;
    let (r, c) = preflight(&w, scenario::DEMO_SP_SECRET, &azcmagent_bin());
    assert_eq!(r.code, 0, "{}", r.text());
    for name in [
        "ArcAgent",
        "AzureEndpoints",
        "ClockSkew",
        "AzureLogin",
        "AzurePermissions",
        "AzureUnbootstrapPermissions",
        "ClusterAzureRBAC",
    ] {
        assert_eq!(status(&c, name), "pass", "{name}: {}", r.text());
    }
    assert!(c["ArcAgent"]["message"]
        .as_str()
        .unwrap()
        .starts_with("azcmagent "));
    assert_eq!(status(&c, "ArcServices"), "skipped");
    // Host checks are skipped when only the identity phase runs.
    assert_eq!(status(&c, "Swap"), "skipped");
    // Reads only: nothing was written in Azure.
    assert!(w.writes_since(0).is_empty(), "{:?}", w.writes_since(0));
    assert!(w.emu.request_log().iter().any(|e| e
        .path
        .ends_with("/providers/Microsoft.Authorization/permissions")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_delete_permission_is_named() {
    // The demo identity may onboard and assign roles, but not delete the Arc machine.
    let w = world(Scenario::demo()).await;
    let (r, c) = preflight(&w, scenario::DEMO_SP_SECRET, &azcmagent_bin());
    let u = &c["AzureUnbootstrapPermissions"];
    assert_eq!(u["status"], "warn", "{}", r.text());
    let msg = u["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "Microsoft.HybridCompute/machines/delete on {}",
            rg_scope()
        )),
        "{msg}"
    );
    assert!(
        u["remediation"]
            .as_str()
            .unwrap()
            .contains("Azure Connected Machine Resource Administrator"),
        "{u}"
    );
    assert_eq!(status(&c, "AzurePermissions"), "pass");
    // A warning: bootstrap may go ahead.
    assert_eq!(r.code, 0, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bootstrap_permission_fails_naming_the_action_and_scope() {
    let mut s = full_rights();
    // No User Access Administrator on the cluster: cannot assign (nor delete) role assignments.
    s.role_assignments.retain(|r| {
        let role = r.role.to_ascii_lowercase();
        !(role.contains("18d7d88d-d35e-4fb5-a5c3-7773c20a72d9")
            || role == "user access administrator")
    });
    let w = world(s).await;
    let (r, c) = preflight(&w, scenario::DEMO_SP_SECRET, &azcmagent_bin());
    assert_eq!(r.code, 1, "{}", r.text());
    let p = &c["AzurePermissions"];
    assert_eq!(p["status"], "fail");
    let msg = p["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "Microsoft.Authorization/roleAssignments/write on {} (to assign Reader to the Arc identity)",
            cluster_id()
        )),
        "{msg}"
    );
    assert!(
        !msg.contains("Microsoft.HybridCompute/machines/write"),
        "{msg}"
    );
    let u = c["AzureUnbootstrapPermissions"]["message"]
        .as_str()
        .unwrap();
    assert!(
        u.contains("Microsoft.Authorization/roleAssignments/delete"),
        "{u}"
    );
    assert!(r.stderr.contains("AzurePermissions"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_the_login_and_skips_what_needs_a_token() {
    let w = world(full_rights()).await;
    let (r, c) = preflight(&w, "not-the-secret", &azcmagent_bin());
    assert_eq!(r.code, 1, "{}", r.text());
    assert_eq!(status(&c, "AzureLogin"), "fail");
    assert!(!r.text().contains("not-the-secret"), "{}", r.text());
    for name in [
        "AzurePermissions",
        "AzureUnbootstrapPermissions",
        "ClusterAzureRBAC",
    ] {
        assert_eq!(status(&c, name), "skipped", "{name}");
        assert!(c[name]["message"]
            .as_str()
            .unwrap()
            .contains("see AzureLogin"));
    }
    // The endpoints still answered.
    assert_eq!(status(&c, "AzureEndpoints"), "pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_azure_rbac_and_a_missing_arc_agent_fail_with_their_fixes() {
    let mut s = full_rights();
    s.clusters[0].azure_rbac = false;
    let w = world(s).await;
    let (r, c) = preflight(
        &w,
        scenario::DEMO_SP_SECRET,
        Path::new("/nonexistent/azcmagent"),
    );
    assert_eq!(r.code, 1, "{}", r.text());
    let rbac = &c["ClusterAzureRBAC"];
    assert_eq!(rbac["status"], "fail");
    assert!(
        rbac["remediation"]
            .as_str()
            .unwrap()
            .contains("--enable-azure-rbac"),
        "{rbac}"
    );
    let arc = &c["ArcAgent"];
    assert_eq!(arc["status"], "fail");
    assert!(
        arc["remediation"]
            .as_str()
            .unwrap()
            .contains("install_linux_azcmagent.sh"),
        "{arc}"
    );
    assert!(r.stderr.contains("ArcAgent") && r.stderr.contains("ClusterAzureRBAC"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_fail() {
    let w = world(full_rights()).await;
    // A config pointing at a port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = w.config_json(scenario::DEMO_SP_SECRET);
    for endpoint in ["resourceManagerEndpoint", "activeDirectoryEndpoint"] {
        cfg["azure"][endpoint] = format!("http://127.0.0.1:{closed}").into();
    }
    let p = w.write_config("closed.json", &cfg);
    let r = run(sandbox(
        &w.root(),
        &p,
        &[
            "preflight",
            "-o",
            "json",
            "--skip-phase",
            "installation",
            "--skip-phase",
            "activation",
        ],
    )
    .env("AKS_FLEX_NODE_AZCMAGENT", azcmagent_bin())
    .env("AKS_FLEX_NODE_AZURE_TIME_SCALE", "0.01"));
    assert_eq!(r.code, 1, "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let e = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "AzureEndpoints")
        .unwrap();
    assert_eq!(e["status"], "fail", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("not reachable"),
        "{e}"
    );
}
