//! `Runc_Installer`: `/usr/bin/runc` (0755) from the verified upstream binary. Unlike the original it never
//! `pkill`s runc: that would kill container shims and with them every running container. Replacing the
//! binary atomically is safe for running containers.

use super::install::{self, InstallArtifact, InstallTarget, Unpack};
use super::{Action, Context, Step, StepResult};
use crate::artifacts;
use crate::model::Phase;

pub struct RuncInstaller;

const NAME: &str = "Runc_Installer";
pub const RUNC_PATH: &str = "/usr/bin/runc";

/// The planned install: the upstream binary itself is `/usr/bin/runc`.
fn install_of(ctx: &Context) -> InstallArtifact {
    let spec = artifacts::runc_spec(&ctx.config, artifacts::host_arch());
    InstallArtifact::new(
        spec,
        Unpack::File,
        vec![InstallTarget::new("runc", RUNC_PATH, 0o755)],
    )
}

#[async_trait::async_trait]
impl Step for RuncInstaller {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Installation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        Ok(install::unless_current(ctx, install_of(ctx))?
            .map(|a| Action::InstallArtifact(Box::new(a)))
            .into_iter()
            .collect())
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        Ok(install::unless_current(ctx, install_of(ctx))?
            .map(|a| a.sources)
            .unwrap_or_default())
    }
}
