//! Actions: what a step wants done, as data. Planning returns them, `plan -o json` prints them, the engine
//! applies them and journals how to undo them.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

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
    /// Behaviour the generic actions can't express (artifact installs, Azure calls). Applied by the step
    /// that planned it; `detail` is shown in plans and must not contain secrets.
    Custom {
        kind: String,
        summary: String,
        detail: serde_json::Value,
    },
    /// Wait until something outside the host's files is true (the node `Ready` on the API server). It
    /// changes nothing, so the engine does not journal it: a converged node that only waited wrote nothing.
    /// Applied by the step that planned it, like [`Action::Custom`].
    Wait {
        kind: String,
        summary: String,
        detail: serde_json::Value,
    },
}

fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

impl Action {
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
            Action::Custom { summary, .. } | Action::Wait { summary, .. } => summary.clone(),
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
