//! The `paths` section: the Kubernetes host directories (the original's defaults), absolute.

use super::check::B;
use crate::config::file;
use crate::config::model::*;

pub(super) fn paths(b: &mut B, pf: file::PathsFile) -> PathsConfig {
    let pk = pf.kubernetes.unwrap_or_default();
    PathsConfig {
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
    }
}
