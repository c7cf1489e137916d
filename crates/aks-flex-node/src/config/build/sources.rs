//! Where artifacts come from: the `bootstrap` section (an offline bundle) and the `artifacts`
//! section (a mirror).

use super::check::{given, B, UNSUPPORTED};
use crate::config::file;
use crate::config::model::*;

pub(super) fn bootstrap(b: &mut B, bf: file::BootstrapFile) -> BootstrapConfig {
    b.ignored("bootstrap.ociImage", bf.oci_image.is_some(), UNSUPPORTED);
    b.ignored(
        "bootstrap.additionalHostDevices",
        bf.additional_host_devices.is_some(),
        UNSUPPORTED,
    );
    let offline_artifacts = given(bf.offline_artifacts.and_then(|o| o.source)).filter(|s| {
        let ok = s.starts_with('/') || s.starts_with("file:///");
        if !ok {
            b.bad("bootstrap.offlineArtifacts.source", Some(s), "is not a local bundle location; expected an absolute directory or a file:/// URL (oci:// is not supported)");
        }
        ok
    });
    BootstrapConfig { offline_artifacts }
}

pub(super) fn artifacts(b: &mut B, af: file::ArtifactsFile) -> ArtifactsConfig {
    ArtifactsConfig {
        mirror: b.url("artifacts.mirror", af.mirror, true),
    }
}
