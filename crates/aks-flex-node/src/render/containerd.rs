//! containerd's `/etc/containerd/config.toml` (schema version 2 for containerd 1.x, version 3 for 2.x) and
//! its systemd unit (the original's).

/// What the containerd config depends on.
#[derive(Debug, Clone)]
pub struct ContainerdSettings<'a> {
    pub version: &'a str,
    pub pause_image: &'a str,
    pub metrics_address: &'a str,
    /// Set where the agent lacks CAP_SYS_RESOURCE (containers, nspawn, some VMs): without it CRI pod
    /// sandboxes fail to set their OOM score.
    pub restrict_oom_score_adj: bool,
}

pub const CONFIG_PATH: &str = "/etc/containerd/config.toml";
pub const UNIT_PATH: &str = "/etc/systemd/system/containerd.service";

/// A TOML basic string (JSON string escaping is a subset TOML accepts).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `(major, minor)` of a version like `2.1.3` (a leading `v` is accepted); missing parts are 0.
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let major = next();
    (major, next())
}

/// True for containerd 2.x and later (config version 3).
pub fn is_v2(version: &str) -> bool {
    major_minor(version).0 >= 2
}

/// The CRI CNI binary directory setting. containerd 2.1 deprecated the single `bin_dir` for the list
/// `bin_dirs` (and refuses a config that sets both); older releases only know `bin_dir`.
fn cni_bin_dir_line(version: &str) -> String {
    if major_minor(version) >= (2, 1) {
        format!("bin_dirs = [{}]", q(CNI_BIN_DIR))
    } else {
        format!("bin_dir = {}", q(CNI_BIN_DIR))
    }
}

/// Where the CNI plugins are installed (CNISetup) and where containerd looks for them.
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";

pub fn config_toml(s: &ContainerdSettings) -> String {
    if is_v2(s.version) {
        config_v3(s)
    } else {
        config_v2(s)
    }
}

fn config_v2(s: &ContainerdSettings) -> String {
    let cri = r#"[plugins."io.containerd.grpc.v1.cri"]"#;
    let p = r#"plugins."io.containerd.grpc.v1.cri""#;
    let oom = if s.restrict_oom_score_adj {
        "  restrict_oom_score_adj = true\n"
    } else {
        ""
    };
    format!(
        r#"# Managed by aks-flex-node; local changes are overwritten.
version = 2
oom_score = 0

{cri}
  sandbox_image = {image}
{oom}  [{p}.containerd]
    default_runtime_name = "runc"
    [{p}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{p}.containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
        SystemdCgroup = true
    [{p}.containerd.runtimes.untrusted]
      runtime_type = "io.containerd.runc.v2"
      [{p}.containerd.runtimes.untrusted.options]
        BinaryName = "/usr/bin/runc"
        SystemdCgroup = true
  [{p}.cni]
    {bin_dir}
    conf_dir = "/etc/cni/net.d"
  [{p}.registry]
    config_path = "/etc/containerd/certs.d"
  [{p}.registry.headers]
    X-Meta-Source-Client = ["azure/aks"]

[metrics]
  address = {metrics}
"#,
        image = q(s.pause_image),
        metrics = q(s.metrics_address),
        bin_dir = cni_bin_dir_line(s.version),
    )
}

fn config_v3(s: &ContainerdSettings) -> String {
    let img = r#"plugins."io.containerd.cri.v1.images""#;
    let rt = r#"plugins."io.containerd.cri.v1.runtime""#;
    let oom = if s.restrict_oom_score_adj {
        "  restrict_oom_score_adj = true\n"
    } else {
        ""
    };
    format!(
        r#"# Managed by aks-flex-node; local changes are overwritten.
version = 3
oom_score = 0

[{img}]
  [{img}.pinned_images]
    sandbox = {image}
  [{img}.registry]
    config_path = "/etc/containerd/certs.d"
    [{img}.registry.headers]
      X-Meta-Source-Client = ["azure/aks"]

[{rt}]
{oom}  [{rt}.containerd]
    default_runtime_name = "runc"
    [{rt}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{rt}.containerd.runtimes.runc.options]
        BinaryName = "/usr/bin/runc"
        SystemdCgroup = true
    [{rt}.containerd.runtimes.untrusted]
      runtime_type = "io.containerd.runc.v2"
      [{rt}.containerd.runtimes.untrusted.options]
        BinaryName = "/usr/bin/runc"
        SystemdCgroup = true
  [{rt}.cni]
    {bin_dir}
    conf_dir = "/etc/cni/net.d"

[metrics]
  address = {metrics}
"#,
        image = q(s.pause_image),
        metrics = q(s.metrics_address),
        bin_dir = cni_bin_dir_line(s.version),
    )
}

/// The original's unit, unchanged.
pub fn unit() -> &'static str {
    "[Unit]
Description=containerd container runtime
Documentation=https://containerd.io
After=network.target local-fs.target

[Service]
ExecStartPre=-/sbin/modprobe overlay
ExecStart=/usr/bin/containerd
Type=notify
Delegate=yes
KillMode=process
Restart=always
RestartSec=5
LimitNPROC=infinity
LimitCORE=infinity
LimitNOFILE=infinity
TasksMax=infinity
OOMScoreAdjust=-999

[Install]
WantedBy=multi-user.target
"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(version: &str, restrict: bool) -> ContainerdSettings<'_> {
        ContainerdSettings {
            version,
            pause_image: "mcr.microsoft.com/oss/kubernetes/pause:3.6",
            metrics_address: "127.0.0.1:1338",
            restrict_oom_score_adj: restrict,
        }
    }

    #[test]
    fn config_v2_golden() {
        insta::assert_snapshot!(config_toml(&settings("1.7.20", false)));
    }

    #[test]
    fn config_v2_restricted_oom_golden() {
        insta::assert_snapshot!(config_toml(&settings("1.7.20", true)));
    }

    #[test]
    fn config_v3_for_containerd_2_golden() {
        insta::assert_snapshot!(config_toml(&settings("2.0.4", false)));
    }

    #[test]
    fn config_v3_for_containerd_2_1_uses_bin_dirs_golden() {
        let t = config_toml(&settings("2.1.0", false));
        assert!(t.contains(r#"bin_dirs = ["/opt/cni/bin"]"#), "{t}");
        assert!(!t.contains("bin_dir ="), "{t}");
        insta::assert_snapshot!(t);
    }

    #[test]
    fn cni_bin_dir_key_follows_the_containerd_version() {
        for (v, list) in [
            ("1.7.20", false),
            ("2.0.4", false),
            ("2.1.0", true),
            ("2.1.4", true),
            ("2.2.0-rc.1", true),
            ("3.0.0", true),
            ("v2.1.1", true),
        ] {
            let t = config_toml(&settings(v, false));
            assert_eq!(t.contains("bin_dirs = ["), list, "{v}: {t}");
            assert_eq!(t.contains("bin_dir = \"/opt/cni/bin\""), !list, "{v}: {t}");
        }
    }

    #[test]
    fn every_runc_runtime_uses_the_systemd_cgroup_driver() {
        // The kubelet runs with cgroupDriver: systemd; a runtime with cgroupfs would split the hierarchy.
        for v in ["1.7.20", "2.0.4", "2.1.0"] {
            let t = config_toml(&settings(v, false));
            let runtimes = t
                .matches("runtime_type = \"io.containerd.runc.v2\"")
                .count();
            assert_eq!(runtimes, 2, "{t}");
            assert_eq!(
                t.matches("SystemdCgroup = true").count(),
                runtimes,
                "{v}: {t}"
            );
        }
    }

    #[test]
    fn unit_golden() {
        insta::assert_snapshot!(unit());
    }

    #[test]
    fn strings_are_escaped() {
        let mut s = settings("1.7.20", false);
        s.pause_image = "evil\"\nversion = 9";
        let t = config_toml(&s);
        assert!(
            t.contains(r#"sandbox_image = "evil\"\nversion = 9""#),
            "{t}"
        );
    }
}
