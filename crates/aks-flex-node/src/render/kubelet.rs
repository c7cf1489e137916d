//! The kubelet's files: `/var/lib/kubelet/config.yaml` (a KubeletConfiguration instead of deprecated
//! flags), `/var/lib/kubelet/kubeconfig` (exec credential `aks-flex-node token`), `/etc/default/kubelet`,
//! the unit and its drop-ins (the original's names). Flags that differ across kubelet versions (1.20–1.35)
//! are chosen by version. YAML is written with JSON-quoted scalars, which every YAML parser reads exactly.

use std::collections::BTreeMap;

pub const CONFIG_PATH: &str = "/var/lib/kubelet/config.yaml";
pub const KUBECONFIG_PATH: &str = "/var/lib/kubelet/kubeconfig";
pub const DEFAULTS_PATH: &str = "/etc/default/kubelet";
pub const UNIT_PATH: &str = "/etc/systemd/system/kubelet.service";
pub const DROPIN_DIR: &str = "/etc/systemd/system/kubelet.service.d";
pub const CONTAINERD_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/10-containerd.conf";
pub const TLS_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/10-tlsbootstrap.conf";
pub const RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";
pub const MANAGED_LABEL: (&str, &str) = ("kubernetes.azure.com/managed", "false");
/// AKS's cluster domain (not configurable in AKS either): pods get `<ns>.svc.cluster.local` search paths.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The original's cipher suites.
pub const TLS_CIPHER_SUITES: [&str; 8] = [
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
];

/// Everything the kubelet files depend on.
#[derive(Debug, Clone)]
pub struct KubeletSettings {
    /// `1.30.4` (no `v`).
    pub version: String,
    pub node_name: String,
    pub node_ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `key=value:Effect` strings.
    pub taints: Vec<String>,
    pub max_pods: u32,
    pub verbosity: u32,
    pub eviction_hard: BTreeMap<String, String>,
    pub kube_reserved: BTreeMap<String, String>,
    pub image_gc_high: u8,
    pub image_gc_low: u8,
    pub pause_image: String,
    pub resolv_conf: String,
    pub client_ca_file: String,
    pub cluster_dns: Option<String>,
    pub manifests_dir: String,
    pub volume_plugin_dir: String,
    pub cluster_name: String,
    pub server: String,
    /// base64 of the CA PEM.
    pub ca_data_b64: String,
    /// Absolute path of the agent binary the kubeconfig's exec credential runs (`<it> token`).
    pub exec_command: String,
    /// The host uses the unified cgroup hierarchy (`/sys/fs/cgroup/cgroup.controllers` exists).
    pub cgroup_v2: bool,
}

/// `(major, minor)` of a `1.30.4` version; unparsable versions are treated as the newest.
pub fn minor(version: &str) -> (u32, u32) {
    let mut it = version.trim_start_matches('v').split('.');
    let maj = it.next().and_then(|m| m.parse().ok()).unwrap_or(u32::MAX);
    let min = it.next().and_then(|m| m.parse().ok()).unwrap_or(u32::MAX);
    (maj, min)
}

/// The kubelet's own default hard-eviction thresholds on Linux (`pkg/kubelet/eviction/defaults_linux.go`):
/// `imagefs.inodesFree` joined them in 1.30 (kubernetes#121834).
pub fn default_eviction_hard(version: &str) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("memory.available", "100Mi"),
        ("nodefs.available", "10%"),
        ("nodefs.inodesFree", "5%"),
        ("imagefs.available", "15%"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if minor(version) >= (1, 30) {
        m.insert("imagefs.inodesFree".into(), "5%".into());
    }
    m
}

/// `evictionHard` as written: empty when the user set nothing (the kubelet applies its defaults itself),
/// else the kubelet's defaults overlaid with the user's values. The kubelet does not merge: a partial map
/// sets every unlisted signal to 0, silently disabling it.
pub fn eviction_hard(s: &KubeletSettings) -> BTreeMap<String, String> {
    if s.eviction_hard.is_empty() {
        return BTreeMap::new();
    }
    let mut m = default_eviction_hard(&s.version);
    m.extend(s.eviction_hard.clone());
    m
}

/// `failCgroupV1: false` is needed (and allowed) only on a cgroup v1 host with a kubelet that knows the
/// field (1.31+); from 1.35 the kubelet refuses to start on cgroup v1 without it.
pub fn needs_fail_cgroup_v1_false(s: &KubeletSettings) -> bool {
    !s.cgroup_v2 && minor(&s.version) >= (1, 31)
}

fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn map_yaml(out: &mut String, key: &str, m: &BTreeMap<String, String>) {
    if m.is_empty() {
        return;
    }
    out.push_str(&format!("{key}:\n"));
    for (k, v) in m {
        out.push_str(&format!("  {}: {}\n", q(k), q(v)));
    }
}

/// `/var/lib/kubelet/config.yaml`.
pub fn config_yaml(s: &KubeletSettings) -> String {
    let v = minor(&s.version);
    let mut o = String::from(
        "# Managed by aks-flex-node; local changes are overwritten.\napiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n",
    );
    o.push_str("address: \"0.0.0.0\"\n");
    o.push_str(
        "authentication:\n  anonymous:\n    enabled: false\n  webhook:\n    enabled: true\n",
    );
    o.push_str(&format!(
        "  x509:\n    clientCAFile: {}\n",
        q(&s.client_ca_file)
    ));
    o.push_str("authorization:\n  mode: Webhook\n");
    o.push_str("cgroupDriver: systemd\ncgroupsPerQOS: true\n");
    if let Some(dns) = &s.cluster_dns {
        o.push_str(&format!("clusterDNS:\n- {}\n", q(dns)));
    }
    o.push_str(&format!("clusterDomain: {}\n", q(CLUSTER_DOMAIN)));
    if v >= (1, 27) {
        o.push_str(&format!(
            "containerRuntimeEndpoint: {}\n",
            q(RUNTIME_ENDPOINT)
        ));
    }
    o.push_str("enforceNodeAllocatable:\n- pods\n");
    o.push_str("eventRecordQPS: 0\n");
    // An empty map is omitted so the kubelet keeps its default hard-eviction thresholds (the original
    // passed `--eviction-hard=` and disabled them); a partial one is completed with those defaults.
    map_yaml(&mut o, "evictionHard", &eviction_hard(s));
    if needs_fail_cgroup_v1_false(s) {
        // Cgroup v1 is deprecated (maintenance mode since 1.31); keep the kubelet starting on such hosts.
        o.push_str("failCgroupV1: false\n");
    }
    o.push_str(&format!(
        "imageGCHighThresholdPercent: {}\nimageGCLowThresholdPercent: {}\n",
        s.image_gc_high, s.image_gc_low
    ));
    map_yaml(&mut o, "kubeReserved", &s.kube_reserved);
    o.push_str(&format!("maxPods: {}\n", s.max_pods));
    o.push_str("nodeStatusUpdateFrequency: 10s\npodPidsLimit: -1\nprotectKernelDefaults: true\nreadOnlyPort: 0\n");
    o.push_str(&format!("resolvConf: {}\n", q(&s.resolv_conf)));
    o.push_str("runtimeRequestTimeout: 15m\n");
    o.push_str(&format!("staticPodPath: {}\n", q(&s.manifests_dir)));
    o.push_str("streamingConnectionIdleTimeout: 4h\n");
    o.push_str("tlsCipherSuites:\n");
    for c in TLS_CIPHER_SUITES {
        o.push_str(&format!("- {c}\n"));
    }
    o
}

/// The `exec` credential API version the kubelet accepts: `client.authentication.k8s.io/v1` exists from
/// kubelet 1.22; 1.20 and 1.21 reject it ("invalid apiVersion") and take `v1beta1`. The `token` command
/// answers in whichever version the kubelet asks for (`KUBERNETES_EXEC_INFO`).
pub fn exec_api_version(version: &str) -> &'static str {
    if minor(version) >= (1, 22) {
        "client.authentication.k8s.io/v1"
    } else {
        "client.authentication.k8s.io/v1beta1"
    }
}

/// `/var/lib/kubelet/kubeconfig`: the cluster plus an exec credential running `aks-flex-node token`.
pub fn kubeconfig(s: &KubeletSettings) -> String {
    format!(
        "# Managed by aks-flex-node; local changes are overwritten.
apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    certificate-authority-data: {ca}
    server: {server}
contexts:
- name: arc-context
  context:
    cluster: {name}
    user: arc-user
current-context: arc-context
preferences: {{}}
users:
- name: arc-user
  user:
    exec:
      apiVersion: {exec_api}
      command: {command}
      args:
      - token
      env: null
      interactiveMode: Never
      provideClusterInfo: false
",
        name = q(&s.cluster_name),
        ca = q(&s.ca_data_b64),
        server = q(&s.server),
        exec_api = exec_api_version(&s.version),
        command = q(&s.exec_command),
    )
}

/// Labels as the kubelet flag takes them (sorted; always `kubernetes.azure.com/managed=false`).
pub fn labels(s: &KubeletSettings) -> String {
    let mut m = s.labels.clone();
    m.insert(MANAGED_LABEL.0.into(), MANAGED_LABEL.1.into());
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The version-dependent flags.
pub fn flags(s: &KubeletSettings) -> Vec<String> {
    let v = minor(&s.version);
    let mut f = vec![format!("--v={}", s.verbosity)];
    f.push(format!("--hostname-override={}", s.node_name));
    if let Some(ip) = &s.node_ip {
        f.push(format!("--node-ip={ip}"));
    }
    if !s.taints.is_empty() {
        f.push(format!("--register-with-taints={}", s.taints.join(",")));
    }
    if v < (1, 24) {
        // Before dockershim's removal the kubelet needs to be told the runtime is remote.
        f.push("--container-runtime=remote".into());
    }
    if v < (1, 35) {
        // Accepted (deprecated since 1.27) until 1.35 removed it; keeps the sandbox image in sync with
        // containerd's on older kubelets.
        f.push(format!("--pod-infra-container-image={}", s.pause_image));
    }
    f
}

/// A value for a systemd `EnvironmentFile` / `Environment=` assignment in double quotes.
fn env_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `/etc/default/kubelet`.
pub fn defaults(s: &KubeletSettings) -> String {
    format!(
        "# Managed by aks-flex-node; local changes are overwritten.\nKUBELET_NODE_LABELS={}\nKUBELET_CONFIG_FILE_FLAGS={}\nKUBELET_FLAGS={}\n",
        env_quote(&labels(s)),
        env_quote(&format!("--config {CONFIG_PATH}")),
        env_quote(&flags(s).join(" ")),
    )
}

/// `10-containerd.conf`: the endpoint flag only where the config field does not exist yet (< 1.27).
pub fn containerd_dropin(s: &KubeletSettings) -> String {
    let flags = if minor(&s.version) < (1, 27) {
        format!("--runtime-request-timeout=15m --container-runtime-endpoint={RUNTIME_ENDPOINT}")
    } else {
        String::new()
    };
    format!(
        "[Service]\nEnvironment=KUBELET_CONTAINERD_FLAGS={}\n",
        env_quote(&flags)
    )
}

pub fn tls_dropin() -> String {
    format!(
        "[Service]\nEnvironment=KUBELET_TLS_BOOTSTRAP_FLAGS={}\n",
        env_quote(&format!("--kubeconfig {KUBECONFIG_PATH}"))
    )
}

/// The kubelet unit. Differences from the original's (AKS's) unit, all from a real systemd node:
/// - `RestartSec=10` (kubeadm's) and `StartLimitIntervalSec=0`: with systemd's defaults (100 ms, 5 starts
///   per 10 s) a kubelet that fails at once (API server or containerd not up yet) is `failed` for good
///   within ~3 s and needs `reset-failed`.
/// - ordered after containerd and the network, which it wants but does not require (a containerd restart
///   must not stop the kubelet).
/// - no `ExecStartPre` bind-mounting `/var/lib/kubelet` onto itself and making it shared: AKS inherited
///   that from running the kubelet in a container (hyperkube), where mount propagation needed it. A host
///   kubelet sets up its own mount propagation; the mount was never undone and made unbootstrap's
///   `rmdir /var/lib/kubelet` fail with EBUSY.
/// - no `ebtables`/`iptables -t nat --list` either: they only loaded the nat table modules, which the
///   kernel loads on first use by the kubelet and the CNI plugins anyway (and ebtables is often absent).
///
/// `--pod-manifest-path` and `--enable-server` live in config.yaml.
pub fn unit(s: &KubeletSettings) -> String {
    format!(
        r#"[Unit]
Description=Kubelet
ConditionPathExists=/usr/local/bin/kubelet
Wants=containerd.service network-online.target
After=containerd.service network-online.target
StartLimitIntervalSec=0

[Service]
Restart=always
RestartSec=10
EnvironmentFile=/etc/default/kubelet
SuccessExitStatus=143
ExecStart=/usr/local/bin/kubelet \
        --node-labels="${{KUBELET_NODE_LABELS}}" \
        --volume-plugin-dir={vol} \
        $KUBELET_TLS_BOOTSTRAP_FLAGS \
        $KUBELET_CONFIG_FILE_FLAGS \
        $KUBELET_CONTAINERD_FLAGS \
        $KUBELET_FLAGS

[Install]
WantedBy=multi-user.target
"#,
        vol = s.volume_plugin_dir
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn settings(version: &str) -> KubeletSettings {
        KubeletSettings {
            version: version.into(),
            node_name: "flex-node-1".into(),
            node_ip: Some("192.168.10.5".into()),
            labels: BTreeMap::from([
                ("kubernetes.azure.com/role".into(), "agent".into()),
                ("kubernetes.azure.com/managed".into(), "true".into()),
            ]),
            taints: vec!["dedicated=edge:NoSchedule".into()],
            max_pods: 110,
            verbosity: 2,
            eviction_hard: BTreeMap::from([("memory.available".into(), "100Mi".into())]),
            kube_reserved: BTreeMap::from([("cpu".into(), "100m".into())]),
            image_gc_high: 85,
            image_gc_low: 80,
            pause_image: "mcr.microsoft.com/oss/kubernetes/pause:3.6".into(),
            resolv_conf: "/run/systemd/resolve/resolv.conf".into(),
            client_ca_file: "/etc/kubernetes/certs/ca.crt".into(),
            cluster_dns: Some("10.0.0.10".into()),
            manifests_dir: "/etc/kubernetes/manifests".into(),
            volume_plugin_dir: "/etc/kubernetes/volumeplugins".into(),
            cluster_name: "flex-cluster".into(),
            server: "https://flex-cluster.hcp.westus.azmk8s.io:443".into(),
            ca_data_b64: "Q0EK".into(),
            exec_command: "/usr/local/bin/aks-flex-node".into(),
            cgroup_v2: true,
        }
    }

    #[test]
    fn config_yaml_golden() {
        insta::assert_snapshot!(config_yaml(&settings("1.30.4")));
    }

    #[test]
    fn config_yaml_1_20_has_only_fields_kubelet_1_20_knows() {
        // KubeletConfiguration v1beta1 fields of kubelet 1.20 that the renderer may write. A field added
        // later (containerRuntimeEndpoint 1.27, failCgroupV1 1.31, ...) must stay out: a cgroup v1 host
        // and a partial evictionHard exercise every optional branch.
        const KNOWN_1_20: [&str; 25] = [
            "apiVersion",
            "kind",
            "address",
            "authentication",
            "authorization",
            "cgroupDriver",
            "cgroupsPerQOS",
            "clusterDNS",
            "clusterDomain",
            "enforceNodeAllocatable",
            "eventRecordQPS",
            "evictionHard",
            "imageGCHighThresholdPercent",
            "imageGCLowThresholdPercent",
            "kubeReserved",
            "maxPods",
            "nodeStatusUpdateFrequency",
            "podPidsLimit",
            "protectKernelDefaults",
            "readOnlyPort",
            "resolvConf",
            "runtimeRequestTimeout",
            "staticPodPath",
            "streamingConnectionIdleTimeout",
            "tlsCipherSuites",
        ];
        let mut s = settings("1.20.2");
        s.cgroup_v2 = false;
        let t = config_yaml(&s);
        for line in t.lines() {
            if line.starts_with(['#', ' ', '-']) {
                continue;
            }
            let key = line.split(':').next().unwrap();
            assert!(
                KNOWN_1_20.contains(&key),
                "{key} is unknown to kubelet 1.20:\n{t}"
            );
        }
    }

    #[test]
    fn config_yaml_1_20_has_no_runtime_endpoint_field() {
        let t = config_yaml(&settings("1.20.2"));
        assert!(!t.contains("containerRuntimeEndpoint"), "{t}");
    }

    #[test]
    fn config_yaml_sets_the_cluster_domain_on_every_version() {
        for v in ["1.20.2", "1.30.4", "1.35.0"] {
            let t = config_yaml(&settings(v));
            assert!(t.contains("clusterDomain: \"cluster.local\"\n"), "{v}: {t}");
            assert!(t.contains("clusterDNS:\n- \"10.0.0.10\"\n"), "{v}: {t}");
        }
        let mut s = settings("1.30.4");
        s.cluster_dns = None;
        let t = config_yaml(&s);
        assert!(!t.contains("clusterDNS"), "{t}");
        assert!(t.contains("clusterDomain"), "{t}");
    }

    #[test]
    fn partial_eviction_hard_keeps_the_other_defaults() {
        // Only memory.available given: the user's value wins, the other defaults are kept.
        let mut s = settings("1.20.2");
        s.eviction_hard = BTreeMap::from([("memory.available".into(), "500Mi".into())]);
        let t = config_yaml(&s);
        assert!(
            t.contains(
                "evictionHard:\n  \"imagefs.available\": \"15%\"\n  \"memory.available\": \"500Mi\"\n  \"nodefs.available\": \"10%\"\n  \"nodefs.inodesFree\": \"5%\"\nimageGC"
            ),
            "{t}"
        );
        // imagefs.inodesFree is a kubelet default from 1.30 only.
        s.version = "1.30.4".into();
        assert_eq!(eviction_hard(&s)["imagefs.inodesFree"], "5%");
        assert_eq!(eviction_hard(&s)["memory.available"], "500Mi");
        s.version = "1.29.9".into();
        assert!(!eviction_hard(&s).contains_key("imagefs.inodesFree"));
        // A user value for a signal without a default (and one overriding it) is kept.
        s.eviction_hard = BTreeMap::from([
            ("pid.available".into(), "3%".into()),
            ("nodefs.available".into(), "20%".into()),
        ]);
        let m = eviction_hard(&s);
        assert_eq!(m["pid.available"], "3%");
        assert_eq!(m["nodefs.available"], "20%");
        assert_eq!(m["memory.available"], "100Mi");
        // Nothing set: omitted, the kubelet applies its own defaults.
        s.eviction_hard.clear();
        assert!(!config_yaml(&s).contains("evictionHard"));
    }

    #[test]
    fn cgroup_v1_hosts_get_fail_cgroup_v1_false_where_the_field_exists() {
        let mut s = settings("1.35.0");
        s.cgroup_v2 = false;
        insta::assert_snapshot!("config_yaml_1_35_cgroup_v1", config_yaml(&s));
        assert!(config_yaml(&s).contains("\nfailCgroupV1: false\n"));
        s.version = "1.31.0".into();
        assert!(config_yaml(&s).contains("\nfailCgroupV1: false\n"));
        // Older kubelets do not know the field.
        for v in ["1.20.2", "1.30.4"] {
            s.version = v.into();
            assert!(!config_yaml(&s).contains("failCgroupV1"), "{v}");
        }
        // cgroup v2: never written.
        let mut s = settings("1.35.0");
        s.cgroup_v2 = true;
        assert!(!config_yaml(&s).contains("failCgroupV1"));
    }

    #[test]
    fn kubeconfig_golden() {
        insta::assert_snapshot!(kubeconfig(&settings("1.30.4")));
    }

    #[test]
    fn kubeconfig_exec_api_version_follows_the_kubelet_version() {
        // Kubelet 1.20/1.21 reject client.authentication.k8s.io/v1 ("invalid apiVersion").
        for v in ["1.20.2", "1.21.14"] {
            let k = kubeconfig(&settings(v));
            assert!(
                k.contains("apiVersion: client.authentication.k8s.io/v1beta1\n"),
                "{v}: {k}"
            );
        }
        for v in ["1.22.0", "1.30.4", "1.35.0"] {
            let k = kubeconfig(&settings(v));
            assert!(
                k.contains("apiVersion: client.authentication.k8s.io/v1\n"),
                "{v}: {k}"
            );
        }
        insta::assert_snapshot!("kubeconfig_1_20", kubeconfig(&settings("1.20.2")));
    }

    #[test]
    fn kubeconfig_runs_the_given_agent_binary() {
        let mut s = settings("1.30.4");
        s.exec_command = "/opt/aks flex/bin/aks-flex-node".into();
        let k = kubeconfig(&s);
        assert!(
            k.contains("      command: \"/opt/aks flex/bin/aks-flex-node\"\n"),
            "{k}"
        );
        assert!(!k.contains("/usr/local/bin"), "{k}");
    }

    #[test]
    fn defaults_golden_per_version() {
        insta::assert_snapshot!("defaults_1_20", defaults(&settings("1.20.2")));
        insta::assert_snapshot!("defaults_1_30", defaults(&settings("1.30.4")));
        insta::assert_snapshot!("defaults_1_35", defaults(&settings("1.35.0")));
    }

    #[test]
    fn managed_label_always_false() {
        let l = labels(&settings("1.30.4"));
        assert!(l.contains("kubernetes.azure.com/managed=false"), "{l}");
        assert!(!l.contains("managed=true"), "{l}");
    }

    #[test]
    fn unit_keeps_restarting_and_leaves_no_mount_behind() {
        let u = unit(&settings("1.20.2"));
        for line in [
            "Restart=always\n",
            "RestartSec=10\n",
            "StartLimitIntervalSec=0\n",
            "After=containerd.service network-online.target\n",
            "Wants=containerd.service network-online.target\n",
        ] {
            assert!(u.contains(line), "{line}: {u}");
        }
        // StartLimitIntervalSec= is a [Unit] setting.
        let (unit_section, service) = u.split_once("[Service]").unwrap();
        assert!(unit_section.contains("StartLimitIntervalSec=0"), "{u}");
        assert!(!service.contains("StartLimit"), "{u}");
        assert!(!u.contains("Requires="), "{u}");
        assert!(!u.contains("mount"), "{u}");
        assert!(!u.contains("ExecStartPre"), "{u}");
    }

    #[test]
    fn unit_and_dropins_golden() {
        insta::assert_snapshot!("unit", unit(&settings("1.30.4")));
        insta::assert_snapshot!(
            "dropin_containerd_1_20",
            containerd_dropin(&settings("1.20.2"))
        );
        insta::assert_snapshot!(
            "dropin_containerd_1_30",
            containerd_dropin(&settings("1.30.4"))
        );
        insta::assert_snapshot!("dropin_tls", tls_dropin());
    }
}
