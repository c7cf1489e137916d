//! Taking the node's workload down for unbootstrap, and the state its runtime created.
//!
//! What the kubelet, containerd and the CNI plugins create at run time is not written by the agent, so the
//! journal does not list it: pod processes and their shims, pod volume and rootfs mounts, pod network
//! namespaces, the `cni0` bridge, the kubelet's and the CNI plugins' iptables chains, and directories such as
//! `/var/lib/containerd`. `kubeadm reset` removes part of this and asks the operator to clean the rest
//! (iptables, CNI configuration); unbootstrap removes all of it, in this order, after the kubelet and
//! containerd units were stopped:
//!
//! 1. every process in the `kubepods` cgroups (containers keep running after containerd stops: its unit
//!    has `KillMode=process`), then the `containerd-shim` processes of the `k8s.io` namespace;
//! 2. the pod network namespaces (`/run/netns/cni-*`);
//! 3. every mount below `/var/lib/kubelet`, `/var/lib/containerd` and `/run/containerd`, deepest first;
//! 4. the `cni0` bridge;
//! 5. the iptables chains named `CNI-*` and `KUBE-*` (filter, nat, mangle; IPv4 and IPv6), with the rules
//!    that jump to them;
//! 6. the runtime directories that did not exist before bootstrap ([`RUNTIME_DIRS`]); one that existed
//!    before is kept as it is.
//!
//! Everything goes through the host boundary: in a sandbox root the filesystem parts (cgroups, `/proc`,
//! mounts, netns, the bridge's `/sys` entry) are read under the root and the commands are recorded; the
//! iptables listing, which can only read the real machine, is skipped there.

use std::path::{Path, PathBuf};

use crate::host::{CommandSpec, Entry, Host};

/// Directories the node's runtime fills at run time; removed by unbootstrap when they were absent before
/// the agent first started the services.
pub const RUNTIME_DIRS: [&str; 7] = [
    "/var/lib/kubelet",
    "/var/lib/containerd",
    "/opt/containerd",
    "/run/containerd",
    "/var/lib/cni",
    "/var/log/pods",
    "/var/log/containers",
];

/// Mount points below these are the runtime's (pod volumes, the kubelet's pod dirs, container rootfs).
pub const MOUNT_PREFIXES: [&str; 3] =
    ["/var/lib/kubelet", "/var/lib/containerd", "/run/containerd"];
pub const BRIDGE: &str = "cni0";
/// Chain name prefixes of the kubelet (`KUBE-FIREWALL`, `KUBE-MARK-*`, `KUBE-POSTROUTING`, ...; kube-proxy's
/// when it ran as a pod) and of the CNI plugins (`CNI-*` masquerading, `CNI-HOSTPORT-*`, `CNI-DN-*`).
pub const CHAIN_PREFIXES: [&str; 2] = ["KUBE-", "CNI-"];
const NETNS_DIR: &str = "/run/netns";

/// Run the whole drain; returns what could not be done (empty: all done).
pub async fn drain(host: &Host) -> Vec<String> {
    let mut failures = Vec::new();
    kill_pods(host, &mut failures).await;
    remove_netns(host, &mut failures).await;
    unmount_runtime(host, &mut failures).await;
    remove_bridge(host, &mut failures).await;
    if !host.is_sandbox() {
        for tool in ["iptables", "ip6tables"] {
            remove_chains(host, tool, &mut failures).await;
        }
    }
    failures
}

/// Remove the runtime directories recorded as absent before bootstrap (after [`drain`]).
pub fn remove_runtime_dirs(host: &Host, absent: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for d in absent {
        if let Err(e) = host.fs.remove_dir_all(d) {
            failures.push(format!("removing {}: {e}", d.display()));
        }
    }
    failures
}

async fn run(host: &Host, argv: &[&str], failures: &mut Vec<String>) -> bool {
    let (program, args) = argv.split_first().expect("non-empty argv");
    let spec = CommandSpec::new(*program)
        .args(args.iter().copied())
        .mutates_host();
    match host.run_checked(&spec).await {
        Ok(_) => true,
        Err(e) => {
            failures.push(format!("{}: {e}", argv.join(" ")));
            false
        }
    }
}

/// Every `cgroup.procs` below a `kubepods*` directory of the cgroup tree (v1: under each controller; v2:
/// at the top of the unified tree).
fn kubepods_pids(host: &Host) -> Vec<u32> {
    fn walk(host: &Host, dir: &Path, out: &mut Vec<u32>, depth: u32) {
        if depth > 12 {
            return;
        }
        if let Ok(Some(text)) = host.fs.read_to_string(&dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        for name in host.fs.list_dir(dir).unwrap_or_default() {
            let p = dir.join(&name);
            if matches!(host.fs.entry(&p), Ok(Some(Entry::Dir { .. }))) {
                walk(host, &p, out, depth + 1);
            }
        }
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut tops: Vec<PathBuf> = Vec::new();
    for name in host.fs.list_dir(root).unwrap_or_default() {
        let p = root.join(&name);
        if name.starts_with("kubepods") {
            tops.push(p);
        } else if matches!(host.fs.entry(&p), Ok(Some(Entry::Dir { .. }))) {
            for sub in host.fs.list_dir(&p).unwrap_or_default() {
                if sub.starts_with("kubepods") {
                    tops.push(p.join(sub));
                }
            }
        }
    }
    let mut pids = Vec::new();
    for t in tops {
        walk(host, &t, &mut pids, 0);
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// PIDs of `containerd-shim*` processes serving the kubelet's namespace (`-namespace k8s.io`).
fn k8s_shim_pids(host: &Host) -> Vec<u32> {
    let mut v = Vec::new();
    for name in host.fs.list_dir(Path::new("/proc")).unwrap_or_default() {
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        let Ok(Some(raw)) = host
            .fs
            .read(&Path::new("/proc").join(&name).join("cmdline"))
        else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim"));
        let k8s = args
            .windows(2)
            .any(|w| w[0] == "-namespace" && w[1] == "k8s.io");
        if is_shim && k8s {
            v.push(pid);
        }
    }
    v
}

async fn kill_pods(host: &Host, failures: &mut Vec<String>) {
    // Processes can be forking while we look: a few rounds, until the cgroups are empty.
    for _ in 0..5 {
        let pids = kubepods_pids(host);
        if pids.is_empty() {
            break;
        }
        // A process may exit between the look and the kill: not a failure.
        let _ = host.run(&sigkill(&pids)).await;
        if host.is_sandbox() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if !host.is_sandbox() {
        let left = kubepods_pids(host);
        if !left.is_empty() {
            failures.push(format!(
                "pod processes still running after SIGKILL: {left:?}"
            ));
        }
    }
    let shims = k8s_shim_pids(host);
    if !shims.is_empty() {
        let _ = host.run(&sigkill(&shims)).await;
    }
}

/// `kill -9 PID...`.
fn sigkill(pids: &[u32]) -> CommandSpec {
    CommandSpec::new("kill")
        .arg("-9")
        .args(pids.iter().map(u32::to_string))
        .mutates_host()
}

async fn remove_netns(host: &Host, failures: &mut Vec<String>) {
    for name in host.fs.list_dir(Path::new(NETNS_DIR)).unwrap_or_default() {
        if name.starts_with("cni-") {
            run(host, &["ip", "netns", "delete", &name], failures).await;
        }
    }
}

/// Mount points from `/proc/self/mountinfo` (field 5, octal escapes decoded).
pub fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The runtime's mount points, deepest first (so a parent is unmounted after what is mounted in it).
pub fn runtime_mounts(mountinfo: &str) -> Vec<String> {
    let mut v: Vec<String> = mount_points(mountinfo)
        .into_iter()
        .filter(|m| {
            MOUNT_PREFIXES
                .iter()
                .any(|p| m == p || m.starts_with(&format!("{p}/")))
        })
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse((m.matches('/').count(), m.len())));
    v.dedup();
    v
}

async fn unmount_runtime(host: &Host, failures: &mut Vec<String>) {
    // A path can be mounted more than once (stacked); a few rounds until none is left.
    for _ in 0..4 {
        let info = host
            .fs
            .read_to_string(Path::new("/proc/self/mountinfo"))
            .ok()
            .flatten()
            .unwrap_or_default();
        let mounts = runtime_mounts(&info);
        if mounts.is_empty() {
            return;
        }
        for m in &mounts {
            let mut quiet = Vec::new();
            if !run(host, &["umount", m], &mut quiet).await {
                // Busy (a process still holds it): detach it, it goes when the last user does.
                run(host, &["umount", "-l", m], failures).await;
            }
        }
        if host.is_sandbox() {
            return;
        }
    }
}

async fn remove_bridge(host: &Host, failures: &mut Vec<String>) {
    if host
        .fs
        .exists(&Path::new("/sys/class/net").join(BRIDGE))
        .unwrap_or(false)
    {
        run(host, &["ip", "link", "delete", BRIDGE], failures).await;
    }
}

fn is_runtime_chain(name: &str) -> bool {
    CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Chains declared in `iptables -S` output (`-N NAME`).
pub fn declared_chains(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .map(|c| c.trim().to_string())
        .collect()
}

/// `(chain, rule number)` of every rule that jumps to a runtime chain, from `iptables -L -n
/// --line-numbers` output, highest number first within a chain (so deleting keeps the others' numbers).
pub fn jumps_to_runtime_chains(listing: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut chain = String::new();
    for line in listing.lines() {
        if let Some(rest) = line.strip_prefix("Chain ") {
            chain = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            continue;
        }
        let mut cols = line.split_whitespace();
        let (Some(num), Some(target)) = (cols.next(), cols.next()) else {
            continue;
        };
        if let Ok(n) = num.parse::<u32>() {
            if is_runtime_chain(target) && !is_runtime_chain(&chain) {
                out.push((chain.clone(), n));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    out
}

async fn remove_chains(host: &Host, tool: &str, failures: &mut Vec<String>) {
    for table in ["filter", "nat", "mangle"] {
        let list = CommandSpec::new(tool).args(["-w", "5", "-t", table, "-S"]);
        let Ok(out) = host.run(&list).await else {
            continue; // no such tool (e.g. no ip6tables): nothing it could have created
        };
        if !out.success() {
            continue;
        }
        let chains: Vec<String> = declared_chains(&out.stdout)
            .into_iter()
            .filter(|c| is_runtime_chain(c))
            .collect();
        if chains.is_empty() {
            continue;
        }
        let listing =
            CommandSpec::new(tool).args(["-w", "5", "-t", table, "-L", "-n", "--line-numbers"]);
        if let Ok(l) = host.run(&listing).await {
            for (chain, n) in jumps_to_runtime_chains(&l.stdout) {
                run(
                    host,
                    &[tool, "-w", "5", "-t", table, "-D", &chain, &n.to_string()],
                    failures,
                )
                .await;
            }
        }
        for c in &chains {
            run(host, &[tool, "-w", "5", "-t", table, "-F", c], failures).await;
        }
        for c in &chains {
            run(host, &[tool, "-w", "5", "-t", table, "-X", c], failures).await;
        }
    }
}

/// What of the node's runtime is still there (for `unbootstrap --verify`): processes, mounts, pod
/// network namespaces, the bridge, iptables chains.
pub async fn runtime_leftovers(host: &Host) -> Vec<String> {
    let mut left = Vec::new();
    let pids = kubepods_pids(host);
    if !pids.is_empty() {
        left.push(format!("pod processes: {pids:?}"));
    }
    let shims = k8s_shim_pids(host);
    if !shims.is_empty() {
        left.push(format!("containerd-shim processes: {shims:?}"));
    }
    for name in host.fs.list_dir(Path::new("/proc")).unwrap_or_default() {
        if name.parse::<u32>().is_err() {
            continue;
        }
        if let Ok(Some(comm)) = host
            .fs
            .read_to_string(&Path::new("/proc").join(&name).join("comm"))
        {
            let comm = comm.trim();
            if comm == "kubelet" || comm == "containerd" {
                left.push(format!("process {comm} (pid {name})"));
            }
        }
    }
    let info = host
        .fs
        .read_to_string(Path::new("/proc/self/mountinfo"))
        .ok()
        .flatten()
        .unwrap_or_default();
    for m in runtime_mounts(&info) {
        left.push(format!("mount {m}"));
    }
    for name in host.fs.list_dir(Path::new(NETNS_DIR)).unwrap_or_default() {
        if name.starts_with("cni-") {
            left.push(format!("network namespace {NETNS_DIR}/{name}"));
        }
    }
    if host
        .fs
        .exists(&Path::new("/sys/class/net").join(BRIDGE))
        .unwrap_or(false)
    {
        left.push(format!("network device {BRIDGE}"));
    }
    if !host.is_sandbox() {
        for tool in ["iptables", "ip6tables"] {
            for table in ["filter", "nat", "mangle"] {
                let spec = CommandSpec::new(tool).args(["-w", "5", "-t", table, "-S"]);
                if let Ok(out) = host.run(&spec).await {
                    for c in declared_chains(&out.stdout) {
                        if is_runtime_chain(&c) {
                            left.push(format!("{tool} chain {c} (table {table})"));
                        }
                    }
                }
            }
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_mounts_deepest_first_and_only_the_runtimes() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
30 22 0:30 / /var/lib/kubelet rw - ext4 /dev/vda rw
31 30 0:31 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache rw - tmpfs tmpfs rw
32 22 0:32 / /run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
33 22 0:33 / /var/lib/kubeletx rw - tmpfs tmpfs rw
34 22 0:34 / /var/lib/kubelet/pods/u2/volumes/with\\040space rw - tmpfs tmpfs rw
";
        let m = runtime_mounts(info);
        assert_eq!(
            m,
            vec![
                "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache",
                "/var/lib/kubelet/pods/u2/volumes/with space",
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
                "/var/lib/kubelet",
            ]
        );
    }

    #[test]
    fn finds_the_jumps_into_runtime_chains_highest_rule_first() {
        let listing = "\
Chain INPUT (policy ACCEPT)
num  target     prot opt source               destination
1    KUBE-FIREWALL  all  --  0.0.0.0/0            0.0.0.0/0
Chain OUTPUT (policy ACCEPT)
num  target     prot opt source               destination
1    ACCEPT     all  --  0.0.0.0/0            0.0.0.0/0
2    KUBE-FIREWALL  all  --  0.0.0.0/0            0.0.0.0/0
3    CNI-HOSTPORT-DNAT  all  --  0.0.0.0/0            0.0.0.0/0  ADDRTYPE match dst-type LOCAL
Chain KUBE-FIREWALL (2 references)
num  target     prot opt source               destination
1    DROP       all  --  0.0.0.0/0            0.0.0.0/0
2    KUBE-MARK-DROP  all  --  0.0.0.0/0            0.0.0.0/0
";
        assert_eq!(
            jumps_to_runtime_chains(listing),
            vec![
                ("INPUT".to_string(), 1),
                ("OUTPUT".to_string(), 3),
                ("OUTPUT".to_string(), 2)
            ]
        );
        let rules = "-P INPUT ACCEPT\n-N CNI-abc\n-N KUBE-MARK-DROP\n-N DOCKER\n-A INPUT -j KUBE-FIREWALL\n";
        let chains: Vec<String> = declared_chains(rules)
            .into_iter()
            .filter(|c| is_runtime_chain(c))
            .collect();
        assert_eq!(
            chains,
            vec!["CNI-abc", "KUBE-MARK-DROP"],
            "DOCKER is not ours"
        );
    }

    #[tokio::test]
    async fn drain_in_a_sandbox_kills_pods_and_shims_unmounts_and_removes_netns_and_bridge() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let w = |p: &str, s: &str| {
            let p = root.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(
            "/sys/fs/cgroup/pids/kubepods.slice/kubepods-besteffort.slice/pod1/cgroup.procs",
            "101\n102\n",
        );
        w("/sys/fs/cgroup/memory/kubepods.slice/cgroup.procs", "101\n");
        w("/sys/fs/cgroup/pids/system.slice/cgroup.procs", "1\n");
        w(
            "/proc/201/cmdline",
            "/usr/bin/containerd-shim-runc-v2\0-namespace\0k8s.io\0-id\0abc\0",
        );
        w(
            "/proc/202/cmdline",
            "/usr/bin/containerd-shim-runc-v2\0-namespace\0moby\0",
        );
        w("/proc/self/mountinfo", "30 1 0:30 / /var/lib/kubelet rw - ext4 /dev/vda rw\n31 30 0:31 / /var/lib/kubelet/pods/u1/volumes/v rw - tmpfs tmpfs rw\n");
        w("/run/netns/cni-1234", "");
        w("/run/netns/mine", "");
        w("/sys/class/net/cni0/address", "aa:bb");
        std::fs::create_dir_all(root.join("var/lib/aks-flex-node")).unwrap();
        let host = Host::new(root).unwrap();
        let failures = drain(&host).await;
        assert!(failures.is_empty(), "{failures:?}");
        let cmds = host.sandbox_record().unwrap().unwrap().commands;
        assert_eq!(
            cmds,
            vec![
                "kill -9 101 102",
                "kill -9 201",
                "ip netns delete cni-1234",
                "umount /var/lib/kubelet/pods/u1/volumes/v",
                "umount /var/lib/kubelet",
                "ip link delete cni0",
            ],
            "the k8s.io shim only (not moby's), pod netns only, deepest mount first"
        );
        let left = runtime_leftovers(&host).await;
        assert!(
            left.iter().any(|l| l.contains("pod processes")),
            "the sandbox only records: {left:?}"
        );
    }
}
