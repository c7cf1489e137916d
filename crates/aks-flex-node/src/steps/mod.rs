//! The bootstrap steps, one module each, in the order they run ([`all_steps`]). A step plans; the engine
//! ([`crate::engine`]) applies, journals and undoes.

pub mod arc_install;
pub mod cni;
pub mod containerd;
pub mod drain;
pub mod kube_binaries;
pub mod kubelet;
pub mod node_ready;
pub mod npd;
pub mod runc;
pub mod services;
pub mod system_configured;

// What every step uses from the engine, named once here (public: the integration tests and the scale
// benchmark drive the engine with these steps through the same paths).
pub use crate::engine::{
    bootstrap, file_action, install, journal, plan, Action, Context, Journal, Step, StepError,
    StepReport, StepResult, UndoOp,
};
pub use crate::model::Phase;

/// The bootstrap steps in order.
pub fn all_steps() -> Vec<Box<dyn Step>> {
    vec![
        Box::new(arc_install::ArcInstall::default()),
        Box::new(system_configured::SystemConfigured),
        Box::new(runc::RuncInstaller),
        Box::new(containerd::ContainerdInstaller),
        Box::new(kube_binaries::KubeBinariesInstaller),
        Box::new(cni::CniSetup),
        Box::new(kubelet::KubeletInstaller),
        Box::new(npd::NpdInstaller),
        Box::new(services::ServicesEnabled),
        Box::new(node_ready::NodeReady),
    ]
}
