//! `aks-flex-node preflight`: named, read-only checks of the machine, the configuration and Azure, run on
//! their own and by `bootstrap` before its first change (kubeadm's model).
//!
//! Every check has a stable name (`Swap`, `Port-10250`, `AzurePermissions`, ...), a severity (error or
//! warning), a message and a one-line remediation. The runner runs them all, never stopping at the first
//! problem; `--ignore-preflight-errors=NAME,...` (case-insensitive, or `all`) turns the named errors into
//! warnings that are still shown (status `ignored`). Nothing here changes the machine or Azure: host facts
//! are read through [`crate::host::Host`] (so a sandbox root sees a test's staged files), Azure only with
//! reads (GET/HEAD, and the token request).
//!
//! A node this agent already bootstrapped passes: ports held by the kubelet/containerd it manages and files
//! it installed (both known from its journal) are not conflicts, so `bootstrap` re-runs are never refused.

pub mod azure;
pub mod host;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::engine::Context;
use crate::model::Phase;

/// How bad a failed check is: an error stops `bootstrap` (unless ignored), a warning never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// What happened to a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    /// A warning-severity check found a problem.
    Warn,
    /// An error-severity check found a problem.
    Fail,
    /// The check could not or need not run here (the message says why).
    Skipped,
    /// An error turned into a warning by `--ignore-preflight-errors`.
    Ignored,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skipped => "SKIP",
            Status::Ignored => "IGNORED",
        }
    }
}

/// The result of one named check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub severity: Severity,
    pub status: Status,
    pub message: String,
    /// One line saying what to do; empty when there is nothing to do.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remediation: String,
}

impl CheckResult {
    pub fn pass(name: impl Into<String>, severity: Severity, message: impl Into<String>) -> Self {
        CheckResult {
            name: name.into(),
            severity,
            status: Status::Pass,
            message: message.into(),
            remediation: String::new(),
        }
    }

    /// A problem: `fail` for an error-severity check, `warn` for a warning.
    pub fn problem(
        name: impl Into<String>,
        severity: Severity,
        message: impl Into<String>,
        remediation: impl Into<String>,
    ) -> Self {
        CheckResult {
            name: name.into(),
            severity,
            status: match severity {
                Severity::Error => Status::Fail,
                Severity::Warning => Status::Warn,
            },
            message: message.into(),
            remediation: remediation.into(),
        }
    }

    /// Not run; `reason` says why (it is prefixed with "skipped: ").
    pub fn skipped(name: impl Into<String>, severity: Severity, reason: impl AsRef<str>) -> Self {
        CheckResult {
            name: name.into(),
            severity,
            status: Status::Skipped,
            message: format!("skipped: {}", reason.as_ref()),
            remediation: String::new(),
        }
    }
}

/// The checks named by `--ignore-preflight-errors` (case-insensitive), or all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreSet {
    all: bool,
    /// Lower-cased names.
    names: BTreeSet<String>,
}

impl IgnoreSet {
    /// Ignore nothing.
    pub fn none() -> Self {
        IgnoreSet::default()
    }

    /// From the flag's values (each may itself be a comma-separated list); `all` ignores every error.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Self {
        let mut set = IgnoreSet::default();
        for v in values {
            for n in v
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
            {
                if n.eq_ignore_ascii_case("all") {
                    set.all = true;
                } else {
                    set.names.insert(n.to_ascii_lowercase());
                }
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.names.is_empty()
    }

    /// Whether errors of check `name` are ignored.
    pub fn ignores(&self, name: &str) -> bool {
        self.all || self.names.contains(&name.to_ascii_lowercase())
    }
}

/// What to run. [`run`] runs everything that applies to the configuration; `bootstrap` leaves out the
/// Azure checks when its identity phase will not run (`--skip-phase identity`, or `--only` without
/// `ArcInstall`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub ignore: IgnoreSet,
    /// Why the Azure checks are skipped, if they are.
    pub skip_azure: Option<String>,
    /// Why the host checks are skipped, if they are (only the identity phase runs: nothing is installed).
    pub skip_host: Option<String>,
}

impl Options {
    /// The options for a bootstrap run with these skipped phases and selected steps.
    pub fn for_bootstrap(
        ignore: IgnoreSet,
        skip: &BTreeSet<Phase>,
        steps: &[Box<dyn crate::engine::Step>],
    ) -> Self {
        let skip_azure = if skip.contains(&Phase::Identity) {
            Some("the identity phase is skipped (--skip-phase identity)".to_string())
        } else if !steps
            .iter()
            .any(|s| s.name() == crate::steps::arc_install::NAME)
        {
            Some(format!(
                "the identity phase's step {} is not selected (--only)",
                crate::steps::arc_install::NAME
            ))
        } else {
            None
        };
        let host_phase_runs = steps
            .iter()
            .any(|s| s.phase() != Phase::Identity && !skip.contains(&s.phase()));
        let skip_host = (!host_phase_runs)
            .then(|| "only the identity phase runs: nothing is installed on this host".to_string());
        Options {
            ignore,
            skip_azure,
            skip_host,
        }
    }

    /// The options for `preflight --skip-phase ...`.
    pub fn for_phases(ignore: IgnoreSet, skip: &BTreeSet<Phase>) -> Self {
        Self::for_bootstrap(ignore, skip, &crate::steps::all_steps())
    }
}

/// Every check's result, in order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub root: std::path::PathBuf,
    pub checks: Vec<CheckResult>,
    /// `--ignore-preflight-errors` names that match no check (probably a typo).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_ignored: Vec<String>,
}

impl Report {
    /// Build a report: apply the ignore set (a named error becomes `ignored`) and note unknown names.
    pub fn new(root: std::path::PathBuf, mut checks: Vec<CheckResult>, ignore: &IgnoreSet) -> Self {
        for c in &mut checks {
            if c.status == Status::Fail && ignore.ignores(&c.name) {
                c.status = Status::Ignored;
            }
        }
        let unknown_ignored = ignore
            .names
            .iter()
            .filter(|n| !checks.iter().any(|c| c.name.eq_ignore_ascii_case(n)))
            .cloned()
            .collect();
        Report {
            api_version: "aks-flex-node/v1",
            kind: "PreflightReport",
            root,
            checks,
            unknown_ignored,
        }
    }

    /// The failed error-severity checks (not ignored): any of them stops `bootstrap`.
    pub fn errors(&self) -> Vec<&CheckResult> {
        self.checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .collect()
    }

    /// Warnings, including ignored errors.
    pub fn warnings(&self) -> Vec<&CheckResult> {
        self.checks
            .iter()
            .filter(|c| matches!(c.status, Status::Warn | Status::Ignored))
            .collect()
    }

    /// The human report: one line per check, the remediation under each problem, a summary line.
    pub fn render_text(&self) -> String {
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = format!("Preflight checks for root {}:\n", self.root.display());
        let indent = format!("\n  {:<7} {:<width$}  ", "", "");
        for c in &self.checks {
            out.push_str(&format!(
                "  {:<7} {:<width$}  {}\n",
                c.status.label(),
                c.name,
                c.message.replace('\n', &indent)
            ));
            if !c.remediation.is_empty() && c.status != Status::Pass {
                out.push_str(&format!(
                    "  {:<7} {:<width$}  fix: {}\n",
                    "", "", c.remediation
                ));
            }
        }
        for n in &self.unknown_ignored {
            out.push_str(&format!(
                "note: --ignore-preflight-errors names {n:?}, which is no check of this run\n"
            ));
        }
        let (e, w) = (self.errors().len(), self.warnings().len());
        if e == 0 {
            out.push_str(&format!("Preflight passed: 0 errors, {w} warning(s).\n"));
        } else {
            out.push_str(&format!(
                "Preflight failed: {e} error(s), {w} warning(s). Fix them, or skip a check with --ignore-preflight-errors={}.\n",
                self.errors()
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        out
    }

    /// What `bootstrap` says when it refuses: each failed check with its remediation.
    pub fn refusal(&self) -> String {
        let errors = self.errors();
        let mut lines = vec![format!(
            "preflight found {} error(s); nothing was changed:",
            errors.len()
        )];
        for c in &errors {
            lines.push(format!(
                "  - {}: {}",
                c.name,
                c.message.replace('\n', "\n    ")
            ));
            if !c.remediation.is_empty() {
                lines.push(format!("    fix: {}", c.remediation));
            }
        }
        lines.push(format!(
            "  to go ahead anyway, re-run with --ignore-preflight-errors={} (or =all); `aks-flex-node preflight` shows every check",
            errors
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ));
        lines.join("\n")
    }
}

/// Run every check that applies (host, and Azure when the configuration has an Azure part) and apply
/// `ignore`. For the daemon and `preflight`.
pub async fn run(ctx: &Context, ignore: &IgnoreSet) -> Report {
    run_with(
        ctx,
        &Options {
            ignore: ignore.clone(),
            ..Options::default()
        },
    )
    .await
}

/// Run the checks `opts` selects.
pub async fn run_with(ctx: &Context, opts: &Options) -> Report {
    let mut checks = match &opts.skip_host {
        None => host::run(ctx),
        Some(reason) => host::NAMES
            .iter()
            .map(|(n, sev)| CheckResult::skipped(*n, *sev, reason))
            .collect(),
    };
    checks.extend(azure::run(ctx, opts.skip_azure.as_deref()).await);
    Report::new(ctx.host.fs.root().to_path_buf(), checks, &opts.ignore)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<CheckResult> {
        vec![
            CheckResult::pass("OS", Severity::Warning, "Ubuntu 24.04"),
            CheckResult::problem("Port-10250", Severity::Error, "in use", "stop it"),
            CheckResult::problem("Swap", Severity::Warning, "swap on", "nothing"),
            CheckResult::problem("RequiredPrograms", Severity::Error, "no iptables", "apt"),
            CheckResult::skipped("AzureLogin", Severity::Error, "no Azure"),
        ]
    }

    fn statuses(r: &Report) -> Vec<(String, Status)> {
        r.checks
            .iter()
            .map(|c| (c.name.clone(), c.status))
            .collect()
    }

    #[test]
    fn ignore_names_are_case_insensitive_comma_separated_and_repeatable() {
        let ig = IgnoreSet::parse(&["port-10250, swap", "REQUIREDPROGRAMS"]);
        assert!(ig.ignores("Port-10250") && ig.ignores("Swap") && ig.ignores("requiredprograms"));
        assert!(!ig.ignores("OS"));
        let r = Report::new("/".into(), sample(), &ig);
        assert!(r.errors().is_empty());
        assert_eq!(statuses(&r)[1], ("Port-10250".to_string(), Status::Ignored));
        // An ignored error is still shown, as a warning, with its severity kept.
        assert_eq!(r.warnings().len(), 3);
        assert_eq!(r.checks[1].severity, Severity::Error);
        assert!(r.render_text().contains("IGNORED"), "{}", r.render_text());
        // A warning is never turned into anything else.
        assert_eq!(r.checks[2].status, Status::Warn);
    }

    #[test]
    fn all_ignores_every_error_and_nothing_ignores_none() {
        let r = Report::new("/".into(), sample(), &IgnoreSet::parse(&["All"]));
        assert!(r.errors().is_empty());
        let r = Report::new("/".into(), sample(), &IgnoreSet::none());
        let names: Vec<&str> = r.errors().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["Port-10250", "RequiredPrograms"]);
        let r = Report::new("/".into(), sample(), &IgnoreSet::parse(&["port-10250"]));
        let names: Vec<&str> = r.errors().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["RequiredPrograms"]);
    }

    #[test]
    fn unknown_ignore_names_are_noted() {
        let r = Report::new("/".into(), sample(), &IgnoreSet::parse(&["Swapp"]));
        assert_eq!(r.unknown_ignored, vec!["swapp".to_string()]);
        assert!(r.render_text().contains("\"swapp\""));
    }

    #[test]
    fn text_and_refusal_name_every_error_and_the_flag() {
        let r = Report::new("/".into(), sample(), &IgnoreSet::none());
        let t = r.render_text();
        assert!(t.contains("FAIL") && t.contains("fix: stop it"), "{t}");
        assert!(
            t.contains("--ignore-preflight-errors=Port-10250,RequiredPrograms"),
            "{t}"
        );
        assert!(t.contains("skipped: no Azure"), "{t}");
        let refusal = r.refusal();
        assert!(refusal.contains("nothing was changed"), "{refusal}");
        assert!(refusal.contains("- Port-10250: in use"), "{refusal}");
        assert!(refusal.contains("fix: apt"), "{refusal}");
        assert!(
            refusal.contains("--ignore-preflight-errors=Port-10250,RequiredPrograms"),
            "{refusal}"
        );
    }

    #[test]
    fn json_shape() {
        let r = Report::new("/r".into(), sample(), &IgnoreSet::parse(&["swap"]));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["apiVersion"], "aks-flex-node/v1");
        assert_eq!(v["kind"], "PreflightReport");
        assert_eq!(v["root"], "/r");
        assert_eq!(v["checks"][0]["status"], "pass");
        assert_eq!(v["checks"][0]["severity"], "warning");
        assert!(v["checks"][0].get("remediation").is_none());
        assert_eq!(v["checks"][1]["status"], "fail");
        assert_eq!(v["checks"][1]["severity"], "error");
        assert_eq!(v["checks"][1]["remediation"], "stop it");
        assert_eq!(v["checks"][2]["status"], "warn");
        assert_eq!(v["checks"][4]["status"], "skipped");
        assert_eq!(v["checks"][4]["message"], "skipped: no Azure");
        // "swap" names a warning, not an error: nothing to ignore, but it is a known check.
        assert!(v.get("unknownIgnored").is_none());
    }
}
