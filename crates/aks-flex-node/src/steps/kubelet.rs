//! `KubeletInstaller`: `/var/lib/kubelet/config.yaml`, `/var/lib/kubelet/kubeconfig` (0600, exec credential
//! `aks-flex-node token`), the cluster CA as the kubelet's client CA (so `kubectl logs/exec` work),
//! `/etc/default/kubelet`, the unit and its drop-ins. It also removes the original agent's leftovers
//! (`token.sh`, `/etc/kubernetes/kubeconfig`); every change is journaled, so unbootstrap restores them.

use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};

use base64::Engine;

use super::{file_action, Action, Context, Step, StepError, StepResult};
use crate::host::Entry;
use crate::model::{ClusterEndpoint, Phase};
use crate::render::kubelet as render;

pub struct KubeletInstaller;

const NAME: &str = "KubeletInstaller";
/// The original agent's files this one replaces.
pub const LEFTOVERS: [&str; 2] = ["/var/lib/kubelet/token.sh", "/etc/kubernetes/kubeconfig"];

/// The API server and CA: from the identity phase of this run, else as an earlier identity phase found
/// them (kept in the journal, so the daemon heals the host without Azure), else
/// `node.kubelet.serverURL` + `caCertData`.
pub fn endpoint(ctx: &Context) -> StepResult<ClusterEndpoint> {
    if let Some(ep) = ctx
        .cluster_endpoint()
        .or_else(|| ctx.persisted_cluster_endpoint())
    {
        return Ok(ep);
    }
    let k = &ctx.config.node.kubelet;
    match (&k.server_url, &k.ca_cert_data) {
        (Some(server), Some(ca)) => {
            let cleaned: String = ca.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let ca_pem = base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map_err(|e| StepError::config(format!("node.kubelet.caCertData is not base64: {e}")))?;
            Ok(ClusterEndpoint {
                server: server.clone(),
                ca_pem,
                dns_service_ip: None,
            })
        }
        _ => Err(StepError::config(
            "the cluster's API server is unknown: run the identity phase (it fetches the cluster credentials) or set node.kubelet.serverURL and node.kubelet.caCertData",
        )),
    }
}

/// Where the agent is usually installed; the exec credential's command when the running binary's own
/// path cannot be found.
pub const DEFAULT_AGENT_BIN: &str = "/usr/local/bin/aks-flex-node";

/// The kubeconfig's exec credential command: the running agent binary (`current_exe`, symlinks resolved,
/// so the same binary always yields the same path and a converged re-run writes nothing), else
/// [`DEFAULT_AGENT_BIN`] with a warning. Resolved once per process.
pub fn agent_binary() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| match resolve_agent_binary(std::env::current_exe()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(
                "cannot find this agent's own binary ({e}); the kubelet's credential plugin will be {DEFAULT_AGENT_BIN}"
            );
            DEFAULT_AGENT_BIN.to_string()
        }
    })
}

fn resolve_agent_binary(exe: std::io::Result<PathBuf>) -> Result<String, String> {
    let exe = exe.map_err(|e| e.to_string())?;
    // Linux names a binary replaced while it runs (an upgrade) `<path> (deleted)`: the new file at
    // `<path>` is the one the kubelet should run.
    let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(p) => PathBuf::from(p),
        None => exe,
    };
    let real = exe
        .canonicalize()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    real.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not UTF-8", real.display()))
}

/// Present only on the unified (v2) cgroup hierarchy.
pub const CGROUP_V2_MARKER: &str = "/sys/fs/cgroup/cgroup.controllers";

/// Whether the host (under the root) uses cgroup v2. An unreadable answer counts as v1: the only effect is
/// `failCgroupV1: false`, which a kubelet on cgroup v2 ignores.
pub fn cgroup_v2(ctx: &Context) -> bool {
    ctx.host
        .fs
        .exists(Path::new(CGROUP_V2_MARKER))
        .unwrap_or(false)
}

pub fn settings(ctx: &Context, ep: &ClusterEndpoint) -> render::KubeletSettings {
    let c = &ctx.config;
    let k = &c.node.kubelet;
    let resolv = if ctx
        .host
        .fs
        .exists(Path::new("/run/systemd/resolve/resolv.conf"))
        .unwrap_or(false)
    {
        "/run/systemd/resolve/resolv.conf"
    } else {
        "/etc/resolv.conf"
    };
    let certs = &c.paths.kubernetes.certs_dir;
    render::KubeletSettings {
        version: c.kubernetes.version.clone(),
        node_name: c.agent.node_name.clone(),
        node_ip: k.node_ip.map(|i| i.to_string()),
        labels: c.node.labels.clone(),
        taints: c.node.taints.iter().map(|t| t.to_string()).collect(),
        max_pods: c.node.max_pods,
        verbosity: k.verbosity,
        eviction_hard: k.eviction_hard.clone(),
        kube_reserved: k.kube_reserved.clone(),
        image_gc_high: k.image_gc_high_threshold,
        image_gc_low: k.image_gc_low_threshold,
        pause_image: c.containerd.pause_image.clone(),
        resolv_conf: resolv.into(),
        client_ca_file: certs.join("ca.crt").display().to_string(),
        // The config wins; else the managed cluster's DNS service, read by the identity phase.
        cluster_dns: c
            .networking
            .dns_service_ip
            .or(ep.dns_service_ip)
            .map(|i| i.to_string()),
        manifests_dir: c.paths.kubernetes.manifests_dir.display().to_string(),
        volume_plugin_dir: c.paths.kubernetes.volume_plugin_dir.display().to_string(),
        cluster_name: c.azure.target_cluster.name.clone(),
        server: ep.server.clone(),
        ca_data_b64: base64::engine::general_purpose::STANDARD.encode(&ep.ca_pem),
        exec_command: agent_binary().to_string(),
        cgroup_v2: cgroup_v2(ctx),
    }
}

/// Once per process (the daemon re-plans every few minutes): say that cgroup v1 is on its way out.
fn warn_cgroup_v1(s: &render::KubeletSettings) {
    static WARNED: Once = Once::new();
    if render::needs_fail_cgroup_v1_false(s) {
        WARNED.call_once(|| {
            tracing::warn!(
                "this host uses cgroup v1, which Kubernetes deprecated (kubelet {} refuses it by default): setting failCgroupV1: false so the kubelet starts; move the host to cgroup v2 (systemd.unified_cgroup_hierarchy=1)",
                s.version
            )
        });
    }
}

/// Files the kubelet reads (ServicesEnabled restarts it when one changed).
pub fn kubelet_files(ctx: &Context) -> Vec<PathBuf> {
    vec![
        "/usr/local/bin/kubelet".into(),
        render::CONFIG_PATH.into(),
        render::KUBECONFIG_PATH.into(),
        render::DEFAULTS_PATH.into(),
        render::UNIT_PATH.into(),
        render::CONTAINERD_DROPIN.into(),
        render::TLS_DROPIN.into(),
        ctx.config.paths.kubernetes.certs_dir.join("ca.crt"),
    ]
}

#[async_trait::async_trait]
impl Step for KubeletInstaller {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Activation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let host = &ctx.host;
        let ep = endpoint(ctx)?;
        let s = settings(ctx, &ep);
        warn_cgroup_v1(&s);
        let paths = &ctx.config.paths.kubernetes;
        let mut actions = Vec::new();
        for leftover in LEFTOVERS {
            if host.fs.entry(Path::new(leftover))?.is_some() {
                actions.push(Action::RemoveFile {
                    path: leftover.into(),
                });
            }
        }
        for d in [&paths.manifests_dir, &paths.volume_plugin_dir] {
            if !matches!(host.fs.entry(d)?, Some(Entry::Dir { .. })) {
                actions.push(Action::EnsureDir {
                    path: d.clone(),
                    mode: 0o755,
                });
            }
        }
        let files: Vec<(PathBuf, u32, String, bool)> = vec![
            (
                paths.certs_dir.join("ca.crt"),
                0o644,
                String::from_utf8_lossy(&ep.ca_pem).into_owned(),
                false,
            ),
            (
                render::CONFIG_PATH.into(),
                0o644,
                render::config_yaml(&s),
                false,
            ),
            (
                render::KUBECONFIG_PATH.into(),
                0o600,
                render::kubeconfig(&s),
                true,
            ),
            (
                render::DEFAULTS_PATH.into(),
                0o644,
                render::defaults(&s),
                false,
            ),
            (
                render::CONTAINERD_DROPIN.into(),
                0o644,
                render::containerd_dropin(&s),
                false,
            ),
            (
                render::TLS_DROPIN.into(),
                0o644,
                render::tls_dropin(),
                false,
            ),
            (render::UNIT_PATH.into(), 0o644, render::unit(&s), false),
        ];
        for (path, mode, content, secret) in files {
            actions.extend(file_action(host, &path, mode, content, secret)?);
        }
        Ok(actions)
    }

    async fn after_undo(&self, _ctx: &Context) -> StepResult<Vec<Action>> {
        Ok(vec![Action::DaemonReload])
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::host::Host;

    /// A context over a sandbox root with a minimal config plus `extra` (merged at the top level).
    pub(crate) fn ctx(root: &Path, extra: serde_json::Value) -> Context {
        let mut v = serde_json::json!({
            "azure": {
                "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
                "targetCluster": {
                    "resourceId": "/subscriptions/8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8/resourceGroups/flex-rg/providers/Microsoft.ContainerService/managedClusters/flex-cluster",
                    "location": "westus"
                }
            },
            "agent": { "nodeName": "flex-node-1" },
            "kubernetes": { "version": "1.30.4" }
        });
        if let (Some(v), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            v.extend(extra);
        }
        let env = |_: &str| None;
        let opts = crate::config::LoadOptions {
            hostname: "flex-node-1".into(),
            env: &env,
        };
        let cfg = crate::config::load_str(&v.to_string(), "test", &opts)
            .unwrap()
            .config;
        Context::new(Arc::new(cfg), Arc::new(Host::new(root).unwrap())).unwrap()
    }

    fn ep(dns: Option<&str>) -> ClusterEndpoint {
        ClusterEndpoint {
            server: "https://c.hcp.westus.azmk8s.io:443".into(),
            ca_pem: b"CA".to_vec(),
            dns_service_ip: dns.map(|d| d.parse().unwrap()),
        }
    }

    #[test]
    fn cgroup_version_is_read_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let c = ctx(
            root.path(),
            serde_json::json!({"kubernetes": {"version": "1.35.0"}}),
        );
        let s = settings(&c, &ep(None));
        assert!(!s.cgroup_v2);
        assert!(render::config_yaml(&s).contains("\nfailCgroupV1: false\n"));
        std::fs::create_dir_all(root.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(
            root.path().join("sys/fs/cgroup/cgroup.controllers"),
            "cpu memory\n",
        )
        .unwrap();
        let s = settings(&c, &ep(None));
        assert!(s.cgroup_v2);
        assert!(!render::config_yaml(&s).contains("failCgroupV1"));
    }

    #[test]
    fn cluster_dns_defaults_to_the_clusters_dns_service() {
        let root = tempfile::tempdir().unwrap();
        let c = ctx(root.path(), serde_json::json!({}));
        // From the managed cluster when the config sets none.
        let s = settings(&c, &ep(Some("10.0.0.10")));
        assert_eq!(s.cluster_dns.as_deref(), Some("10.0.0.10"));
        assert!(render::config_yaml(&s).contains("clusterDNS:\n- \"10.0.0.10\"\n"));
        assert_eq!(settings(&c, &ep(None)).cluster_dns, None);
        // networking.dnsServiceIP wins.
        let c = ctx(
            root.path(),
            serde_json::json!({"networking": {"dnsServiceIP": "10.96.0.10"}}),
        );
        assert_eq!(
            settings(&c, &ep(Some("10.0.0.10"))).cluster_dns.as_deref(),
            Some("10.96.0.10")
        );
    }

    #[test]
    fn agent_binary_is_the_canonical_path_of_the_running_exe() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("aks-flex-node-1.2.3");
        std::fs::write(&real, b"bin").unwrap();
        let link = dir.path().join("aks-flex-node");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let want = real.canonicalize().unwrap().display().to_string();
        // Through a symlink or not, the same binary gives the same path (no rewrite on re-runs).
        assert_eq!(resolve_agent_binary(Ok(link.clone())).unwrap(), want);
        assert_eq!(resolve_agent_binary(Ok(real.clone())).unwrap(), want);
        // A binary replaced while running: the file now at that path.
        let deleted = PathBuf::from(format!("{} (deleted)", real.display()));
        assert_eq!(resolve_agent_binary(Ok(deleted)).unwrap(), want);
        assert!(resolve_agent_binary(Err(std::io::Error::other("no /proc"))).is_err());
        assert!(resolve_agent_binary(Ok(dir.path().join("gone"))).is_err());
    }

    #[test]
    fn agent_binary_is_absolute_and_stable() {
        let a = agent_binary();
        assert!(Path::new(a).is_absolute(), "{a}");
        assert_eq!(a, agent_binary());
    }
}
