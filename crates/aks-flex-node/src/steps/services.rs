//! `ServicesEnabled`: daemon-reload when a unit file changed; enable and start containerd, kubelet and
//! node-problem-detector; restart a running service only when a file it reads changed (the journal's
//! changed set, consumed once the services are up). Every service this step started or restarted must then
//! *stay* up: `active (running)` with the same main PID and no restart for a settle period. A kubelet that
//! starts and dies 0.6 s later fails the step with its last journal lines instead of counting as started.
//! In a sandbox root services are only recorded, so nothing waits there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::drain;
use super::{Action, Context, Step, StepError, StepResult, UndoOp};
use crate::engine::effects::RUNTIME_STATE;
use crate::host::ServiceOp;
use crate::model::Phase;
use crate::render::{containerd as rc, kubelet as rk, npd as rn};

pub struct ServicesEnabled;

const NAME: &str = "ServicesEnabled";
/// How long a started service must stay `active (running)` with the same main PID to count as up.
pub const SETTLE: Duration = Duration::from_secs(10);

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
    if super::npd::npd_wanted(ctx) == super::npd::NpdDecision::Wanted {
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
        let mut watch: Vec<&str> = Vec::new();
        let claimed = ctx.journal_snapshot().undo.iter().any(|e| {
            e.step == NAME && matches!(&e.op, UndoOp::Custom { kind, .. } if kind == RUNTIME_STATE)
        });
        if !claimed {
            actions.push(Action::RecordRuntimeDirs {
                dirs: drain::RUNTIME_DIRS.iter().map(PathBuf::from).collect(),
            });
        }
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
                watch.push(unit);
            } else if !touched.is_empty() {
                actions.push(Action::Service {
                    op: ServiceOp::Restart,
                    unit: unit.into(),
                });
                watch.push(unit);
            }
        }
        if !actions.is_empty() || !consumed.is_empty() {
            actions.push(Action::SettleServices {
                watch: watch.iter().map(|u| u.to_string()).collect(),
                consumed: consumed.into_iter().collect(),
                settle_seconds: SETTLE.as_secs(),
            });
        }
        Ok(actions)
    }

    /// After the units were stopped (their undo records are newer, so they ran first): take the node's
    /// workload down and remove the runtime directories that did not exist before.
    async fn undo_custom(
        &self,
        ctx: &Context,
        kind: &str,
        data: &serde_json::Value,
    ) -> StepResult<()> {
        if kind != RUNTIME_STATE {
            return Err(StepError::failed(format!("{NAME} cannot undo {kind}")));
        }
        let mut absent: Vec<PathBuf> =
            serde_json::from_value(data["absent"].clone()).unwrap_or_default();
        // Runtime directories an earlier step created (the kubelet's config lives in /var/lib/kubelet):
        // the services filled them, so they go as a whole too; their own undo then finds nothing left.
        for e in ctx.journal_snapshot().undo {
            if let UndoOp::RemoveDir { path } = e.op {
                if drain::RUNTIME_DIRS.iter().any(|d| Path::new(d) == path)
                    && !absent.contains(&path)
                {
                    absent.push(path);
                }
            }
        }
        let mut failures = drain::drain(&ctx.host).await;
        if failures.is_empty() {
            failures.extend(drain::remove_runtime_dirs(&ctx.host, &absent));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(StepError::failed(format!(
                "taking the node's workload down: {}",
                failures.join("; ")
            )))
        }
    }
}
