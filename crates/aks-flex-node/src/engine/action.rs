//! Actions: what a step wants done, as data. Planning returns them, `plan -o json` prints them, the engine
//! applies them and journals how to undo them.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::install::InstallArtifact;
use crate::host::{Effect, Entry, Host, HostError, ServiceOp};

/// One change to the host or the cloud.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Action {
    /// Create or replace a file with exactly this content and mode (owner root:root unless given).
    #[serde(rename_all = "camelCase")]
    WriteFile {
        path: PathBuf,
        #[serde(serialize_with = "octal")]
        mode: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        owner: Option<(u32, u32)>,
        #[serde(skip)]
        content: Vec<u8>,
        /// Content is a secret: never shown in plans, diffs or logs.
        secret: bool,
        /// Why this content, when the file alone does not say (shown in the plan's summary).
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Remove a file or symlink.
    RemoveFile { path: PathBuf },
    /// Make `path` a symlink to `target`.
    Symlink { path: PathBuf, target: PathBuf },
    /// Create a directory (and parents) with `mode`.
    #[serde(rename_all = "camelCase")]
    EnsureDir {
        path: PathBuf,
        #[serde(serialize_with = "octal")]
        mode: u32,
    },
    /// Run a program. Arguments never carry secrets (secrets go through files or stdin).
    Run {
        argv: Vec<String>,
        description: String,
        effect: Effect,
    },
    /// A systemd unit operation.
    Service { op: ServiceOp, unit: String },
    /// `systemctl daemon-reload`.
    DaemonReload,
    /// Download, verify and install a component's files and its install record (see
    /// [`super::install`]). Applied by the engine from this data alone.
    InstallArtifact(Box<InstallArtifact>),
    /// `sysctl -p <file>`; first the live value of each of `keys` not journaled yet is recorded, so undo
    /// writes back exactly what was there before the agent's first change.
    ApplySysctls { file: PathBuf, keys: Vec<String> },
    /// `swapoff -a`, journaled first so undo turns swap back on.
    SwapOff,
    /// Record which of `dirs` do not exist yet (before the services first start), so unbootstrap removes
    /// only the runtime directories the services create.
    RecordRuntimeDirs { dirs: Vec<PathBuf> },
    /// Watch `watch` (just started or restarted) until each stays running for `settleSeconds`, then mark
    /// the `consumed` files as taken into account (a service that does not stay up fails the step, and the
    /// files stay marked, so the next run restarts it again).
    #[serde(rename_all = "camelCase")]
    SettleServices {
        watch: Vec<String>,
        consumed: Vec<PathBuf>,
        settle_seconds: u64,
    },
    /// Register (or reconnect) the Arc machine with `azcmagent connect` and wait for its managed identity.
    #[serde(rename_all = "camelCase")]
    ArcConnect {
        resource_id: String,
        machine_name: String,
        resource_group: String,
        location: String,
        tags: std::collections::BTreeMap<String, String>,
        reconnect: bool,
    },
    /// Assign `role` on `scope` to the Arc identity (a deterministic assignment name, so it is idempotent).
    #[serde(rename_all = "camelCase")]
    AssignRole {
        role: String,
        role_definition_id: String,
        scope: String,
        /// Unknown until the machine is connected in this run.
        principal_id: Option<String>,
        assignment_name: Option<String>,
    },
    /// Wait until the role assignments on `scope` are visible to the cluster.
    #[serde(rename_all = "camelCase")]
    WaitRoles { scope: String, timeout_seconds: u64 },
    /// Check that an administrator assigned `roles` on `scope` (`azure.arc.autoRoleAssignment=false`).
    #[serde(rename_all = "camelCase")]
    VerifyRoles {
        scope: String,
        roles: Vec<String>,
        principal_id: Option<String>,
    },
    /// The cluster's API server the kubelet will use (`listClusterUserCredential`, read while planning).
    /// Changes nothing; shown so the plan says which cluster endpoint the node joins.
    UseClusterEndpoint { server: String, cluster: String },
    /// Wait until node `node` is `Ready` on the API server. It changes nothing, so the engine does not
    /// journal it: a converged node that only waited wrote nothing.
    #[serde(rename_all = "camelCase")]
    WaitNodeReady { node: String, timeout_seconds: u64 },
}

fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

impl Action {
    /// True for a wait: it changes nothing, so the engine does not journal it, and a step that only
    /// waited did not change the node.
    pub fn is_wait(&self) -> bool {
        matches!(self, Action::WaitNodeReady { .. })
    }

    /// A text file action (`secret: false`).
    pub fn write(path: impl Into<PathBuf>, mode: u32, content: impl Into<Vec<u8>>) -> Self {
        Action::WriteFile {
            path: path.into(),
            mode,
            owner: None,
            content: content.into(),
            secret: false,
            note: None,
        }
    }

    /// A secret file action: content never shown.
    pub fn write_secret(path: impl Into<PathBuf>, mode: u32, content: impl Into<Vec<u8>>) -> Self {
        Action::WriteFile {
            path: path.into(),
            mode,
            owner: None,
            content: content.into(),
            secret: true,
            note: None,
        }
    }

    /// The same action with a note for the plan (only file writes carry one).
    pub fn with_note(mut self, text: impl Into<String>) -> Self {
        if let Action::WriteFile { note, .. } = &mut self {
            *note = Some(text.into());
        }
        self
    }

    pub fn run(argv: &[&str], description: impl Into<String>, effect: Effect) -> Self {
        Action::Run {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            description: description.into(),
            effect,
        }
    }

    /// One line for humans: "create /etc/x (0644)", "run sysctl -p ...".
    pub fn summary(&self) -> String {
        match self {
            Action::WriteFile {
                path, mode, note, ..
            } => match note {
                Some(n) => format!("write {} ({mode:04o}): {n}", path.display()),
                None => format!("write {} ({mode:04o})", path.display()),
            },
            Action::RemoveFile { path } => format!("remove {}", path.display()),
            Action::Symlink { path, target } => {
                format!("link {} -> {}", path.display(), target.display())
            }
            Action::EnsureDir { path, mode } => {
                format!("create directory {} ({mode:04o})", path.display())
            }
            Action::Run {
                argv, description, ..
            } => format!("{description}: {}", argv.join(" ")),
            Action::Service { op, unit } => format!("systemctl {} {unit}", op.verb()),
            Action::DaemonReload => "systemctl daemon-reload".into(),
            Action::InstallArtifact(a) => a.summary(),
            Action::ApplySysctls { file, .. } => {
                format!("apply kernel settings: sysctl -p {}", file.display())
            }
            Action::SwapOff => "turn swap off now: swapoff -a".into(),
            Action::RecordRuntimeDirs { .. } => "record which runtime directories (/var/lib/containerd, /var/lib/kubelet, ...) exist before the services first start, so unbootstrap removes only what they create".into(),
            Action::SettleServices {
                watch,
                settle_seconds,
                ..
            } => {
                if watch.is_empty() {
                    "mark changed files as taken into account".to_string()
                } else {
                    format!(
                        "check that {} stay(s) running for {settle_seconds}s, then mark changed files as taken into account",
                        watch.join(", ")
                    )
                }
            }
            Action::ArcConnect {
                machine_name,
                resource_group,
                location,
                reconnect,
                ..
            } => format!(
                "{} Arc machine {machine_name} in {resource_group} ({location})",
                if *reconnect { "reconnect" } else { "register" }
            ),
            Action::AssignRole { role, scope, .. } => {
                format!("assign {role} to the Arc identity on cluster {scope}")
            }
            Action::WaitRoles { .. } => "wait until the role assignments are visible".into(),
            Action::VerifyRoles { scope, roles, .. } => format!(
                "check that an administrator assigned {} to the Arc identity on cluster {scope} (azure.arc.autoRoleAssignment=false)",
                roles.join(", ")
            ),
            Action::UseClusterEndpoint { server, .. } => {
                format!("use cluster API server {server} (listClusterUserCredential)")
            }
            Action::WaitNodeReady {
                node,
                timeout_seconds,
            } => format!(
                "wait up to {timeout_seconds}s for node {node} to be Ready on the API server (as the kubelet)"
            ),
        }
    }

    /// The action as `plan -o json` shows it, with a unified diff for file writes (secrets redacted).
    pub fn describe(&self, host: &Host) -> Result<serde_json::Value, HostError> {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let serde_json::Value::Object(map) = &mut v {
            map.insert("summary".into(), self.summary().into());
            if let Action::WriteFile {
                path,
                content,
                secret,
                ..
            } = self
            {
                let old = host.fs.read(path)?;
                map.insert(
                    "change".into(),
                    if old.is_some() { "update" } else { "create" }.into(),
                );
                map.insert("sha256".into(), sha256_hex(content).into());
                let diff = if *secret {
                    format!("(secret content, {} bytes, not shown)", content.len())
                } else {
                    unified_diff(path, old.as_deref(), content)
                };
                map.insert("diff".into(), diff.into());
            }
        }
        Ok(v)
    }
}

/// A unified diff between the current and the new content of a file.
pub fn unified_diff(path: &Path, old: Option<&[u8]>, new: &[u8]) -> String {
    let old_text = old.map(String::from_utf8_lossy).unwrap_or_default();
    let new_text = String::from_utf8_lossy(new);
    let (a, b) = (
        if old.is_some() {
            format!("a{}", path.display())
        } else {
            "/dev/null".to_string()
        },
        format!("b{}", path.display()),
    );
    similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&a, &b)
        .to_string()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The write action needed to make `path` hold `content` with `mode`, or `None` when it already does.
/// This is how steps stay idempotent: a converged file yields no action and so no write.
pub fn file_action(
    host: &Host,
    path: &Path,
    mode: u32,
    content: impl Into<Vec<u8>>,
    secret: bool,
) -> Result<Option<Action>, HostError> {
    let content = content.into();
    let up_to_date = match host.fs.entry(path)? {
        Some(Entry::File { mode: m, .. }) if m == mode => {
            host.fs.read(path)?.as_deref() == Some(content.as_slice())
        }
        _ => false,
    };
    Ok((!up_to_date).then(|| Action::WriteFile {
        path: path.to_path_buf(),
        mode,
        owner: None,
        content,
        secret,
        note: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_of_a_new_file_is_against_dev_null() {
        let d = unified_diff(Path::new("/etc/x.conf"), None, b"a = 1\n");
        assert!(d.starts_with("--- /dev/null\n+++ b/etc/x.conf\n"), "{d}");
        assert!(d.contains("+a = 1"));
    }

    #[tokio::test]
    async fn secret_files_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let a = Action::write_secret("/k", 0o600, "token: hunter2\n");
        let v = a.describe(&host).unwrap();
        let text = v.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(v["mode"], "0600");
        assert_eq!(v["type"], "writeFile");
        assert_eq!(v["change"], "create");
    }

    #[tokio::test]
    async fn file_action_is_none_when_converged_and_some_when_mode_differs() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        host.fs
            .write_atomic(Path::new("/f"), b"x", 0o644, None)
            .unwrap();
        assert!(file_action(&host, Path::new("/f"), 0o644, "x", false)
            .unwrap()
            .is_none());
        assert!(file_action(&host, Path::new("/f"), 0o600, "x", false)
            .unwrap()
            .is_some());
        assert!(file_action(&host, Path::new("/f"), 0o644, "y", false)
            .unwrap()
            .is_some());
    }
}
