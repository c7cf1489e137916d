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
use crate::host::ServiceOp;
use crate::model::Phase;
use crate::render::{containerd as rc, kubelet as rk, npd as rn};

pub struct ServicesEnabled;

const NAME: &str = "ServicesEnabled";
/// Its undo record: drain the node's workload, then remove the runtime directories the services created.
const RUNTIME: &str = "runtimeState";
/// How long a started service must stay `active (running)` with the same main PID to count as up.
pub const SETTLE: Duration = Duration::from_secs(10);
/// How long a started service may take to reach `active (running)`.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the services are looked at while settling.
const POLL: Duration = Duration::from_millis(250);
/// Journal lines quoted when a service does not stay up.
const JOURNAL_LINES: u32 = 30;

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
            e.step == NAME && matches!(&e.op, UndoOp::Custom { kind, .. } if kind == RUNTIME)
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
        if kind != RUNTIME {
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

/// Apply [`Action::RecordRuntimeDirs`] for `step`: journal which of `dirs` do not exist yet. Its undo
/// (this step's) drains the node's workload and removes those directories.
pub fn record_runtime_dirs(ctx: &Context, step: &str, dirs: &[PathBuf]) -> StepResult<()> {
    let absent = drain::absent_dirs(&ctx.host, dirs)?;
    ctx.record_undo(step, RUNTIME, serde_json::json!({ "absent": absent }))?;
    Ok(())
}

/// Apply [`Action::SettleServices`]: on a real host, watch `watch` until each has stayed up for
/// `settle_seconds`; then (only then) mark `consumed` as taken into account, so a service that did not
/// come up is started (or restarted) again by the next run.
pub async fn settle(
    ctx: &Context,
    watch: &[String],
    consumed: &[PathBuf],
    settle_seconds: u64,
) -> StepResult<()> {
    if !ctx.host.is_sandbox() && !watch.is_empty() {
        let host = &ctx.host;
        let outcome = wait_stay_up(
            watch,
            Duration::from_secs(settle_seconds),
            START_TIMEOUT,
            |unit| {
                let unit = unit.to_string();
                async move { host.unit_status(&unit).await }
            },
        )
        .await?;
        if let Err(NotUp { unit, problem }) = outcome {
            let tail = host.unit_journal_tail(&unit, JOURNAL_LINES).await;
            return Err(StepError::failed(format!(
                "{unit}.service did not stay up: {problem}. Last {JOURNAL_LINES} journal lines (journalctl -u {unit}):\n{}",
                tail.trim_end()
            )));
        }
    }
    ctx.consume_changed(consumed)?;
    Ok(())
}

/// A watched service that did not stay up, and how.
#[derive(Debug, PartialEq, Eq)]
pub struct NotUp {
    pub unit: String,
    pub problem: String,
}

/// Watch `units` (all just started or restarted) until each has been `active (running)` with the same
/// main PID and restart count for `settle`. A unit that leaves `running`, gets a new main PID, restarts,
/// lands in `failed`/`auto-restart`, or is not running within `timeout` is reported.
pub async fn wait_stay_up<F, Fut>(
    units: &[String],
    settle: Duration,
    timeout: Duration,
    mut status: F,
) -> Result<Result<(), NotUp>, crate::host::HostError>
where
    F: FnMut(&str) -> Fut,
    Fut: std::future::Future<Output = Result<crate::host::UnitStatus, crate::host::HostError>>,
{
    use tokio::time::Instant;
    let start = Instant::now();
    // Per unit: when it was first seen running, with which main PID and restart count.
    let mut seen: Vec<Option<(Instant, u32, u32)>> = vec![None; units.len()];
    let mut done = vec![false; units.len()];
    loop {
        for (i, unit) in units.iter().enumerate() {
            if done[i] {
                continue;
            }
            let st = status(unit).await?;
            let not_up = |problem: String| {
                Ok(Err(NotUp {
                    unit: unit.clone(),
                    problem,
                }))
            };
            match seen[i] {
                Some((since, pid, restarts)) => {
                    let up_for = since.elapsed().as_secs_f32();
                    if !st.running() {
                        return not_up(format!(
                            "it was running, then stopped {up_for:.1}s later; now {}",
                            st.describe()
                        ));
                    }
                    if st.main_pid != pid || st.n_restarts != restarts {
                        return not_up(format!(
                            "it restarted {up_for:.1}s after it started (main PID {pid} -> {}); now {}",
                            st.main_pid,
                            st.describe()
                        ));
                    }
                    if since.elapsed() >= settle {
                        done[i] = true;
                    }
                }
                None if st.running() => {
                    seen[i] = Some((Instant::now(), st.main_pid, st.n_restarts))
                }
                None if st.failed() || st.sub_state == "auto-restart" || st.n_restarts > 0 => {
                    return not_up(format!("it failed to start; now {}", st.describe()));
                }
                None if start.elapsed() >= timeout => {
                    return not_up(format!(
                        "it was not running {}s after its start; now {}",
                        timeout.as_secs(),
                        st.describe()
                    ));
                }
                None => {}
            }
        }
        if done.iter().all(|d| *d) {
            return Ok(Ok(()));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{parse_unit_status, UnitStatus};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A scripted `systemctl show`: each unit walks through its statuses, one per look, then stays on
    /// the last one.
    fn scripted(
        script: HashMap<&'static str, Vec<&'static str>>,
    ) -> impl FnMut(&str) -> std::future::Ready<Result<UnitStatus, crate::host::HostError>> {
        let calls: Mutex<HashMap<String, usize>> = Mutex::new(HashMap::new());
        move |unit: &str| {
            let steps = &script[unit];
            let mut c = calls.lock().unwrap();
            let n = c.entry(unit.to_string()).or_default();
            let text = steps[(*n).min(steps.len() - 1)];
            *n += 1;
            std::future::ready(Ok(parse_unit_status(text)))
        }
    }

    const RUNNING_42: &str = "ActiveState=active\nSubState=running\nMainPID=42\nNRestarts=0";
    const CRASHED: &str =
        "ActiveState=activating\nSubState=auto-restart\nMainPID=0\nNRestarts=1\nExecMainStatus=1\nResult=exit-code";

    fn units(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    /// How one unit, walking through `statuses`, is reported as not up.
    async fn not_up(unit: &'static str, statuses: Vec<&'static str>) -> NotUp {
        let script = HashMap::from([(unit, statuses)]);
        wait_stay_up(&units(&[unit]), SETTLE, START_TIMEOUT, scripted(script))
            .await
            .unwrap()
            .unwrap_err()
    }

    #[tokio::test(start_paused = true)]
    async fn a_kubelet_that_dies_after_start_is_not_up() {
        // Seen on the real node: active for ~0.6 s, then auto-restart.
        let script = HashMap::from([
            ("containerd", vec![RUNNING_42]),
            ("kubelet", vec![RUNNING_42, RUNNING_42, CRASHED]),
        ]);
        let out = wait_stay_up(
            &units(&["containerd", "kubelet"]),
            SETTLE,
            START_TIMEOUT,
            scripted(script),
        )
        .await
        .unwrap();
        let err = out.unwrap_err();
        assert_eq!(err.unit, "kubelet");
        assert!(
            err.problem.contains("was running, then stopped"),
            "{}",
            err.problem
        );
        assert!(err.problem.contains("auto-restart"), "{}", err.problem);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_with_a_new_main_pid_between_two_looks_is_caught() {
        let err = not_up(
            "kubelet",
            vec![
                RUNNING_42,
                "ActiveState=active\nSubState=running\nMainPID=77\nNRestarts=1",
            ],
        )
        .await;
        assert!(err.problem.contains("main PID 42 -> 77"), "{}", err.problem);
    }

    #[tokio::test(start_paused = true)]
    async fn services_that_stay_up_for_the_settle_period_pass() {
        let script = HashMap::from([
            ("containerd", vec![RUNNING_42]),
            ("kubelet", vec![RUNNING_42]),
        ]);
        let t0 = tokio::time::Instant::now();
        let out = wait_stay_up(
            &units(&["containerd", "kubelet"]),
            SETTLE,
            START_TIMEOUT,
            scripted(script),
        )
        .await
        .unwrap();
        assert_eq!(out, Ok(()));
        assert!(
            t0.elapsed() >= SETTLE,
            "must watch for the whole settle period"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_unit_that_hit_its_start_limit_or_never_runs_is_reported() {
        let err = not_up(
            "kubelet",
            vec!["ActiveState=failed\nSubState=failed\nResult=start-limit-hit"],
        )
        .await;
        assert!(err.problem.contains("failed to start"), "{}", err.problem);
        let err = not_up(
            "containerd",
            vec!["ActiveState=activating\nSubState=start\nMainPID=9"],
        )
        .await;
        assert!(
            err.problem.contains("not running 90s after"),
            "{}",
            err.problem
        );
    }
}
