//! The component sections: `kubernetes`, `containerd`, `runc`, `cni` and `npd`, each with its default
//! version and the newer key it may also be given by (`components.*`, `networking.cniVersion`).

use std::net::SocketAddr;

use super::check::{given, q, same_version, B};
use crate::config::file;
use crate::config::model::*;

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

/// `kubernetes`; the version may also come from `components.kubernetes.version`, and is required.
pub(super) fn kubernetes(
    b: &mut B,
    k: file::KubernetesFile,
    newer: Option<file::ComponentVersionFile>,
) -> KubernetesConfig {
    let kv = b.merge(
        ("kubernetes.version", k.version),
        (
            "components.kubernetes.version",
            newer.and_then(|c| c.version),
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
    KubernetesConfig {
        version: kube_version,
        url_template,
        sha256: KubeSha256 {
            kubelet: b.sha("kubernetes.sha256.kubelet", ks.kubelet),
            kubectl: b.sha("kubernetes.sha256.kubectl", ks.kubectl),
            kubeadm: b.sha("kubernetes.sha256.kubeadm", ks.kubeadm),
        },
        install_kubeadm,
    }
}

/// `containerd`; version and pause image may also come from `components.containerd.version` and
/// `components.sandboxImage`.
pub(super) fn containerd(
    b: &mut B,
    cf: file::ContainerdFile,
    newer: Option<file::ComponentVersionFile>,
    sandbox_image: Option<String>,
) -> ContainerdConfig {
    let cv = b.merge(
        ("containerd.version", cf.version),
        (
            "components.containerd.version",
            newer.and_then(|c| c.version),
        ),
        same_version,
    );
    let pause = b.merge(
        ("containerd.pauseImage", cf.pause_image),
        ("components.sandboxImage", sandbox_image),
        |a, b| a == b,
    );
    let metrics_address = containerd_metrics_address(b, cf.metrics_address);
    ContainerdConfig {
        version: b.component_version(cv, DEFAULT_CONTAINERD),
        pause_image: pause
            .map(|p| p.1)
            .unwrap_or_else(|| DEFAULT_PAUSE_IMAGE.to_string()),
        metrics_address,
        sha256: b.sha("containerd.sha256", cf.sha256),
    }
}

/// `containerd.metricsAddress`: an IP:port, warned about when a Kubernetes component uses the port.
fn containerd_metrics_address(b: &mut B, v: Option<String>) -> String {
    match given(v) {
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
    }
}

/// `runc`; the version may also come from `components.runc.version`.
pub(super) fn runc(
    b: &mut B,
    rf: file::RuncFile,
    newer: Option<file::ComponentVersionFile>,
) -> RuncConfig {
    b.ignored("runc.url", given(rf.url).is_some(), "runc is downloaded from the artifacts source (upstream, artifacts.mirror or the offline bundle)");
    let rv = b.merge(
        ("runc.version", rf.version),
        ("components.runc.version", newer.and_then(|c| c.version)),
        same_version,
    );
    RuncConfig {
        version: b.component_version(rv, DEFAULT_RUNC),
        sha256: b.sha("runc.sha256", rf.sha256),
    }
}

/// `cni`; the version may also come from `networking.cniVersion`.
pub(super) fn cni(b: &mut B, cnf: file::CniFile, networking_version: Option<String>) -> CniConfig {
    let cniv = b.merge(
        ("cni.version", cnf.version),
        ("networking.cniVersion", networking_version),
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
    CniConfig {
        version: b.component_version(cniv, DEFAULT_CNI),
        sha256: b.sha("cni.sha256", cnf.sha256),
        mode,
    }
}

/// `npd` (Node Problem Detector); its version keeps a leading `v`.
pub(super) fn npd(b: &mut B, npdf: file::NpdFile) -> NpdConfig {
    let npd_version = match given(npdf.version) {
        None => DEFAULT_NPD.to_string(),
        Some(v) => b
            .version("npd.version", &v, DEFAULT_NPD)
            .map(|v| format!("v{v}"))
            .unwrap_or_default(),
    };
    NpdConfig {
        enabled: npdf.enabled.unwrap_or(true),
        enabled_explicitly: npdf.enabled.is_some(),
        version: npd_version,
        sha256: b.sha("npd.sha256", npdf.sha256),
    }
}
