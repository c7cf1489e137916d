//! Host checks: OS, architecture, CPUs, memory, disk, swap, cgroups, ports, programs, conflicting packages.
//!
//! Every fact is read through the [`Host`] boundary (files under its root, `find_program`, the swap list),
//! so a sandbox root sees a test's staged `/etc/os-release`, `/proc/meminfo`, `/proc/net/tcp`, ... In a
//! sandbox, a fact that was not staged makes its check `skipped` rather than failed.

use std::path::{Path, PathBuf};

use super::{CheckResult, Severity};
use crate::config::Config;
use crate::engine::{Context, Journal};
use crate::host::Host;

/// Warn below this many CPUs (kubeadm's minimum).
pub const MIN_CPUS: usize = 2;
/// Warn below this much memory, in MiB: the README asks for 2 GB; a 2 GB machine reports a little less
/// (the kernel keeps some), hence kubeadm's 1700 MB.
pub const MIN_MEMORY_MIB: u64 = 1700;
/// Warn below this much free disk space for `/var/lib` (containerd's images, the kubelet's pods), in GB
/// (the README's 25 GB).
pub const MIN_DISK_GB: u64 = 25;
/// Where the disk space is looked at.
pub const DATA_DIR: &str = "/var/lib";

/// The host checks' names and severities as listed when they are all skipped (the port checks then
/// appear as one `Ports` line).
pub const NAMES: [(&str, Severity); 11] = [
    ("OS", Severity::Warning),
    ("Arch", Severity::Error),
    ("CPU", Severity::Warning),
    ("Memory", Severity::Warning),
    ("DiskSpace", Severity::Warning),
    ("Swap", Severity::Warning),
    ("CgroupVersion", Severity::Error),
    ("CgroupDriver", Severity::Error),
    ("Ports", Severity::Error),
    ("RequiredPrograms", Severity::Error),
    ("ConflictingPackages", Severity::Error),
];

/// Everything the host checks look at.
pub struct Facts<'a> {
    pub host: &'a Host,
    pub journal: &'a Journal,
    pub config: &'a Config,
}

/// Run every host check.
pub fn run(ctx: &Context) -> Vec<CheckResult> {
    let journal = ctx.journal_snapshot();
    let f = Facts {
        host: &ctx.host,
        journal: &journal,
        config: &ctx.config,
    };
    let mut out = vec![
        os(&f),
        arch(std::env::consts::OS, std::env::consts::ARCH),
        cpus(&f),
        memory(&f),
        disk(&f),
        swap(&f),
        cgroup_version(&f),
        cgroup_driver(&f),
    ];
    out.extend(ports(&f));
    out.push(required_programs(&f));
    out.push(conflicting_packages(&f));
    out
}

/// A file's text: `Ok(None)` when absent, `Err(reason)` when it cannot be read (permissions, ...).
fn read(f: &Facts, path: &str) -> Result<Option<String>, String> {
    f.host
        .fs
        .read_to_string(Path::new(path))
        .map_err(|e| format!("cannot read {path}: {e}"))
}

/// The skip reason for an absent input file.
fn absent(f: &Facts, path: &str) -> String {
    if f.host.is_sandbox() {
        format!("{path} is not in the sandbox root")
    } else {
        format!("{path} does not exist")
    }
}

// ---------------------------------------------------------------------------------------------------
// OS and hardware

/// `KEY=value` pairs of an os-release file (values unquoted).
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// `OS`: Ubuntu 22.04/24.04 are supported first; other distributions get a warning.
pub fn os(f: &Facts) -> CheckResult {
    const NAME: &str = "OS";
    let sev = Severity::Warning;
    let text = match read(f, "/etc/os-release") {
        Ok(Some(t)) => t,
        Ok(None) => match read(f, "/usr/lib/os-release") {
            Ok(Some(t)) => t,
            Ok(None) => return CheckResult::skipped(NAME, sev, absent(f, "/etc/os-release")),
            Err(e) => return CheckResult::skipped(NAME, sev, e),
        },
        Err(e) => return CheckResult::skipped(NAME, sev, e),
    };
    let kv = parse_os_release(&text);
    let get = |k: &str| {
        kv.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let (id, version) = (get("ID"), get("VERSION_ID"));
    let pretty = match get("PRETTY_NAME") {
        "" => format!("{id} {version}"),
        p => p.to_string(),
    };
    if id == "ubuntu" && matches!(version, "22.04" | "24.04") {
        CheckResult::pass(NAME, sev, format!("{pretty} (supported)"))
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!("{pretty} is not one of the tested distributions (Ubuntu 22.04, 24.04); other systemd distributions are likely to work"),
            "use Ubuntu 22.04 or 24.04 for a supported setup, or go ahead knowing this distribution is untested",
        )
    }
}

/// `Arch`: Linux on amd64 or arm64 (the artifacts exist for those only).
pub fn arch(os: &str, arch: &str) -> CheckResult {
    const NAME: &str = "Arch";
    let sev = Severity::Error;
    let go = match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    if os == "linux" && matches!(go, "amd64" | "arm64") {
        CheckResult::pass(NAME, sev, format!("linux/{go}"))
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!("{os}/{go} is not supported: the agent installs linux/amd64 and linux/arm64 components only"),
            "use a Linux amd64 or arm64 machine",
        )
    }
}

/// `CPU`: at least [`MIN_CPUS`] (a warning: a worker runs with fewer, slowly).
pub fn cpus(f: &Facts) -> CheckResult {
    const NAME: &str = "CPU";
    let sev = Severity::Warning;
    let text = match read(f, "/proc/cpuinfo") {
        Ok(Some(t)) => t,
        Ok(None) => return CheckResult::skipped(NAME, sev, absent(f, "/proc/cpuinfo")),
        Err(e) => return CheckResult::skipped(NAME, sev, e),
    };
    let n = text
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    if n >= MIN_CPUS {
        CheckResult::pass(NAME, sev, format!("{n} CPUs"))
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!("{n} CPU(s); at least {MIN_CPUS} are recommended"),
            format!("give the machine at least {MIN_CPUS} CPUs"),
        )
    }
}

/// `MemTotal` of `/proc/meminfo`, in KiB.
pub fn parse_mem_total_kib(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `Memory`: at least [`MIN_MEMORY_MIB`].
pub fn memory(f: &Facts) -> CheckResult {
    const NAME: &str = "Memory";
    let sev = Severity::Warning;
    let text = match read(f, "/proc/meminfo") {
        Ok(Some(t)) => t,
        Ok(None) => return CheckResult::skipped(NAME, sev, absent(f, "/proc/meminfo")),
        Err(e) => return CheckResult::skipped(NAME, sev, e),
    };
    let Some(kib) = parse_mem_total_kib(&text) else {
        return CheckResult::skipped(NAME, sev, "/proc/meminfo has no MemTotal line");
    };
    let mib = kib / 1024;
    if mib >= MIN_MEMORY_MIB {
        CheckResult::pass(NAME, sev, format!("{mib} MiB"))
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!("{mib} MiB of memory; at least {MIN_MEMORY_MIB} MiB (2 GB) are recommended"),
            "give the machine at least 2 GB of memory",
        )
    }
}

/// `DiskSpace` from a number of free bytes (split out so the threshold is testable).
pub fn disk_from(free_bytes: u64, where_: &Path) -> CheckResult {
    const NAME: &str = "DiskSpace";
    let sev = Severity::Warning;
    let gb = free_bytes / 1_000_000_000;
    if gb >= MIN_DISK_GB {
        CheckResult::pass(NAME, sev, format!("{gb} GB free for {}", where_.display()))
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!(
                "{gb} GB free for {} (container images and pods); at least {MIN_DISK_GB} GB are recommended",
                where_.display()
            ),
            format!("free up or add disk space under {DATA_DIR}"),
        )
    }
}

/// `DiskSpace`: free space of the filesystem holding [`DATA_DIR`] (or its nearest existing parent).
pub fn disk(f: &Facts) -> CheckResult {
    let sev = Severity::Warning;
    let mut p = PathBuf::from(DATA_DIR);
    let resolved = loop {
        match f.host.fs.resolve(&p) {
            Ok(r) if r.exists() => break r,
            _ => {}
        }
        if !p.pop() {
            return CheckResult::skipped("DiskSpace", sev, format!("cannot resolve {DATA_DIR}"));
        }
    };
    match free_bytes(&resolved) {
        Ok(free) => disk_from(free, &p),
        Err(e) => CheckResult::skipped("DiskSpace", sev, format!("statvfs {}: {e}", p.display())),
    }
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail * st.f_frsize)
}

/// `Swap`: on is only a warning, because bootstrap turns it off itself (`SystemConfigured`: `swapoff -a`
/// and the swap lines of `/etc/fstab` commented out; unbootstrap turns it back on).
pub fn swap(f: &Facts) -> CheckResult {
    const NAME: &str = "Swap";
    let sev = Severity::Warning;
    match f.host.active_swaps() {
        Err(e) => CheckResult::skipped(NAME, sev, format!("cannot read /proc/swaps: {e}")),
        Ok(s) if s.is_empty() => CheckResult::pass(NAME, sev, "swap is off"),
        Ok(s) => CheckResult::problem(
            NAME,
            sev,
            format!(
                "swap is on ({}); bootstrap turns it off (swapoff -a) and comments it out of /etc/fstab, which the kubelet needs",
                s.join(", ")
            ),
            "nothing to do if that is fine (unbootstrap turns it back on); otherwise plan the machine's memory without swap",
        ),
    }
}

// ---------------------------------------------------------------------------------------------------
// cgroups

/// `CgroupVersion`: v2 with the cpu, memory and pids controllers; v1 is a warning (deprecated).
pub fn cgroup_version(f: &Facts) -> CheckResult {
    const NAME: &str = "CgroupVersion";
    let controllers = "/sys/fs/cgroup/cgroup.controllers";
    match read(f, controllers) {
        Err(e) => return CheckResult::skipped(NAME, Severity::Error, e),
        Ok(Some(text)) => {
            let have: Vec<&str> = text.split_whitespace().collect();
            let missing: Vec<&str> = ["cpu", "memory", "pids"]
                .into_iter()
                .filter(|c| !have.contains(c))
                .collect();
            return if missing.is_empty() {
                CheckResult::pass(NAME, Severity::Error, "cgroup v2 (cpu, memory, pids)")
            } else {
                CheckResult::problem(
                    NAME,
                    Severity::Error,
                    format!(
                        "cgroup v2 without the {} controller(s), which the kubelet needs",
                        missing.join(", ")
                    ),
                    "enable them on the kernel command line (e.g. cgroup_enable=memory) and reboot",
                )
            };
        }
        Ok(None) => {}
    }
    let v1 = ["memory", "cpu"].iter().any(|c| {
        f.host
            .fs
            .exists(&Path::new("/sys/fs/cgroup").join(c))
            .unwrap_or(false)
    });
    if v1 {
        CheckResult::problem(
            NAME,
            Severity::Warning,
            "cgroup v1: deprecated (maintenance mode from Kubernetes 1.31); the agent lets the kubelet start on it (failCgroupV1: false)",
            "boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1 on the kernel command line) when you can",
        )
    } else if f.host.is_sandbox() {
        CheckResult::skipped(NAME, Severity::Error, absent(f, "/sys/fs/cgroup"))
    } else {
        CheckResult::problem(
            NAME,
            Severity::Error,
            "no cgroup filesystem at /sys/fs/cgroup",
            "mount cgroup2 on /sys/fs/cgroup (systemd does it at boot)",
        )
    }
}

/// `CgroupDriver`: containerd and the kubelet are configured with the systemd cgroup driver, which needs
/// systemd as init (`/run/systemd/system` exists, as `sd_booted()` checks). A sandbox root simulates
/// systemd, so there an absent `/run/systemd/system` skips the check.
pub fn cgroup_driver(f: &Facts) -> CheckResult {
    const NAME: &str = "CgroupDriver";
    match f.host.fs.exists(Path::new("/run/systemd/system")) {
        Err(e) => CheckResult::skipped(NAME, Severity::Error, e.to_string()),
        Ok(false) if f.host.is_sandbox() => CheckResult::skipped(
            NAME,
            Severity::Error,
            "sandbox root: systemd is simulated (/run/systemd/system is not in it)",
        ),
        Ok(booted) => cgroup_driver_from(booted),
    }
}

/// `CgroupDriver` from whether systemd is init.
pub fn cgroup_driver_from(systemd_booted: bool) -> CheckResult {
    const NAME: &str = "CgroupDriver";
    let sev = Severity::Error;
    if systemd_booted {
        CheckResult::pass(
            NAME,
            sev,
            "systemd is init: the systemd cgroup driver (kubelet, containerd) works",
        )
    } else {
        CheckResult::problem(
            NAME,
            sev,
            "systemd is not running as init (no /run/systemd/system): the kubelet and containerd use the systemd cgroup driver and systemd units",
            "run the agent on a machine booted with systemd",
        )
    }
}

// ---------------------------------------------------------------------------------------------------
// Ports

/// Listening TCP ports of a `/proc/net/tcp` or `/proc/net/tcp6` file (state `0A`).
pub fn parse_listening_ports(text: &str) -> Vec<u16> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let _sl = it.next()?;
            let local = it.next()?;
            let _remote = it.next()?;
            let state = it.next()?;
            if !state.eq_ignore_ascii_case("0A") {
                return None;
            }
            let (_, port) = local.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// The ports the kubelet and containerd this agent sets up will bind, with who binds them and whether
/// the journal says this agent already runs that component.
fn our_ports(f: &Facts) -> Vec<(u16, &'static str, bool)> {
    let kubelet = f
        .journal
        .knows_path(Path::new(crate::render::kubelet::UNIT_PATH));
    let containerd = f
        .journal
        .knows_path(Path::new(crate::render::containerd::UNIT_PATH));
    let mut v = vec![
        (10250, "kubelet", kubelet),
        (10248, "kubelet healthz", kubelet),
    ];
    if let Some(p) = f
        .config
        .containerd
        .metrics_address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
    {
        v.push((
            p,
            "containerd metrics, containerd.metricsAddress",
            containerd,
        ));
    }
    v
}

/// `Port-N`: each port our kubelet/containerd binds is free, or held by the component this agent runs.
pub fn ports(f: &Facts) -> Vec<CheckResult> {
    let sev = Severity::Error;
    let mut listening = Vec::new();
    let mut seen = false;
    let mut problem = None;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match read(f, path) {
            Ok(Some(t)) => {
                seen = true;
                listening.extend(parse_listening_ports(&t));
            }
            Ok(None) => {}
            Err(e) => problem = Some(e),
        }
    }
    our_ports(f)
        .into_iter()
        .map(|(port, who, ours)| {
            let name = format!("Port-{port}");
            if !seen {
                let why = problem
                    .clone()
                    .unwrap_or_else(|| absent(f, "/proc/net/tcp"));
                return CheckResult::skipped(name, sev, why);
            }
            if !listening.contains(&port) {
                CheckResult::pass(name, sev, format!("port {port} ({who}) is free"))
            } else if ours {
                CheckResult::pass(
                    name,
                    sev,
                    format!("port {port} is in use by the {who} this agent manages"),
                )
            } else {
                CheckResult::problem(
                    name,
                    sev,
                    format!("port {port} ({who}) is in use by another program"),
                    format!("find it with `ss -ltnp 'sport = :{port}'` and stop it (a kubelet or containerd installed another way?)"),
                )
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Programs and packages

/// `RequiredPrograms`: what the node needs that the agent does not install.
pub fn required_programs(f: &Facts) -> CheckResult {
    const NAME: &str = "RequiredPrograms";
    let sev = Severity::Error;
    let mut needed: Vec<(&str, &str, &str)> = vec![
        (
            "iptables",
            "iptables",
            "the CNI bridge's masquerading and the kubelet",
        ),
        ("mount", "mount", "the kubelet's volumes"),
        ("umount", "mount", "the kubelet's volumes"),
        ("sysctl", "procps", "kernel settings"),
        ("systemctl", "systemd", "the services"),
    ];
    if f.host.active_swaps().is_ok_and(|s| !s.is_empty()) {
        needed.push(("swapoff", "mount", "turning swap off"));
    }
    let mut missing = Vec::new();
    let mut packages: Vec<&str> = Vec::new();
    for (prog, pkg, why) in needed {
        match f.host.find_program(prog) {
            Ok(Some(_)) => {}
            Ok(None) => {
                missing.push(format!("{prog} ({why})"));
                if !packages.contains(&pkg) {
                    packages.push(pkg);
                }
            }
            Err(e) => return CheckResult::skipped(NAME, sev, format!("looking for {prog}: {e}")),
        }
    }
    if missing.is_empty() {
        CheckResult::pass(
            NAME,
            sev,
            "iptables, mount, umount, sysctl and systemctl are installed",
        )
    } else {
        CheckResult::problem(
            NAME,
            sev,
            format!("missing: {}", missing.join(", ")),
            format!(
                "install them: apt-get install {} (or your distribution's packages)",
                packages.join(" ")
            ),
        )
    }
}

/// Debian packages that ship what the agent installs itself (or a kubelet unit/drop-in that would apply
/// to the agent's kubelet).
pub const CONFLICTING_PACKAGES: [&str; 12] = [
    "containerd",
    "containerd.io",
    "moby-containerd",
    "runc",
    "moby-runc",
    "docker.io",
    "kubelet",
    "kubeadm",
    "kubectl",
    "kubernetes-cni",
    "node-problem-detector",
    "cri-o",
];

/// Paths the agent installs (so a package owning one of them would be fought over by apt).
fn agent_paths() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "containerd",
        "containerd-shim-runc-v2",
        "containerd-shim",
        "containerd-shim-runc-v1",
        "ctr",
        "runc",
        "node-problem-detector",
    ]
    .iter()
    .map(|b| Path::new("/usr/bin").join(b))
    .collect();
    v.extend(
        ["kubelet", "kubectl", "kubeadm"]
            .iter()
            .map(|b| Path::new("/usr/local/bin").join(b)),
    );
    v.extend(
        crate::steps::cni::REQUIRED
            .iter()
            .map(|b| Path::new(crate::steps::cni::BIN_DIR).join(b)),
    );
    v.extend(
        [
            crate::render::containerd::UNIT_PATH,
            crate::render::kubelet::UNIT_PATH,
            crate::render::npd::UNIT_PATH,
        ]
        .iter()
        .map(PathBuf::from),
    );
    v
}

/// Installed packages (`Status: ... installed`) of a dpkg status file, with their architecture.
pub fn parse_dpkg_installed(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let (mut name, mut arch, mut installed) = (None, String::new(), false);
        for l in stanza.lines() {
            if let Some(v) = l.strip_prefix("Package:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = l.strip_prefix("Architecture:") {
                arch = v.trim().to_string();
            } else if let Some(v) = l.strip_prefix("Status:") {
                installed = v.split_whitespace().last() == Some("installed");
            }
        }
        if let (Some(n), true) = (name, installed) {
            out.push((n, arch));
        }
    }
    out
}

/// `ConflictingPackages`: a dpkg-installed containerd/runc/kubelet/... whose files the agent would
/// overwrite (and apt would later put back) or whose kubelet unit drop-ins would apply to the agent's
/// kubelet. Files the journal says this agent already took over make it a warning (a converged node).
pub fn conflicting_packages(f: &Facts) -> CheckResult {
    const NAME: &str = "ConflictingPackages";
    let sev = Severity::Error;
    let status = match read(f, "/var/lib/dpkg/status") {
        Ok(Some(t)) => t,
        Ok(None) => {
            return CheckResult::skipped(
                NAME,
                sev,
                "no dpkg database (/var/lib/dpkg/status): not a Debian/Ubuntu system",
            )
        }
        Err(e) => return CheckResult::skipped(NAME, sev, e),
    };
    let ours = agent_paths();
    let mut conflicts = Vec::new();
    let mut taken_over = Vec::new();
    for (pkg, arch) in parse_dpkg_installed(&status) {
        if !CONFLICTING_PACKAGES.contains(&pkg.as_str()) {
            continue;
        }
        let list = [format!("{pkg}:{arch}.list"), format!("{pkg}.list")]
            .iter()
            .find_map(|n| read(f, &format!("/var/lib/dpkg/info/{n}")).ok().flatten())
            .unwrap_or_default();
        let overlap: Vec<&PathBuf> = ours
            .iter()
            .filter(|p| list.lines().any(|l| Path::new(l.trim()) == p.as_path()))
            .collect();
        // The kubelet and kubeadm packages ship kubelet.service and its drop-ins, which would apply to the
        // agent's kubelet even where no file is shared; the others conflict only over shared files.
        if overlap.is_empty() && !matches!(pkg.as_str(), "kubelet" | "kubeadm") {
            continue;
        }
        let what = if overlap.is_empty() {
            pkg.clone()
        } else {
            format!(
                "{pkg} ({})",
                overlap
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let already_ours = if overlap.is_empty() {
            !f.journal.is_empty()
        } else {
            overlap.iter().all(|p| f.journal.knows_path(p))
        };
        if already_ours {
            taken_over.push(what);
        } else {
            conflicts.push((pkg, what));
        }
    }
    if !conflicts.is_empty() {
        let names: Vec<&str> = conflicts.iter().map(|(p, _)| p.as_str()).collect();
        let unit_note = if names.iter().any(|n| matches!(*n, "kubelet" | "kubeadm")) {
            "; the kubelet package's unit drop-ins would also apply to the agent's kubelet"
        } else {
            ""
        };
        CheckResult::problem(
            NAME,
            sev,
            format!(
                "installed with dpkg: {}; the agent installs its own containerd, runc, CNI plugins and kubelet, and apt would later overwrite them{unit_note}",
                conflicts.iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>().join("; ")
            ),
            format!("remove them first: apt-get remove {}", names.join(" ")),
        )
    } else if !taken_over.is_empty() {
        CheckResult::problem(
            NAME,
            Severity::Warning,
            format!(
                "installed with dpkg, and already replaced by this agent: {}; an apt upgrade may put the package's files back",
                taken_over.join("; ")
            ),
            "apt-mark hold those packages, or remove them (apt-get remove) and re-run bootstrap",
        )
    } else {
        CheckResult::pass(NAME, sev, "no dpkg package owns what the agent installs")
    }
}

#[cfg(test)]
#[path = "host_tests.rs"]
mod tests;
