//! `ServicesEnabled`: daemon-reload when a unit file changed; enable and start containerd, kubelet and
//! node-problem-detector; restart a running service only when a file it reads changed (the journal's
//! changed set, consumed afterwards); on a real host wait for the kubelet to be active and, if it is not,
//! show the last journal lines. In a sandbox root services are only recorded, so nothing waits there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Action, Context, Phase, Step, StepError, StepResult};
use crate::host::ServiceOp;
use crate::render::{containerd as rc, kubelet as rk, npd as rn};

pub struct ServicesEnabled;

const NAME: &str = "ServicesEnabled";
/// How long to wait for the kubelet to become active.
pub const KUBELET_TIMEOUT: Duration = Duration::from_secs(60);

/// Each service with the files it reads.
fn services(ctx: &Context) -> Vec<(&'static str, Vec<PathBuf>)> {
    let mut containerd: Vec<PathBuf> = super::containerd::REQUIRED
        .iter()
        .map(|b| Path::new("/usr/bin").join(b))
        .collect();
    containerd.push(rc::CONFIG_PATH.into());
    containerd.push(rc::UNIT_PATH.into());
    let mut v = vec![
        ("containerd", containerd),
        ("kubelet", super::kubelet::kubelet_files(ctx)),
    ];
    if ctx.config.npd.enabled {
        v.push((
            "node-problem-detector",
            vec![
                rn::BIN_PATH.into(),
                rn::MONITOR_PATH.into(),
                rn::UNIT_PATH.into(),
                rk::KUBECONFIG_PATH.into(),
            ],
        ));
    }
    v
}

fn unit_files() -> [&'static str; 5] {
    [
        rc::UNIT_PATH,
        rk::UNIT_PATH,
        rk::CONTAINERD_DROPIN,
        rk::TLS_DROPIN,
        rn::UNIT_PATH,
    ]
}

#[async_trait::async_trait]
impl Step for ServicesEnabled {
    fn name(&self) -> &'static str {
        NAME
    }

    fn phase(&self) -> Phase {
        Phase::Activation
    }

    async fn plan(&self, ctx: &Context) -> StepResult<Vec<Action>> {
        let changed = ctx.changed_paths();
        let mut actions = Vec::new();
        let mut consumed: BTreeSet<PathBuf> = BTreeSet::new();
        for u in unit_files() {
            if changed.contains(Path::new(u)) {
                consumed.insert(u.into());
            }
        }
        if !consumed.is_empty() {
            actions.push(Action::DaemonReload);
        }
        for (unit, files) in services(ctx) {
            let state = ctx.host.unit_state(unit).await?;
            let touched: Vec<&PathBuf> = files.iter().filter(|f| changed.contains(*f)).collect();
            consumed.extend(touched.iter().map(|p| (*p).clone()));
            if !state.enabled {
                actions.push(Action::Service {
                    op: ServiceOp::Enable,
                    unit: unit.into(),
                });
            }
            if !state.active {
                actions.push(Action::Service {
                    op: ServiceOp::Start,
                    unit: unit.into(),
                });
            } else if !touched.is_empty() {
                actions.push(Action::Service {
                    op: ServiceOp::Restart,
                    unit: unit.into(),
                });
            }
        }
        if !actions.is_empty() || !consumed.is_empty() {
            actions.push(Action::Custom {
                kind: "settle".into(),
                summary: "wait for the kubelet and mark changed files as taken into account".into(),
                detail: serde_json::json!({ "consumed": consumed }),
            });
        }
        Ok(actions)
    }

    async fn apply_custom(
        &self,
        ctx: &Context,
        _kind: &str,
        detail: &serde_json::Value,
    ) -> StepResult<()> {
        let consumed: Vec<PathBuf> =
            serde_json::from_value(detail["consumed"].clone()).unwrap_or_default();
        ctx.consume_changed(&consumed)?;
        if ctx.host.is_sandbox() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + KUBELET_TIMEOUT;
        loop {
            if ctx.host.unit_state("kubelet").await?.active {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let tail = ctx.host.unit_journal_tail("kubelet", 30).await;
                return Err(StepError::failed(format!(
                    "kubelet did not become active within {KUBELET_TIMEOUT:?}; last journal lines:\n{tail}"
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
