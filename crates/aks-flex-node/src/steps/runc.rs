//! `Runc_Installer`: `/usr/bin/runc` (0755) from the verified upstream binary. Unlike the original it never
//! `pkill`s runc: that would kill container shims and with them every running container. Replacing the
//! binary atomically is safe for running containers.

use std::path::{Path, PathBuf};

use super::{Action, Context, Step, StepResult};
use crate::artifacts::{self, install};
use crate::model::Phase;

pub struct RuncInstaller;

fn installed(ctx: &Context, spec: &artifacts::ArtifactSpec) -> StepResult<bool> {
    install::spec_is_current(ctx, spec, &[(PathBuf::from(RUNC_PATH), 0o755)])
}

const NAME: &str = "Runc_Installer";
pub const RUNC_PATH: &str = "/usr/bin/runc";

#[async_trait::async_trait]
impl Step for RuncInstaller {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Installation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let spec = artifacts::runc_spec(&ctx.config, artifacts::host_arch());
        if installed(ctx, &spec)? {
            return Ok(vec![]);
        }
        Ok(vec![install::install_action(&spec, &[RUNC_PATH.into()])])
    }

    async fn artifacts(&self, ctx: &Context) -> StepResult<Vec<artifacts::ArtifactSpec>> {
        let spec = artifacts::runc_spec(&ctx.config, artifacts::host_arch());
        Ok(install::unless_installed(installed(ctx, &spec)?, spec))
    }

    async fn apply_custom(
        &self,
        ctx: &Context,
        _kind: &str,
        _detail: &serde_json::Value,
    ) -> StepResult<()> {
        let spec = artifacts::runc_spec(&ctx.config, artifacts::host_arch());
        let fetched = install::fetch_journaled(ctx, NAME, std::slice::from_ref(&spec)).await?;
        let staged = install::Staged::single(&fetched[0], "runc");
        install::install_staged_into(
            ctx,
            NAME,
            &spec,
            &fetched[0].sha256,
            &staged,
            Path::new("/usr/bin"),
            0o755,
            &["runc"],
        )
        .await?;
        Ok(())
    }
}
