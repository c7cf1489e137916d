//! Kernel settings for a Kubernetes node: sysctl.d, modules-load.d and the swap lines of fstab.

/// Path of the sysctl file (the original's name, so operators find it where they expect).
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/999-sysctl-aks.conf";
/// Path of the modules-load file.
pub const MODULES_PATH: &str = "/etc/modules-load.d/aks-flex-node.conf";
/// Modules the node needs: overlayfs for containerd snapshots, br_netfilter so bridged pod traffic is
/// seen by iptables (the bridge-nf sysctls below only exist once it is loaded).
pub const MODULES: [&str; 2] = ["overlay", "br_netfilter"];

/// The sysctl settings, as (key, value), in file order.
pub const SYSCTLS: [(&str, &str); 7] = [
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
    ("vm.overcommit_memory", "1"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("vm.swappiness", "0"),
];

pub fn sysctl_conf() -> String {
    let mut out = String::from(
        "# Managed by aks-flex-node; changes are overwritten. Kernel settings for a Kubernetes node.\n",
    );
    for (k, v) in SYSCTLS {
        out.push_str(&format!("{k} = {v}\n"));
    }
    out
}

pub fn modules_load_conf() -> String {
    let mut out = String::from(
        "# Managed by aks-flex-node; changes are overwritten. Kernel modules a Kubernetes node needs.\n",
    );
    for m in MODULES {
        out.push_str(m);
        out.push('\n');
    }
    out
}

/// `fstab` with every active swap entry commented out, or `None` when there is none.
/// Only the swap lines change; everything else is kept byte for byte.
pub fn fstab_without_swap(fstab: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(fstab.len() + 64);
    for line in fstab.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let fields: Vec<&str> = body.split_whitespace().collect();
        let is_swap =
            !body.trim_start().starts_with('#') && fields.len() >= 3 && fields[2] == "swap";
        if is_swap {
            changed = true;
            out.push_str("# disabled by aks-flex-node (the kubelet requires swap off): ");
            out.push_str(body);
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sysctl_conf_golden() {
        insta::assert_snapshot!(sysctl_conf());
    }

    #[test]
    fn modules_load_conf_golden() {
        insta::assert_snapshot!(modules_load_conf());
    }

    #[test]
    fn fstab_swap_lines_are_commented_and_the_rest_kept() {
        let fstab = "UUID=1 / ext4 defaults 0 1\n/swap.img\tnone\tswap\tsw\t0\t0\n# /old none swap sw 0 0\n";
        insta::assert_snapshot!(fstab_without_swap(fstab).unwrap());
        assert_eq!(fstab_without_swap("UUID=1 / ext4 defaults 0 1\n"), None);
        // Converged: a second pass finds nothing to change.
        assert_eq!(
            fstab_without_swap(&fstab_without_swap(fstab).unwrap()),
            None
        );
    }

    proptest! {
        #[test]
        fn fstab_rewrite_only_touches_swap_lines(lines in proptest::collection::vec("[ -~]{0,40}", 0..10)) {
            let text = lines.join("\n");
            match fstab_without_swap(&text) {
                None => {}
                Some(out) => {
                    prop_assert_eq!(out.lines().count(), text.lines().count());
                    prop_assert!(fstab_without_swap(&out).is_none());
                }
            }
        }
    }
}
