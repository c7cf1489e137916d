//! The engine's host actions that are more than one generic effect: each journals what undo needs before
//! it changes anything. The records they write are owned by the step that planned the action, whose undo
//! reverses them ([`SYSCTL_PRIOR`] and [`SWAPON`]: SystemConfigured; [`RUNTIME_STATE`]: ServicesEnabled).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Context, StepError, StepResult, UndoOp};
use crate::host::CommandSpec;

/// Undo record of [`apply_sysctls`]: `{"values": {key: prior live value, or null when the key did not
/// exist}}`.
pub const SYSCTL_PRIOR: &str = "sysctlPrior";
/// Undo record of [`swap_off`]: turn swap back on.
pub const SWAPON: &str = "swapon";
/// Undo record of [`record_runtime_dirs`]: drain the node's workload, then remove the runtime directories
/// the services created (`{"absent": [dirs]}`).
pub const RUNTIME_STATE: &str = "runtimeState";
/// How long a started service may take to reach `active (running)`.
pub const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the services are looked at while settling.
const POLL: Duration = Duration::from_millis(250);
/// Journal lines quoted when a service does not stay up.
const JOURNAL_LINES: u32 = 30;

/// Apply [`Action::SwapOff`] for `step`: journal first (if swapoff half-works and we crash, undo still
/// turns swap back on), then `swapoff -a`.
pub async fn swap_off(ctx: &Context, step: &str) -> StepResult<()> {
    ctx.record_undo(
        step,
        SWAPON,
        serde_json::json!({ "argv": ["swapon", "-a"] }),
    )?;
    ctx.host
        .run_checked(&CommandSpec::new("swapoff").arg("-a").mutates_host())
        .await?;
    Ok(())
}

/// Apply [`Action::ApplySysctls`] for `step`: journal the live value of every key in `keys` not recorded
/// yet, then `sysctl -p file`.
pub async fn apply_sysctls(
    ctx: &Context,
    step: &str,
    file: &Path,
    keys: &[String],
) -> StepResult<()> {
    let known = recorded_sysctls(ctx, step);
    let mut prior = serde_json::Map::new();
    for k in keys.iter().filter(|k| !known.contains(*k)) {
        let v = ctx.host.sysctl_value(k)?;
        prior.insert(
            k.clone(),
            v.map_or(serde_json::Value::Null, serde_json::Value::String),
        );
    }
    if !prior.is_empty() {
        ctx.record_undo(step, SYSCTL_PRIOR, serde_json::json!({ "values": prior }))?;
    }
    ctx.host
        .run_checked(
            &CommandSpec::new("sysctl")
                .arg("-p")
                .arg(file.display().to_string())
                .mutates_host(),
        )
        .await?;
    Ok(())
}

/// Sysctl keys whose prior live value the journal already holds (recorded once, before the agent's first
/// change, so a later drift repair never records the agent's own value as "prior").
fn recorded_sysctls(ctx: &Context, step: &str) -> BTreeSet<String> {
    ctx.journal_snapshot()
        .undo_for(step)
        .into_iter()
        .filter_map(|e| match e.op {
            UndoOp::Custom { kind, data } if kind == SYSCTL_PRIOR => data["values"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Apply [`Action::RecordRuntimeDirs`] for `step`: journal which of `dirs` do not exist yet. Its undo
/// (the planning step's) drains the node's workload and removes those directories.
pub fn record_runtime_dirs(ctx: &Context, step: &str, dirs: &[PathBuf]) -> StepResult<()> {
    let mut absent = Vec::new();
    for d in dirs {
        if ctx.host.fs.entry(d)?.is_none() {
            absent.push(d.clone());
        }
    }
    ctx.record_undo(step, RUNTIME_STATE, serde_json::json!({ "absent": absent }))?;
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
    use crate::host::{parse_unit_status, Host, UnitStatus};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// ServicesEnabled's settle period.
    const SETTLE: Duration = Duration::from_secs(10);

    #[test]
    fn the_runtime_dirs_recorded_are_the_ones_missing_now() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/containerd")).unwrap();
        let host = Arc::new(Host::new(dir.path()).unwrap());
        let ctx = Context::new(super::super::test_config(serde_json::json!({})), host).unwrap();
        let dirs: Vec<PathBuf> = ["/var/lib/kubelet", "/var/lib/containerd"]
            .iter()
            .map(PathBuf::from)
            .collect();
        record_runtime_dirs(&ctx, "ServicesEnabled", &dirs).unwrap();
        let j = ctx.journal_snapshot();
        let absent: Vec<PathBuf> = j
            .undo_for("ServicesEnabled")
            .into_iter()
            .find_map(|e| match e.op {
                UndoOp::Custom { kind, data } if kind == RUNTIME_STATE => {
                    serde_json::from_value(data["absent"].clone()).ok()
                }
                _ => None,
            })
            .expect("no runtime-state record");
        assert!(!absent.contains(&PathBuf::from("/var/lib/containerd")));
        assert!(absent.contains(&PathBuf::from("/var/lib/kubelet")));
    }

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
