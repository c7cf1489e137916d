//! A recording fault injector for the effect boundary (in the manner of youki's recording `Syscall` fake):
//! attached to a [`super::Host`] with [`super::Host::with_faults`], it records every effect the host is
//! asked to carry out, in order, and can make a chosen one fail, so tests reach the error paths of the
//! engine (journal saves, undo) that real hardware rarely offers on demand.
//!
//! Every *mutating* method of [`super::RootFs`] and the command/service methods of [`super::Host`] consult
//! it first. An injected failure happens *before* the effect: nothing is changed, and the caller gets the
//! error type it would get from the real failure ([`super::FsError::Io`] for files, a failed
//! [`super::CommandError::Failed`] for commands and services) whose message says `injected fault` and
//! names the operation and its path or command line.
//!
//! Counting: a rule armed with [`Faults::fail`] counts the calls of its kind *from the moment it is
//! armed*, so a test can bootstrap first and then arm "the 2nd remove from now" for unbootstrap.
//!
//! The sandbox's own bookkeeping (`sandbox.json`, the record of simulated services) is the fake machine's
//! state, not an effect of the agent: it is neither recorded nor subject to faults.
//!
//! Always compiled, not `#[cfg(test)]`: the integration tests under `tests/` build against the library
//! without `cfg(test)` and need it too. It costs a host without faults one `Option` check per effect and is
//! a few dozen lines; nothing in the agent attaches it.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// The kind of an effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`super::RootFs::write_atomic`].
    Write,
    /// [`super::RootFs::remove_file`].
    Remove,
    /// [`super::RootFs::remove_dir_if_empty`] and [`super::RootFs::remove_dir_all`].
    RemoveDir,
    /// [`super::RootFs::create_dir_all`] (one call, whatever it creates).
    CreateDir,
    /// [`super::RootFs::symlink`].
    Symlink,
    /// [`super::RootFs::set_mode`].
    SetMode,
    /// [`super::RootFs::open_append`] (creates the file when absent: the lock file, the log).
    Append,
    /// [`super::Host::run`] of a command that changes the host ([`super::Effect::MutatesHost`]).
    Run,
    /// [`super::Host::run`] of a read-only command: not an effect, but recorded and injectable (a probe
    /// that fails).
    Query,
    /// [`super::Host::service`].
    Service,
    /// [`super::Host::daemon_reload`].
    DaemonReload,
}

impl Op {
    /// Whether this kind changes the machine (everything but [`Op::Query`]).
    pub fn mutates(self) -> bool {
        self != Op::Query
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One rule: calls of `op` (on `target`, when given) are counted from when it was armed; it fires at the
/// `nth` of them, or at every one when `nth` is `None`.
#[derive(Debug)]
struct Rule {
    op: Op,
    target: Option<String>,
    nth: Option<usize>,
    seen: usize,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<(Op, String)>,
    rules: Vec<Rule>,
}

/// The recorder and injector. Cheap to clone: clones share one record (attach one clone, keep another to
/// arm and inspect).
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make the `nth` (1-based) call of kind `op` from now fail, once.
    pub fn fail(&self, op: Op, nth: usize) -> &Self {
        self.arm(op, None, Some(nth))
    }

    /// Make every call of kind `op` on `target` fail until [`Faults::clear`]. `target` is the host path
    /// as the caller names it (`/etc/x.conf`), or for [`Op::Run`], [`Op::Query`], [`Op::Service`] and
    /// [`Op::DaemonReload`] the command line (`systemctl stop kubelet`).
    pub fn fail_on(&self, op: Op, target: impl Into<String>) -> &Self {
        self.arm(op, Some(target.into()), None)
    }

    /// Make the `nth` (1-based) call of kind `op` on `target` from now fail, once.
    pub fn fail_nth_on(&self, op: Op, target: impl Into<String>, nth: usize) -> &Self {
        self.arm(op, Some(target.into()), Some(nth))
    }

    fn arm(&self, op: Op, target: Option<String>, nth: Option<usize>) -> &Self {
        assert!(nth != Some(0), "calls are counted from 1");
        self.state().rules.push(Rule {
            op,
            target,
            nth,
            seen: 0,
        });
        self
    }

    /// Disarm every rule (the record is kept).
    pub fn clear(&self) {
        self.state().rules.clear();
    }

    /// Every call so far, in order, as (kind, path or command line), including the ones that failed by
    /// injection (they were attempted).
    pub fn calls(&self) -> Vec<(Op, String)> {
        self.state().calls.clone()
    }

    /// The calls so far, forgetting them (the next [`Faults::calls`] starts empty).
    pub fn take_calls(&self) -> Vec<(Op, String)> {
        std::mem::take(&mut self.state().calls)
    }

    /// Record a call and tell whether it must fail; the message to fail with when it must.
    pub(crate) fn check(&self, op: Op, target: &str) -> Option<String> {
        let mut st = self.state();
        st.calls.push((op, target.to_string()));
        let mut fire = None;
        for r in st.rules.iter_mut() {
            if r.op != op || r.target.as_deref().is_some_and(|t| t != target) {
                continue;
            }
            r.seen += 1;
            if r.nth.is_none_or(|n| n == r.seen) && fire.is_none() {
                fire = Some(match r.nth {
                    Some(n) => format!("injected fault: {op} call #{n} ({target})"),
                    None => format!("injected fault: {op} of {target}"),
                });
            }
        }
        fire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nth_call_of_a_kind_fails_once_counted_from_arming() {
        let f = Faults::new();
        assert!(f.check(Op::Write, "/a").is_none());
        f.fail(Op::Write, 2);
        assert!(f.check(Op::Remove, "/a").is_none(), "another kind");
        assert!(f.check(Op::Write, "/b").is_none());
        let msg = f.check(Op::Write, "/c").expect("2nd write from arming");
        assert!(msg.contains("injected fault") && msg.contains("Write") && msg.contains("/c"));
        assert!(f.check(Op::Write, "/d").is_none(), "fires once");
        assert_eq!(
            f.calls(),
            vec![
                (Op::Write, "/a".to_string()),
                (Op::Remove, "/a".into()),
                (Op::Write, "/b".into()),
                (Op::Write, "/c".into()),
                (Op::Write, "/d".into()),
            ]
        );
    }

    #[test]
    fn a_target_rule_fails_every_call_on_it_until_cleared() {
        let f = Faults::new();
        f.fail_on(Op::Remove, "/x").fail_nth_on(Op::Write, "/j", 2);
        assert!(f.check(Op::Remove, "/y").is_none());
        assert!(f.check(Op::Remove, "/x").is_some());
        assert!(f.check(Op::Remove, "/x").is_some());
        assert!(f.check(Op::Write, "/x").is_none(), "another kind");
        assert!(f.check(Op::Write, "/j").is_none());
        assert!(f.check(Op::Write, "/k").is_none(), "another target");
        assert!(f.check(Op::Write, "/j").is_some(), "2nd write of /j");
        f.clear();
        assert!(f.check(Op::Remove, "/x").is_none());
        assert_eq!(f.take_calls().len(), 8);
        assert!(f.calls().is_empty());
    }

    #[tokio::test]
    async fn an_injected_failure_changes_nothing_and_says_what_failed() {
        use crate::host::{Host, HostError, ServiceOp, UnitState, STATE_DIR};
        use std::path::Path;

        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        let host = Host::new(dir.path()).unwrap().with_faults(faults.clone());
        host.fs.create_dir_all(Path::new(STATE_DIR), 0o700).unwrap();
        host.fs
            .write_atomic(Path::new("/f"), b"old", 0o644, None)
            .unwrap();

        faults.fail(Op::Write, 1);
        let err = host
            .fs
            .write_atomic(Path::new("/f"), b"new", 0o644, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("injected fault") && err.contains("/f") && err.contains("Write"),
            "{err}"
        );
        assert_eq!(host.fs.read(Path::new("/f")).unwrap().unwrap(), b"old");

        faults.fail_on(Op::Service, "systemctl start kubelet");
        let err = host.service(ServiceOp::Start, "kubelet").await.unwrap_err();
        assert!(
            matches!(
                &err,
                HostError::Command(crate::host::CommandError::Failed { .. })
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("`systemctl start kubelet`")
                && err.to_string().contains("injected fault"),
            "{err}"
        );
        assert_eq!(
            host.unit_state("kubelet").await.unwrap(),
            UnitState::default(),
            "the failed start was simulated anyway"
        );
        // Another unit is not affected; its sandbox bookkeeping (sandbox.json) is not an effect.
        host.service(ServiceOp::Enable, "containerd").await.unwrap();

        faults.fail(Op::Remove, 1).fail(Op::DaemonReload, 1);
        assert!(host.fs.remove_file(Path::new("/f")).is_err());
        assert!(host.fs.exists(Path::new("/f")).unwrap());
        assert!(host.daemon_reload().await.is_err());
        assert_eq!(host.sandbox_record().unwrap().unwrap().daemon_reloads, 0);

        assert_eq!(
            faults.calls(),
            vec![
                (Op::CreateDir, "/var/lib/aks-flex-node".to_string()),
                (Op::Write, "/f".into()),
                (Op::Write, "/f".into()),
                (Op::Service, "systemctl start kubelet".into()),
                (Op::Service, "systemctl enable containerd".into()),
                (Op::Remove, "/f".into()),
                (Op::DaemonReload, "systemctl daemon-reload".into()),
            ]
        );
    }

    #[tokio::test]
    async fn commands_are_recorded_as_runs_or_queries() {
        use crate::host::{CommandSpec, Host};

        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::new();
        let host = Host::new(dir.path()).unwrap().with_faults(faults.clone());
        host.run(&CommandSpec::new("true")).await.unwrap();
        host.run(&CommandSpec::new("modprobe").arg("overlay").mutates_host())
            .await
            .unwrap();
        faults.fail(Op::Run, 1);
        let err = host
            .run(
                &CommandSpec::new("sysctl")
                    .args(["-w", "a=1"])
                    .mutates_host(),
            )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sysctl -w a=1`") && err.contains("injected"),
            "{err}"
        );
        assert_eq!(
            host.sysctl_value("a").unwrap(),
            None,
            "it was not simulated"
        );
        assert_eq!(
            faults.calls(),
            vec![
                (Op::Query, "true".to_string()),
                (Op::Run, "modprobe overlay".into()),
                (Op::Run, "sysctl -w a=1".into()),
            ]
        );
        assert!(!Op::Query.mutates() && Op::Run.mutates());
    }
}
