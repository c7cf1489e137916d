//! Host checks against sandbox roots with staged files: every check fails once and passes once.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::preflight::Status;

fn stage(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn mkdir(root: &Path, path: &str) {
    std::fs::create_dir_all(root.join(path.trim_start_matches('/'))).unwrap();
}

fn ctx(root: &Path) -> Context {
    Context::new(
        crate::engine::test_config(serde_json::json!({})),
        Arc::new(Host::new(root).unwrap()),
    )
    .unwrap()
}

/// Run one check with the context's current facts.
fn with<T>(c: &Context, f: impl FnOnce(&Facts) -> T) -> T {
    let journal = c.journal_snapshot();
    f(&Facts {
        host: &c.host,
        journal: &journal,
        config: &c.config,
    })
}

const TCP_HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

fn tcp_line(port: u16, state: &str) -> String {
    format!("   0: 00000000:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n")
}

fn tcp6_line(port: u16, state: &str) -> String {
    format!("   0: 00000000000000000000000000000000:{port:04X} 00000000000000000000000000000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n")
}

#[test]
fn os_ubuntu_lts_passes_others_warn_absent_is_skipped() {
    let d = tempfile::tempdir().unwrap();
    let c = ctx(d.path());
    assert_eq!(with(&c, os).status, Status::Skipped);
    stage(
        d.path(),
        "/etc/os-release",
        "NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_ID=\"24.04\"\nPRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\n",
    );
    let r = with(&c, os);
    assert_eq!(r.status, Status::Pass, "{r:?}");
    assert!(r.message.contains("Ubuntu 24.04.1 LTS"));
    stage(
        d.path(),
        "/etc/os-release",
        "ID=debian\nVERSION_ID=\"12\"\nPRETTY_NAME='Debian GNU/Linux 12 (bookworm)'\n",
    );
    let r = with(&c, os);
    assert_eq!((r.status, r.severity), (Status::Warn, Severity::Warning));
    assert!(
        r.message.contains("Debian GNU/Linux 12 (bookworm)"),
        "{r:?}"
    );
}

#[test]
fn arch_amd64_arm64_pass_others_fail() {
    assert_eq!(arch("linux", "x86_64").status, Status::Pass);
    assert_eq!(arch("linux", "aarch64").message, "linux/arm64");
    let r = arch("linux", "riscv64");
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("riscv64"));
    assert_eq!(arch("macos", "aarch64").status, Status::Fail);
}

#[test]
fn cpu_and_memory_minimums_are_warnings() {
    let d = tempfile::tempdir().unwrap();
    let c = ctx(d.path());
    assert_eq!(with(&c, cpus).status, Status::Skipped);
    assert_eq!(with(&c, memory).status, Status::Skipped);
    stage(
        d.path(),
        "/proc/cpuinfo",
        "processor\t: 0\nmodel name\t: x\n\n",
    );
    stage(
        d.path(),
        "/proc/meminfo",
        "MemTotal:        1000000 kB\nMemFree: 1 kB\n",
    );
    let (cpu, mem) = (with(&c, cpus), with(&c, memory));
    assert_eq!(
        (cpu.status, cpu.severity),
        (Status::Warn, Severity::Warning)
    );
    assert!(cpu.message.contains("1 CPU"), "{cpu:?}");
    assert_eq!(mem.status, Status::Warn);
    assert!(mem.message.contains("976 MiB"), "{mem:?}");
    stage(
        d.path(),
        "/proc/cpuinfo",
        "processor\t: 0\n\nprocessor\t: 1\n\n",
    );
    stage(d.path(), "/proc/meminfo", "MemTotal:        2014000 kB\n");
    assert_eq!(with(&c, cpus).status, Status::Pass);
    assert_eq!(with(&c, memory).status, Status::Pass);
}

#[test]
fn disk_space_threshold_and_sandbox_lookup() {
    let w = Path::new("/var/lib");
    assert_eq!(disk_from(10_000_000_000, w).status, Status::Warn);
    assert!(disk_from(10_000_000_000, w).message.contains("10 GB free"));
    assert_eq!(disk_from(30_000_000_000, w).status, Status::Pass);
    // /var/lib is absent in the sandbox: its nearest existing parent (the root) is measured.
    let d = tempfile::tempdir().unwrap();
    let r = with(&ctx(d.path()), disk);
    assert!(matches!(r.status, Status::Pass | Status::Warn), "{r:?}");
    assert!(r.message.contains("GB free for /"), "{r:?}");
}

#[test]
fn swap_on_is_a_warning_because_bootstrap_turns_it_off() {
    let d = tempfile::tempdir().unwrap();
    stage(
        d.path(),
        "/proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 4194300 0 -2\n",
    );
    let r = with(&ctx(d.path()), swap);
    assert_eq!((r.status, r.severity), (Status::Warn, Severity::Warning));
    assert!(
        r.message.contains("/swap.img") && r.message.contains("swapoff"),
        "{r:?}"
    );
    let d = tempfile::tempdir().unwrap();
    stage(
        d.path(),
        "/proc/swaps",
        "Filename\tType\tSize\tUsed\tPriority\n",
    );
    assert_eq!(with(&ctx(d.path()), swap).status, Status::Pass);
}

#[test]
fn cgroup_version_v2_v1_and_missing_controllers() {
    let d = tempfile::tempdir().unwrap();
    let c = ctx(d.path());
    assert_eq!(with(&c, cgroup_version).status, Status::Skipped);
    mkdir(d.path(), "/sys/fs/cgroup/memory");
    let r = with(&c, cgroup_version);
    assert_eq!((r.status, r.severity), (Status::Warn, Severity::Warning));
    assert!(r.message.contains("cgroup v1"));
    stage(
        d.path(),
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io pids\n",
    );
    let r = with(&c, cgroup_version);
    assert_eq!(r.status, Status::Fail);
    assert!(r.message.contains("memory"), "{r:?}");
    stage(
        d.path(),
        "/sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    );
    assert_eq!(with(&c, cgroup_version).status, Status::Pass);
}

#[test]
fn cgroup_driver_needs_systemd_as_init() {
    let d = tempfile::tempdir().unwrap();
    let c = ctx(d.path());
    mkdir(d.path(), "/run/user");
    assert_eq!(with(&c, cgroup_driver).status, Status::Skipped);
    let r = cgroup_driver_from(false);
    assert_eq!((r.status, r.severity), (Status::Fail, Severity::Error));
    assert!(r.message.contains("/run/systemd/system"));
    mkdir(d.path(), "/run/systemd/system");
    assert_eq!(with(&c, cgroup_driver).status, Status::Pass);
}

fn port(results: &[CheckResult], name: &str) -> CheckResult {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no {name} in {results:?}"))
        .clone()
}

#[test]
fn ports_held_by_another_program_fail_free_ones_pass() {
    let d = tempfile::tempdir().unwrap();
    let c = ctx(d.path());
    let r = with(&c, ports);
    let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Port-10250", "Port-10248", "Port-1338"]);
    assert!(r.iter().all(|r| r.status == Status::Skipped), "{r:?}");
    // 10250 listening on IPv4, 10248 on IPv6, 1338 only in an established connection (not listening).
    stage(
        d.path(),
        "/proc/net/tcp",
        &format!(
            "{TCP_HEADER}{}{}",
            tcp_line(10250, "0A"),
            tcp_line(1338, "01")
        ),
    );
    stage(
        d.path(),
        "/proc/net/tcp6",
        &format!("{TCP_HEADER}{}", tcp6_line(10248, "0A")),
    );
    let r = with(&c, ports);
    let p = port(&r, "Port-10250");
    assert_eq!((p.status, p.severity), (Status::Fail, Severity::Error));
    assert!(p.message.contains("another program"), "{p:?}");
    assert!(p.remediation.contains("ss -ltnp 'sport = :10250'"), "{p:?}");
    assert_eq!(port(&r, "Port-10248").status, Status::Fail);
    assert_eq!(port(&r, "Port-1338").status, Status::Pass);
}

#[test]
fn ports_held_by_the_kubelet_and_containerd_this_agent_manages_pass() {
    let d = tempfile::tempdir().unwrap();
    stage(
        d.path(),
        "/proc/net/tcp",
        &format!(
            "{TCP_HEADER}{}{}",
            tcp_line(10248, "0A"),
            tcp_line(1338, "0A")
        ),
    );
    stage(
        d.path(),
        "/proc/net/tcp6",
        &format!("{TCP_HEADER}{}", tcp6_line(10250, "0A")),
    );
    let c = ctx(d.path());
    assert!(with(&c, ports).iter().all(|r| r.status == Status::Fail));
    // The journal records the agent's kubelet and containerd units: the ports are theirs.
    c.record_original(
        "KubeletInstaller",
        Path::new(crate::render::kubelet::UNIT_PATH),
    )
    .unwrap();
    c.record_original(
        "ContainerdInstaller",
        Path::new(crate::render::containerd::UNIT_PATH),
    )
    .unwrap();
    // A fresh context reads the journal from disk, as a re-run would.
    let c = ctx(d.path());
    let r = with(&c, ports);
    assert!(r.iter().all(|r| r.status == Status::Pass), "{r:?}");
    assert!(port(&r, "Port-10250")
        .message
        .contains("this agent manages"));
}

#[test]
fn the_metrics_port_follows_the_config() {
    let d = tempfile::tempdir().unwrap();
    let c = Context::new(
        crate::engine::test_config(
            serde_json::json!({"containerd": {"metricsAddress": "127.0.0.1:9338"}}),
        ),
        Arc::new(Host::new(d.path()).unwrap()),
    )
    .unwrap();
    stage(
        d.path(),
        "/proc/net/tcp",
        &format!("{TCP_HEADER}{}", tcp_line(9338, "0A")),
    );
    let r = with(&c, ports);
    assert_eq!(port(&r, "Port-9338").status, Status::Fail);
    assert!(!r.iter().any(|r| r.name == "Port-1338"));
}

#[test]
fn required_programs_missing_fail_with_the_package_to_install() {
    let d = tempfile::tempdir().unwrap();
    let c = ctx(d.path());
    assert_eq!(with(&c, required_programs).status, Status::Pass);
    c.host.sandbox_mark_absent("iptables").unwrap();
    c.host.sandbox_mark_absent("sysctl").unwrap();
    let r = with(&c, required_programs);
    assert_eq!((r.status, r.severity), (Status::Fail, Severity::Error));
    assert!(
        r.message.contains("iptables") && r.message.contains("sysctl"),
        "{r:?}"
    );
    assert!(!r.message.contains("mount"), "{r:?}");
    assert!(
        r.remediation.contains("apt-get install iptables procps"),
        "{r:?}"
    );
}

const DPKG_STATUS: &str =
    "Package: containerd\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.6.20\n\n\
Package: kubectl\nStatus: install ok installed\nArchitecture: amd64\n\n\
Package: runc\nStatus: deinstall ok config-files\nArchitecture: amd64\n\n\
Package: bash\nStatus: install ok installed\nArchitecture: amd64\n";

#[test]
fn dpkg_status_parsing_keeps_installed_packages_only() {
    let p = parse_dpkg_installed(DPKG_STATUS);
    let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["containerd", "kubectl", "bash"]);
    assert_eq!(p[0].1, "amd64");
}

#[test]
fn a_dpkg_containerd_the_agent_would_overwrite_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let c = ctx(d.path());
    let r = with(&c, conflicting_packages);
    assert_eq!(r.status, Status::Skipped);
    assert!(r.message.contains("no dpkg database"));
    stage(d.path(), "/var/lib/dpkg/status", DPKG_STATUS);
    stage(
        d.path(),
        "/var/lib/dpkg/info/containerd.list",
        "/.\n/usr\n/usr/bin\n/usr/bin/containerd\n/usr/bin/ctr\n/usr/share/doc/containerd\n",
    );
    // kubectl lives in /usr/bin there, not where the agent installs its own: no conflict.
    stage(
        d.path(),
        "/var/lib/dpkg/info/kubectl.list",
        "/usr/bin/kubectl\n",
    );
    let r = with(&c, conflicting_packages);
    assert_eq!((r.status, r.severity), (Status::Fail, Severity::Error));
    assert!(
        r.message
            .contains("containerd (/usr/bin/containerd, /usr/bin/ctr)"),
        "{r:?}"
    );
    assert!(
        !r.message.contains("kubectl") && !r.message.contains("runc ("),
        "{r:?}"
    );
    assert_eq!(
        r.remediation,
        "remove them first: apt-get remove containerd"
    );
    assert!(!r.message.contains("drop-ins"), "{r:?}");
    // Once the agent took those files over (journaled), a re-run only warns.
    c.record_original("ContainerdInstaller", Path::new("/usr/bin/containerd"))
        .unwrap();
    c.record_original("ContainerdInstaller", Path::new("/usr/bin/ctr"))
        .unwrap();
    let r = with(&c, conflicting_packages);
    assert_eq!(
        (r.status, r.severity),
        (Status::Warn, Severity::Warning),
        "{r:?}"
    );
    assert!(r.remediation.contains("apt-mark hold"));
}

#[test]
fn a_dpkg_kubelet_conflicts_through_its_unit_even_without_shared_files() {
    let d = tempfile::tempdir().unwrap();
    stage(
        d.path(),
        "/var/lib/dpkg/status",
        "Package: kubelet\nStatus: install ok installed\nArchitecture: arm64\n",
    );
    stage(
        d.path(),
        "/var/lib/dpkg/info/kubelet:arm64.list",
        "/usr/bin/kubelet\n/lib/systemd/system/kubelet.service\n",
    );
    let r = with(&ctx(d.path()), conflicting_packages);
    assert_eq!(r.status, Status::Fail, "{r:?}");
    assert!(r.remediation.ends_with("apt-get remove kubelet"), "{r:?}");
    assert!(r.message.contains("unit drop-ins"), "{r:?}");
    // No candidate package at all: pass.
    stage(
        d.path(),
        "/var/lib/dpkg/status",
        "Package: bash\nStatus: install ok installed\n",
    );
    assert_eq!(
        with(&ctx(d.path()), conflicting_packages).status,
        Status::Pass
    );
}

/// A root staged like a good Ubuntu 24.04 node.
pub(crate) fn stage_good_node(root: &Path) {
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
    mkdir(root, "/run/systemd/system");
    stage(root, "/proc/net/tcp", TCP_HEADER);
    stage(root, "/proc/net/tcp6", TCP_HEADER);
    stage(
        root,
        "/var/lib/dpkg/status",
        "Package: bash\nStatus: install ok installed\n",
    );
}

#[test]
fn a_good_node_has_no_error_and_every_check_is_named_once() {
    let d = tempfile::tempdir().unwrap();
    stage_good_node(d.path());
    let r = run(&ctx(d.path()));
    let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
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
            "ConflictingPackages"
        ]
    );
    for c in &r {
        // DiskSpace depends on the test machine's disk.
        if c.name != "DiskSpace" {
            assert_eq!(c.status, Status::Pass, "{c:?}");
        }
    }
}

proptest::proptest! {
    /// Any line of /proc/net/tcp{,6} yields its port exactly when its state is LISTEN (0A).
    #[test]
    fn proc_net_tcp_lists_exactly_the_listening_ports(
        entries in proptest::collection::vec((proptest::num::u16::ANY, 1u8..=12, proptest::bool::ANY), 0..20)
    ) {
        let mut text = TCP_HEADER.to_string();
        let mut want = Vec::new();
        for (port, state, v6) in &entries {
            let st = format!("{state:02X}");
            text.push_str(&if *v6 { tcp6_line(*port, &st) } else { tcp_line(*port, &st) });
            if *state == 0x0A {
                want.push(*port);
            }
        }
        proptest::prop_assert_eq!(parse_listening_ports(&text), want);
    }
}
