//! Turns the on-disk `ConfigFile` into the effective `Config`: applies the original's defaults,
//! merges legacy and newer key shapes (conflicting values are an error naming both paths),
//! resolves secrets, and validates every field, collecting all problems instead of stopping at
//! the first.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine;

use super::file::{self, ConfigFile};
use super::keys::join_map;
use super::model::*;
use super::parse::{self, VersionError};
use super::{LoadOptions, Problem};

pub(super) struct BuildOutput {
    pub config: Option<Config>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// The file itself holds a secret (inline clientSecret, or a bootstrap token, which is refused).
    pub inline_secret: bool,
}

const DEFAULT_LOG_DIR: &str = "/var/log/aks-flex-node";
const DEFAULT_CONTAINERD: &str = "1.7.20";
const DEFAULT_PAUSE_IMAGE: &str = "mcr.microsoft.com/oss/kubernetes/pause:3.6";
/// containerd's metrics listener. Not a port a Kubernetes component uses (10257 is the
/// kube-controller-manager's secure port, 10259 the scheduler's); 1338 is containerd's own example.
const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:1338";
/// Ports Kubernetes components (and etcd) listen on: a metrics listener there makes one of them fail to bind.
const KUBERNETES_PORTS: [(u16, &str); 10] = [
    (2379, "etcd"),
    (2380, "etcd peer"),
    (6443, "kube-apiserver"),
    (10248, "kubelet healthz"),
    (10249, "kube-proxy metrics"),
    (10250, "kubelet"),
    (10255, "kubelet read-only"),
    (10256, "kube-proxy healthz"),
    (10257, "kube-controller-manager"),
    (10259, "kube-scheduler"),
];
const DEFAULT_RUNC: &str = "1.1.12";
const DEFAULT_CNI: &str = "1.5.1";
const DEFAULT_NPD: &str = "v1.35.1";
const SECRET_ENV: &str = "AZURE_CLIENT_SECRET";

/// Returns a warning when `path` is readable or writable by group or others.
pub(super) fn loose_mode_warning(path: &Path, what: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{what} {} has mode {mode:04o} (readable by group or others); run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

struct B<'a> {
    opts: &'a LoadOptions<'a>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

/// Non-empty trimmed string or `None`.
fn given(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl B<'_> {
    fn bad(&mut self, field: &str, value: Option<&str>, expected: impl Into<String>) {
        self.problems.push(Problem {
            field: field.to_string(),
            value: value.map(q),
            expected: expected.into(),
        });
    }

    fn missing(&mut self, field: &str, expected: &str) {
        self.bad(field, None, format!("is missing; expected {expected}"));
    }

    fn guid(
        &mut self,
        field: &str,
        v: Option<String>,
        what: &str,
        required: bool,
    ) -> Option<String> {
        match given(v) {
            Some(v) if parse::is_guid(&v) => Some(v),
            Some(v) => {
                self.bad(
                    field,
                    Some(&v),
                    format!(
                        "is not a GUID; expected {what} like 00000000-0000-0000-0000-000000000000"
                    ),
                );
                None
            }
            None => {
                if required {
                    self.missing(field, what);
                }
                None
            }
        }
    }

    /// Picks the value of a setting that has a legacy and a newer key. Both set to different
    /// values (as compared by `same`) is a problem naming both paths.
    fn merge(
        &mut self,
        old: (&str, Option<String>),
        new: (&str, Option<String>),
        same: impl Fn(&str, &str) -> bool,
    ) -> Option<(String, String)> {
        match (given(old.1), given(new.1)) {
            (Some(a), Some(b)) => {
                if !same(&a, &b) {
                    self.bad(
                        old.0,
                        Some(&a),
                        format!(
                            "conflicts with {} = {}; expected only one of the two keys (or the same value in both)",
                            new.0,
                            q(&b)
                        ),
                    );
                }
                Some((old.0.to_string(), a))
            }
            (Some(a), None) => Some((old.0.to_string(), a)),
            (None, Some(b)) => Some((new.0.to_string(), b)),
            (None, None) => None,
        }
    }

    fn version(&mut self, field: &str, v: &str, example: &str) -> Option<String> {
        match parse::parse_version(v) {
            Ok(v) => Some(v),
            Err(VersionError::Partial) => {
                self.bad(field, Some(v), format!("is only major.minor; expected a full version with the patch number, e.g. {example} (list patch versions with `az aks get-versions`)"));
                None
            }
            Err(VersionError::Invalid) => {
                self.bad(
                    field,
                    Some(v),
                    format!("is not a version; expected major.minor.patch, e.g. {example}"),
                );
                None
            }
        }
    }

    fn component_version(&mut self, picked: Option<(String, String)>, default: &str) -> String {
        match picked {
            Some((field, v)) => self.version(&field, &v, default).unwrap_or_default(),
            None => default.to_string(),
        }
    }

    fn sha(&mut self, field: &str, v: Option<String>) -> Option<String> {
        let v = given(v)?;
        if parse::is_sha256(&v) {
            Some(v.to_ascii_lowercase())
        } else {
            self.bad(
                field,
                Some(&v),
                "is not a sha256 digest; expected 64 hexadecimal characters",
            );
            None
        }
    }

    fn abs_path(&mut self, field: &str, v: Option<String>, default: &str) -> PathBuf {
        match given(v) {
            Some(v) if v.starts_with('/') => PathBuf::from(v),
            Some(v) => {
                self.bad(
                    field,
                    Some(&v),
                    "is not an absolute path; expected a path starting with /",
                );
                PathBuf::from(default)
            }
            None => PathBuf::from(default),
        }
    }

    /// An absolute URL; https, or http only when `allow_http` or the host is loopback.
    fn url(&mut self, field: &str, v: Option<String>, allow_http: bool) -> Option<String> {
        let v = given(v)?;
        let https_only = if allow_http {
            "an absolute http(s) URL"
        } else {
            "an absolute https URL (http only for localhost)"
        };
        match reqwest::Url::parse(&v) {
            Ok(u)
                if u.host_str().is_some_and(|h| !h.is_empty())
                    && (u.scheme() == "https"
                        || (u.scheme() == "http"
                            && (allow_http || parse::is_loopback_host(&u)))) =>
            {
                Some(v)
            }
            _ => {
                self.bad(
                    field,
                    Some(&v),
                    format!("is not a valid URL here; expected {https_only}"),
                );
                None
            }
        }
    }

    fn ignored(&mut self, field: &str, present: bool, why: &str) {
        if present {
            self.warnings.push(format!("`{field}` is ignored: {why}"));
        }
    }
}

pub(super) fn build(f: ConfigFile, opts: &LoadOptions) -> BuildOutput {
    let mut b = B {
        opts,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let mut inline_secret = false;
    let unsupported = "it is a newer AKSFlexNode setting this agent does not support";

    b.ignored("hostRouting", f.host_routing.is_some(), unsupported);

    // ---------------- azure ----------------
    let af = f.azure.unwrap_or_default();
    let had_tc = af.target_cluster.is_some();
    let tc = match af.target_cluster {
        Some(tc) => tc,
        None => {
            b.missing(
                "azure.targetCluster",
                "an object with resourceId and location of the AKS cluster to join",
            );
            file::TargetClusterFile::default()
        }
    };
    let resource_id = given(tc.resource_id);
    let cluster = match &resource_id {
        Some(id) => {
            let c = parse::parse_resource_id(id);
            if c.is_none() {
                b.bad(
                    "azure.targetCluster.resourceId",
                    Some(id),
                    format!(
                        "is not an AKS cluster resource ID; expected {}",
                        parse::RESOURCE_ID_FORMAT
                    ),
                );
            }
            c
        }
        None => {
            if had_tc {
                b.missing("azure.targetCluster.resourceId", parse::RESOURCE_ID_FORMAT);
            }
            None
        }
    };
    let location = given(tc.location);
    if location.is_none() && had_tc {
        b.missing(
            "azure.targetCluster.location",
            "the cluster's Azure region, e.g. westus",
        );
    }

    let subscription_id = match given(af.subscription_id) {
        Some(s) => {
            let s = b.guid(
                "azure.subscriptionId",
                Some(s),
                "the subscription GUID",
                true,
            );
            if let (Some(s), Some(c)) = (&s, &cluster) {
                if !s.eq_ignore_ascii_case(&c.subscription_id) {
                    b.warnings.push(format!(
                        "azure.subscriptionId {s} differs from the subscription {} in azure.targetCluster.resourceId; Arc and role definitions use azure.subscriptionId, the cluster is read from its own subscription",
                        c.subscription_id
                    ));
                }
            }
            s
        }
        None => match &cluster {
            Some(c) => Some(c.subscription_id.clone()),
            None => {
                if resource_id.is_none() {
                    b.missing("azure.subscriptionId", "the subscription GUID (or a valid azure.targetCluster.resourceId to take it from)");
                }
                None
            }
        },
    };
    let tenant_id = b.guid(
        "azure.tenantId",
        af.tenant_id,
        "the Entra tenant GUID",
        true,
    );

    let cloud = match given(af.cloud) {
        None => Cloud::default(),
        Some(c) => match Cloud::parse(&c) {
            Some(c) => c,
            None => {
                let all: Vec<&str> = Cloud::ALL.iter().map(|c| c.as_str()).collect();
                b.bad(
                    "azure.cloud",
                    Some(&c),
                    format!("is not a known cloud; expected one of {}", all.join(", ")),
                );
                Cloud::default()
            }
        },
    };
    let resource_manager_endpoint = b.url(
        "azure.resourceManagerEndpoint",
        af.resource_manager_endpoint,
        false,
    );
    let active_directory_endpoint = b.url(
        "azure.activeDirectoryEndpoint",
        af.active_directory_endpoint,
        false,
    );
    let ca_bundle =
        given(af.ca_bundle.clone()).map(|_| b.abs_path("azure.caBundle", af.ca_bundle, ""));

    let service_principal = af.service_principal.map(|sp| {
        if sp.client_secret.is_some() {
            inline_secret = true;
        }
        let client_id = b.guid(
            "azure.servicePrincipal.clientId",
            sp.client_id,
            "the application (client) GUID",
            true,
        );
        let sp_tenant = match given(sp.tenant_id) {
            Some(t) => b.guid(
                "azure.servicePrincipal.tenantId",
                Some(t),
                "the tenant GUID",
                true,
            ),
            None => tenant_id.clone(),
        };
        let secret = resolve_secret(&mut b, sp.client_secret, sp.client_secret_file);
        (sp_tenant, client_id, secret)
    });
    let managed_identity = af.managed_identity.map(|mi| ManagedIdentity {
        client_id: b.guid(
            "azure.managedIdentity.clientId",
            mi.client_id,
            "the user-assigned identity's client GUID",
            false,
        ),
    });
    if service_principal.is_some() && managed_identity.is_some() {
        b.bad(
            "azure.managedIdentity",
            None,
            "is set together with azure.servicePrincipal; expected at most one Azure auth mode (servicePrincipal, managedIdentity, or neither for Azure CLI)",
        );
    }
    if let Some(bt) = af.bootstrap_token {
        if bt.token.is_some() {
            inline_secret = true;
        }
        // Never echo the token: the problem carries no value.
        b.bad(
            "azure.bootstrapToken",
            None,
            "is set, but bootstrap-token join is not supported yet; remove azure.bootstrapToken. The kubelet joins with Entra tokens of the Arc machine's managed identity (azure.arc.enabled, the default); the agent itself signs in to Azure with azure.servicePrincipal, azure.managedIdentity or the Azure CLI login",
        );
    }

    let arc_f = af.arc.unwrap_or_default();
    let arc_enabled = arc_f.enabled.unwrap_or(true);
    let machine_name = match given(arc_f.machine_name) {
        Some(m) => {
            if m.len() > 54
                || !m
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            {
                b.bad("azure.arc.machineName", Some(&m), "is not a valid Arc machine name; expected up to 54 letters, digits, '-', '_' or '.'");
            }
            m
        }
        None => {
            let h = opts.hostname.trim().to_string();
            if h.is_empty() && arc_enabled {
                b.missing(
                    "azure.arc.machineName",
                    "a machine name (the host name is empty)",
                );
            }
            h
        }
    };
    let arc_roles = match arc_f.roles {
        None => crate::model::roles::default_roles(),
        Some(list) => {
            let mut out: Vec<crate::model::RoleSpec> = Vec::new();
            for (i, r) in list.iter().enumerate() {
                match crate::model::roles::resolve(r) {
                    Ok(spec) if out.iter().any(|o| o.guid == spec.guid) => {
                        b.bad(&format!("azure.arc.roles[{i}]"), Some(r), "is listed twice");
                    }
                    Ok(spec) => out.push(spec),
                    Err(why) => b.bad(&format!("azure.arc.roles[{i}]"), Some(r), why),
                }
            }
            out
        }
    };
    let azcmagent_path = given(arc_f.azcmagent_path).and_then(|p| {
        if p.starts_with('/') {
            Some(std::path::PathBuf::from(p))
        } else {
            b.bad(
                "azure.arc.azcmagentPath",
                Some(&p),
                "is not an absolute path; expected e.g. /usr/bin/azcmagent",
            );
            None
        }
    });
    let arc = ArcConfig {
        enabled: arc_enabled,
        machine_name,
        tags: arc_f.tags.unwrap_or_default(),
        resource_group: given(arc_f.resource_group)
            .or_else(|| cluster.as_ref().map(|c| c.resource_group.clone()))
            .unwrap_or_default(),
        location: given(arc_f.location)
            .or_else(|| location.clone())
            .unwrap_or_default(),
        auto_role_assignment: arc_f.auto_role_assignment.unwrap_or(true),
        roles: arc_roles,
        adopt_existing: arc_f.adopt_existing.unwrap_or(false),
        azcmagent_path,
    };
    let target_agent_pool_name = given(af.target_agent_pool_name).filter(|p| {
        let ok = p.len() <= 12
            && p.bytes().next().is_some_and(|c| c.is_ascii_lowercase())
            && p.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            b.bad("azure.targetAgentPoolName", Some(p), "is not an agent pool name; expected 1-12 lower-case letters or digits, starting with a letter");
        }
        ok
    });

    // ---------------- agent ----------------
    let ag = f.agent.unwrap_or_default();
    for (k, v) in [
        ("agent.machineClient", ag.machine_client.is_some()),
        (
            "agent.machineReconcileInterval",
            ag.machine_reconcile_interval.is_some(),
        ),
        (
            "agent.requireMachineRegistration",
            ag.require_machine_registration.is_some(),
        ),
        (
            "agent.machineOperationMode",
            ag.machine_operation_mode.is_some(),
        ),
    ] {
        b.ignored(k, v, unsupported);
    }
    let log_level = match given(ag.log_level) {
        None => LogLevel::default(),
        Some(l) => LogLevel::parse(&l).unwrap_or_else(|| {
            b.bad(
                "agent.logLevel",
                Some(&l),
                "is not a log level; expected one of debug, info, warning (or warn), error",
            );
            LogLevel::default()
        }),
    };
    let log_dir = b.abs_path("agent.logDir", ag.log_dir, DEFAULT_LOG_DIR);
    let agent_metrics = given(ag.metrics_address).and_then(|a| {
        MetricsAddress::parse(&a)
            .map_err(|e| b.bad("agent.metricsAddress", Some(&a), e))
            .ok()
    });
    let (name_src, name_field) = match given(ag.node_name) {
        Some(n) => (n, "agent.nodeName"),
        None => (opts.hostname.trim().to_string(), "host name"),
    };
    let node_name = match parse::normalize_node_name(&name_src) {
        Some(n) => {
            if n != name_src {
                b.warnings.push(format!(
                    "node name {} (from {name_field}) is not a valid Kubernetes node name; using {} (RFC 1123, lower case). Set agent.nodeName to choose another",
                    q(&name_src), q(&n)
                ));
            }
            n
        }
        None => {
            b.bad("agent.nodeName", Some(&name_src), format!("(from {name_field}) cannot be made a valid node name; expected lower-case letters, digits, '-' and '.'"));
            String::new()
        }
    };

    // ---------------- kubernetes & components ----------------
    let k = f.kubernetes.unwrap_or_default();
    let comp = f.components.unwrap_or_default();
    let kv = b.merge(
        ("kubernetes.version", k.version),
        (
            "components.kubernetes.version",
            comp.kubernetes.and_then(|c| c.version),
        ),
        same_version,
    );
    let kube_version = match kv {
        Some((field, v)) => b.version(&field, &v, "1.30.4").unwrap_or_default(),
        None => {
            b.missing("kubernetes.version", "the full Kubernetes version of the node, e.g. 1.30.4 (usually the cluster's version)");
            String::new()
        }
    };
    let url_template = given(k.url_template).filter(|t| {
        let ok = t.matches("%s").count() == 2
            && reqwest::Url::parse(&t.replace("%s", "x"))
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !ok {
            b.bad("kubernetes.urlTemplate", Some(t), "is not a download URL template; expected an http(s) URL with two %s (version, then architecture)");
        }
        ok
    });
    let ks = k.sha256.unwrap_or_default();
    let install_kubeadm = k.install_kubeadm.unwrap_or(false);
    b.ignored(
        "kubernetes.sha256.kubeadm",
        !install_kubeadm && given(ks.kubeadm.clone()).is_some(),
        "kubeadm is only installed with kubernetes.installKubeadm: true",
    );
    let kubernetes = KubernetesConfig {
        version: kube_version,
        url_template,
        sha256: KubeSha256 {
            kubelet: b.sha("kubernetes.sha256.kubelet", ks.kubelet),
            kubectl: b.sha("kubernetes.sha256.kubectl", ks.kubectl),
            kubeadm: b.sha("kubernetes.sha256.kubeadm", ks.kubeadm),
        },
        install_kubeadm,
    };

    let cf = f.containerd.unwrap_or_default();
    let cv = b.merge(
        ("containerd.version", cf.version),
        (
            "components.containerd.version",
            comp.containerd.and_then(|c| c.version),
        ),
        same_version,
    );
    let pause = b.merge(
        ("containerd.pauseImage", cf.pause_image),
        ("components.sandboxImage", comp.sandbox_image),
        |a, b| a == b,
    );
    let metrics_address = match given(cf.metrics_address) {
        Some(a) if a.parse::<SocketAddr>().is_ok() => {
            let port = a.parse::<SocketAddr>().map(|s| s.port()).unwrap_or(0);
            if let Some((_, who)) = KUBERNETES_PORTS.iter().find(|(p, _)| *p == port) {
                b.warnings.push(format!(
                    "containerd.metricsAddress {} uses port {port}, which {who} listens on; choose another port (default {DEFAULT_METRICS_ADDRESS})",
                    q(&a)
                ));
            }
            a
        }
        Some(a) => {
            b.bad(
                "containerd.metricsAddress",
                Some(&a),
                format!("is not an address; expected IP:port, e.g. {DEFAULT_METRICS_ADDRESS}"),
            );
            DEFAULT_METRICS_ADDRESS.to_string()
        }
        None => DEFAULT_METRICS_ADDRESS.to_string(),
    };
    let containerd = ContainerdConfig {
        version: b.component_version(cv, DEFAULT_CONTAINERD),
        pause_image: pause
            .map(|p| p.1)
            .unwrap_or_else(|| DEFAULT_PAUSE_IMAGE.to_string()),
        metrics_address,
        sha256: b.sha("containerd.sha256", cf.sha256),
    };

    let rf = f.runc.unwrap_or_default();
    b.ignored("runc.url", given(rf.url).is_some(), "runc is downloaded from the artifacts source (upstream, artifacts.mirror or the offline bundle)");
    let rv = b.merge(
        ("runc.version", rf.version),
        ("components.runc.version", comp.runc.and_then(|c| c.version)),
        same_version,
    );
    let runc = RuncConfig {
        version: b.component_version(rv, DEFAULT_RUNC),
        sha256: b.sha("runc.sha256", rf.sha256),
    };

    let nf = f.networking.unwrap_or_default();
    let cnf = f.cni.unwrap_or_default();
    let cniv = b.merge(
        ("cni.version", cnf.version),
        ("networking.cniVersion", nf.cni_version),
        same_version,
    );
    let mode = match given(cnf.mode).map(|m| m.to_ascii_lowercase()) {
        None => CniMode::Bridge,
        Some(m) if m == "bridge" => CniMode::Bridge,
        Some(m) if m == "none" => CniMode::None,
        Some(m) => {
            b.bad(
                "cni.mode",
                Some(&m),
                "is not a CNI mode; expected one of bridge, none",
            );
            CniMode::Bridge
        }
    };
    let cni = CniConfig {
        version: b.component_version(cniv, DEFAULT_CNI),
        sha256: b.sha("cni.sha256", cnf.sha256),
        mode,
    };

    let npdf = f.npd.unwrap_or_default();
    let npd_version = match given(npdf.version) {
        None => DEFAULT_NPD.to_string(),
        Some(v) => b
            .version("npd.version", &v, DEFAULT_NPD)
            .map(|v| format!("v{v}"))
            .unwrap_or_default(),
    };
    let npd = NpdConfig {
        enabled: npdf.enabled.unwrap_or(true),
        enabled_explicitly: npdf.enabled.is_some(),
        version: npd_version,
        sha256: b.sha("npd.sha256", npdf.sha256),
    };

    // ---------------- node ----------------
    let nodef = f.node.unwrap_or_default();
    let max_pods = match nodef.max_pods {
        None => 110,
        Some(m) if (1..=250).contains(&m) => m as u32,
        Some(m) => {
            b.bad(
                "node.maxPods",
                Some(&m.to_string()),
                "is out of range; expected a number from 1 to 250",
            );
            110
        }
    };
    let labels = nodef.labels.unwrap_or_default();
    for (key, v) in &labels {
        let field = join_map("node.labels", key);
        if !parse::is_label_key(key) {
            b.problems.push(Problem { field: field.clone(), value: Some(q(key)), expected: "is not a valid label key; expected [prefix/]name, name up to 63 characters of letters, digits, '-', '_', '.', prefix a DNS subdomain".into() });
        }
        if !parse::is_label_value(v) {
            b.bad(&field, Some(v), "is not a valid label value; expected up to 63 letters, digits, '-', '_', '.', starting and ending with a letter or digit");
        }
        if parse::is_label_key(key) && !parse::kubelet_may_self_set_label(key) {
            b.problems.push(Problem {
                field: field.clone(),
                value: Some(q(key)),
                expected: format!(
                    "is in the kubernetes.io / k8s.io label namespace, which a kubelet may not set on its own Node (NodeRestriction admission): the kubelet refuses to start with it. Expected a label under kubelet.kubernetes.io/ or node.kubernetes.io/, one of {}, or another prefix (e.g. example.com/); or apply it after the node joined: kubectl label node <node> {key}={v}",
                    parse::KUBELET_SELF_LABELS.join(", ")
                ),
            });
        }
    }
    let mut taints = Vec::new();
    for (i, t) in nodef.taints.unwrap_or_default().iter().enumerate() {
        match parse::parse_taint(t.trim()) {
            Ok(t) => taints.push(t),
            Err(why) => b.bad(&format!("node.taints[{i}]"), Some(t), format!("is not a taint ({why}); expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")),
        }
    }
    let kl = nodef.kubelet.unwrap_or_default();
    let kube_reserved = kl.kube_reserved.unwrap_or_default();
    let eviction_hard = kl.eviction_hard.unwrap_or_default();
    for (map, name) in [
        (&kube_reserved, "node.kubelet.kubeReserved"),
        (&eviction_hard, "node.kubelet.evictionHard"),
    ] {
        for (key, v) in map {
            if key.trim().is_empty()
                || v.trim().is_empty()
                || key.contains([',', '=', '<'])
                || v.contains([',', '=', '<'])
            {
                b.bad(&join_map(name, key), Some(v), "is not a usable entry; expected a non-empty name and value without ',', '=' or '<'");
            }
        }
    }
    let verbosity = match kl.verbosity {
        None | Some(0) => 2,
        Some(v) if (1..=10).contains(&v) => v as u32,
        Some(v) => {
            b.bad(
                "node.kubelet.verbosity",
                Some(&v.to_string()),
                "is out of range; expected 0 (default 2) to 10",
            );
            2
        }
    };
    let mut pct = |field: &str, v: Option<i64>, d: u8| -> u8 {
        match v {
            None => d,
            Some(v) if (0..=100).contains(&v) => v as u8,
            Some(v) => {
                b.bad(
                    field,
                    Some(&v.to_string()),
                    "is out of range; expected a percentage from 0 to 100",
                );
                d
            }
        }
    };
    let high = pct(
        "node.kubelet.imageGCHighThreshold",
        kl.image_gc_high_threshold,
        85,
    );
    let low = pct(
        "node.kubelet.imageGCLowThreshold",
        kl.image_gc_low_threshold,
        80,
    );
    if low >= high {
        b.bad(
            "node.kubelet.imageGCLowThreshold",
            Some(&low.to_string()),
            format!("is not below node.kubelet.imageGCHighThreshold ({high}); expected low < high"),
        );
    }
    let fqdn_url = given(kl.cluster_fqdn).and_then(|h| {
        let host = h.to_ascii_lowercase();
        if parse::is_rfc1123_subdomain(&host) {
            Some(format!("https://{host}:443"))
        } else {
            b.bad("node.kubelet.clusterFQDN", Some(&h), "is not a host name; expected the API server's DNS name without scheme or port, e.g. mycluster-dns-1234.hcp.westus.azmk8s.io");
            None
        }
    });
    let server_url = b.url("node.kubelet.serverURL", kl.server_url, false);
    let server_url = b
        .merge(
            ("node.kubelet.serverURL", server_url),
            ("node.kubelet.clusterFQDN", fqdn_url),
            same_url,
        )
        .map(|(_, v)| v);
    let ca_cert_data = given(kl.ca_cert_data).filter(|d| {
        let ok = is_base64_pem_cert(d);
        if !ok {
            b.bad(
                "node.kubelet.caCertData",
                Some(d),
                "is not a certificate; expected base64 of a PEM CERTIFICATE block",
            );
        }
        ok
    });
    let node_ip = given(kl.node_ip).and_then(|ip| match ip.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            b.bad(
                "node.kubelet.nodeIP",
                Some(&ip),
                "is not an IP address; expected IPv4 or IPv6, e.g. 192.168.1.10",
            );
            None
        }
    });

    // ---------------- networking, paths, bootstrap, artifacts ----------------
    let pod_cidr = given(nf.pod_cidr).filter(|c| {
        let ok = parse::is_cidr(c);
        if !ok {
            b.bad(
                "networking.podCIDR",
                Some(c),
                "is not a CIDR; expected e.g. 10.245.1.0/24 or fd00:10:244:1::/64",
            );
        }
        ok
    });
    let cluster_pod_cidr = match given(nf.cluster_pod_cidr) {
        None => parse::Cidr::parse(parse::AKS_DEFAULT_POD_CIDR),
        Some(c) => {
            let parsed = parse::Cidr::parse(&c);
            if parsed.is_none() {
                b.bad(
                    "networking.clusterPodCIDR",
                    Some(&c),
                    "is not a CIDR; expected the cluster's pod CIDR, e.g. 10.244.0.0/16",
                );
            }
            parsed
        }
    };
    let node_pod_range = if cni.mode == CniMode::Bridge {
        node_pod_range(&mut b, pod_cidr.as_deref(), cluster_pod_cidr, &node_name)
    } else {
        None
    };
    let dns_service_ip = given(nf.dns_service_ip).and_then(|ip| match ip.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            b.bad(
                "networking.dnsServiceIP",
                Some(&ip),
                "is not an IP address; expected e.g. 10.0.0.10",
            );
            None
        }
    });
    let pk = f.paths.unwrap_or_default().kubernetes.unwrap_or_default();
    let paths = PathsConfig {
        kubernetes: KubernetesPaths {
            config_dir: b.abs_path(
                "paths.kubernetes.configDir",
                pk.config_dir,
                "/etc/kubernetes",
            ),
            certs_dir: b.abs_path(
                "paths.kubernetes.certsDir",
                pk.certs_dir,
                "/etc/kubernetes/certs",
            ),
            manifests_dir: b.abs_path(
                "paths.kubernetes.manifestsDir",
                pk.manifests_dir,
                "/etc/kubernetes/manifests",
            ),
            volume_plugin_dir: b.abs_path(
                "paths.kubernetes.volumePluginDir",
                pk.volume_plugin_dir,
                "/etc/kubernetes/volumeplugins",
            ),
            kubelet_dir: b.abs_path(
                "paths.kubernetes.kubeletDir",
                pk.kubelet_dir,
                "/var/lib/kubelet",
            ),
        },
    };
    let bf = f.bootstrap.unwrap_or_default();
    b.ignored("bootstrap.ociImage", bf.oci_image.is_some(), unsupported);
    b.ignored(
        "bootstrap.additionalHostDevices",
        bf.additional_host_devices.is_some(),
        unsupported,
    );
    let offline_artifacts = given(bf.offline_artifacts.and_then(|o| o.source)).filter(|s| {
        let ok = s.starts_with('/') || s.starts_with("file:///");
        if !ok {
            b.bad("bootstrap.offlineArtifacts.source", Some(s), "is not a local bundle location; expected an absolute directory or a file:/// URL (oci:// is not supported)");
        }
        ok
    });
    let mirror = b.url(
        "artifacts.mirror",
        f.artifacts.unwrap_or_default().mirror,
        true,
    );

    let ok = b.problems.is_empty();
    let sp = service_principal;
    let config = if ok {
        Some(Config {
            azure: AzureConfig {
                subscription_id: subscription_id.unwrap_or_default(),
                tenant_id: tenant_id.unwrap_or_default(),
                cloud,
                resource_manager_endpoint,
                active_directory_endpoint,
                ca_bundle,
                service_principal: sp.map(|(t, c, s)| ServicePrincipal {
                    tenant_id: t.unwrap_or_default(),
                    client_id: c.unwrap_or_default(),
                    client_secret: s.unwrap_or_else(|| Secret::new("")),
                }),
                managed_identity,
                arc,
                target_cluster: {
                    let c = cluster.unwrap_or(parse::ClusterId {
                        subscription_id: String::new(),
                        resource_group: String::new(),
                        name: String::new(),
                    });
                    TargetCluster {
                        resource_id: resource_id.unwrap_or_default(),
                        location: location.unwrap_or_default(),
                        subscription_id: c.subscription_id,
                        resource_group: c.resource_group,
                        name: c.name,
                    }
                },
                target_agent_pool_name,
            },
            agent: AgentConfig {
                log_level,
                log_dir,
                node_name,
                metrics_address: agent_metrics,
            },
            kubernetes,
            containerd,
            runc,
            cni,
            npd,
            node: NodeConfig {
                max_pods,
                labels,
                taints,
                kubelet: KubeletConfig {
                    kube_reserved,
                    eviction_hard,
                    verbosity,
                    image_gc_high_threshold: high,
                    image_gc_low_threshold: low,
                    server_url,
                    ca_cert_data,
                    node_ip,
                },
            },
            networking: NetworkingConfig {
                pod_cidr,
                cluster_pod_cidr: cluster_pod_cidr.map(|c| c.to_string()).unwrap_or_default(),
                node_pod_range,
                dns_service_ip,
            },
            paths,
            bootstrap: BootstrapConfig { offline_artifacts },
            artifacts: ArtifactsConfig { mirror },
        })
    } else {
        None
    };
    BuildOutput {
        config,
        problems: b.problems,
        warnings: b.warnings,
        inline_secret,
    }
}

/// The bridge network's range for this node: `networking.podCIDR`, or a /24 derived from the node name.
/// A range that equals or contains the cluster's pod CIDR is a problem (this node's pods would take
/// addresses of pods on other nodes); one inside it is warned about (the cluster may hand the same range
/// to another node).
fn node_pod_range(
    b: &mut B,
    pod_cidr: Option<&str>,
    cluster: Option<parse::Cidr>,
    node_name: &str,
) -> Option<NodePodRange> {
    const FIELD: &str = "networking.podCIDR";
    let (range, source) = match pod_cidr {
        Some(c) => {
            let range = parse::Cidr::parse(c)?;
            let too_small = match range.addr {
                IpAddr::V4(_) => range.len > 30,
                IpAddr::V6(_) => range.len > 126,
            };
            if too_small {
                b.bad(
                    FIELD,
                    Some(c),
                    "is too small for a pod range; expected a prefix of /30 or shorter (/126 for IPv6), usually /24",
                );
                return None;
            }
            (range, FIELD.to_string())
        }
        None => {
            let range = parse::derived_pod_range(node_name);
            (
                range,
                format!(
                    "derived from the node name {} ({FIELD} is unset)",
                    q(node_name)
                ),
            )
        }
    };
    if let Some(cluster) = cluster {
        if range.contains(&cluster) {
            let what = if range == cluster { "is" } else { "contains" };
            b.bad(
                FIELD,
                pod_cidr,
                format!(
                    "{what} the cluster's whole pod CIDR {cluster} (networking.clusterPodCIDR): this node's pods would take addresses of pods on other nodes. Expected this node's own range, e.g. a /24 outside {cluster}, or leave it unset to derive one"
                ),
            );
            return None;
        }
        if cluster.overlaps(&range) {
            if pod_cidr.is_none() {
                b.bad(
                    FIELD,
                    None,
                    format!(
                        "is unset, and the range derived from the node name ({range}) overlaps networking.clusterPodCIDR {cluster}; expected this node's own range outside {cluster}"
                    ),
                );
                return None;
            }
            b.warnings.push(format!(
                "{FIELD} {range} lies inside the cluster's pod CIDR {cluster} (networking.clusterPodCIDR): the cluster may assign the same range to another node; a range outside it cannot collide"
            ));
        }
    }
    Some(NodePodRange {
        cidr: range.to_string(),
        source,
    })
}

fn same_version(a: &str, b: &str) -> bool {
    match (parse::parse_version(a), parse::parse_version(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn same_url(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str().map(str::to_ascii_lowercase)
                    == b.host_str().map(str::to_ascii_lowercase)
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        }
        _ => a == b,
    }
}

/// Resolves the service-principal secret from exactly one of: inline, file, environment.
fn resolve_secret(b: &mut B, inline: Option<Secret>, file: Option<String>) -> Option<Secret> {
    const FIELD: &str = "azure.servicePrincipal.clientSecret";
    let inline = inline.filter(|s| !s.expose().is_empty());
    let file = given(file);
    let env = (b.opts.env)(SECRET_ENV).filter(|s| !s.is_empty());
    let mut sources = Vec::new();
    if inline.is_some() {
        sources.push("azure.servicePrincipal.clientSecret".to_string());
    }
    if let Some(f) = &file {
        sources.push(format!("azure.servicePrincipal.clientSecretFile ({f})"));
    }
    if env.is_some() {
        sources.push(format!("environment variable {SECRET_ENV}"));
    }
    if sources.len() > 1 {
        b.bad(
            FIELD,
            None,
            format!(
                "is given by more than one source ({}); expected exactly one",
                sources.join(", ")
            ),
        );
        return None;
    }
    if let Some(s) = inline {
        return Some(s);
    }
    if let Some(s) = env {
        return Some(Secret::new(s));
    }
    let Some(path) = file else {
        b.missing(FIELD, &format!("the client secret in clientSecret, clientSecretFile, or the environment variable {SECRET_ENV}"));
        return None;
    };
    const FFIELD: &str = "azure.servicePrincipal.clientSecretFile";
    if !path.starts_with('/') {
        b.bad(
            FFIELD,
            Some(&path),
            "is not an absolute path; expected a path starting with /",
        );
        return None;
    }
    let p = Path::new(&path);
    match std::fs::read_to_string(p) {
        Ok(text) => {
            if let Some(w) = loose_mode_warning(p, "the client secret file") {
                b.warnings.push(w);
            }
            let s = text.strip_suffix('\n').unwrap_or(&text);
            let s = s.strip_suffix('\r').unwrap_or(s);
            if s.trim().is_empty() {
                b.bad(FFIELD, Some(&path), "is empty; expected the client secret");
                None
            } else {
                Some(Secret::new(s))
            }
        }
        Err(e) => {
            b.bad(
                FFIELD,
                Some(&path),
                format!("cannot be read ({e}); expected a readable file holding the client secret"),
            );
            None
        }
    }
}

fn is_base64_pem_cert(data: &str) -> bool {
    let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(cleaned) else {
        return false;
    };
    let Ok(pem) = String::from_utf8(bytes) else {
        return false;
    };
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let Some(start) = pem.find(BEGIN) else {
        return false;
    };
    let rest = &pem[start + BEGIN.len()..];
    let Some(end) = rest.find(END) else {
        return false;
    };
    let body: String = rest[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    !body.is_empty()
        && base64::engine::general_purpose::STANDARD
            .decode(body)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_cert_data_must_be_base64_pem_certificate() {
        let e = &base64::engine::general_purpose::STANDARD;
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
        assert!(is_base64_pem_cert(&e.encode(pem)));
        assert!(!is_base64_pem_cert(&e.encode(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
        )));
        assert!(!is_base64_pem_cert("not base64!"));
        assert!(!is_base64_pem_cert(&e.encode(
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----"
        )));
    }

    #[test]
    fn urls_compare_by_host_port_and_path() {
        assert!(same_url(
            "https://A.example.com",
            "https://a.example.com:443/"
        ));
        assert!(!same_url(
            "https://a.example.com:6443",
            "https://a.example.com:443"
        ));
        assert!(same_version("v1.2.3", "1.2.3"));
    }
}
