//! The journal: `<root>/var/lib/aks-flex-node/journal.json`, written atomically before and after every
//! action. It is what makes a crash resumable and `unbootstrap` exact:
//!
//! - before the agent first touches a path it records what was there (absent, a file — copied to
//!   `backups/` —, or a symlink), so undo restores the original no matter how often the path changed since;
//! - every directory it creates is recorded and removed again (if empty) on undo;
//! - before the first operation on a systemd unit it records whether the unit was enabled/active;
//! - steps may add their own undo records (artifacts, Azure resources);
//! - a log of every action with its status (`pending` until it finished) tells an operator what happened.
//!
//! Undo replays these records in reverse order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host::{Entry, Host, HostError, UnitState, STATE_DIR};

pub const JOURNAL_PATH: &str = "/var/lib/aks-flex-node/journal.json";
pub const BACKUP_DIR: &str = "/var/lib/aks-flex-node/backups";
const JOURNAL_VERSION: u32 = 1;
/// Log entries kept per step (the newest).
pub const LOG_PER_STEP: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("journal {JOURNAL_PATH} is unreadable ({source}); move it aside to start over, but note that unbootstrap needs it to restore the files it backed up")]
    Corrupt {
        #[source]
        source: serde_json::Error,
    },
    #[error("journal {JOURNAL_PATH} has version {found}, this agent understands {JOURNAL_VERSION}; use the agent version that wrote it")]
    Version { found: u32 },
    /// The journal could not be serialized; nothing was written, the journal on disk is unchanged.
    #[error("cannot serialize the journal {JOURNAL_PATH} ({source}); the journal on disk was left unchanged")]
    Serialize {
        #[source]
        source: serde_json::Error,
    },
}

impl From<crate::host::FsError> for JournalError {
    fn from(e: crate::host::FsError) -> Self {
        JournalError::Host(e.into())
    }
}

/// What was at a path before the agent first changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Original {
    Absent,
    #[serde(rename_all = "camelCase")]
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        /// File name under `backups/` holding the original bytes.
        backup: String,
    },
    Symlink {
        target: PathBuf,
    },
    Dir {
        mode: u32,
    },
}

/// One way to take back something the agent did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum UndoOp {
    /// Put `path` back as it was.
    RestorePath { path: PathBuf, original: Original },
    /// Remove a directory the agent created (only if empty).
    RemoveDir { path: PathBuf },
    /// Put a unit back to its enabled/active state.
    RestoreUnit { unit: String, was: UnitState },
    /// Step-specific undo, handed back to the step that recorded it.
    Custom {
        kind: String,
        data: serde_json::Value,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UndoEntry {
    pub seq: u64,
    pub step: String,
    #[serde(flatten)]
    pub op: UndoOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EntryStatus {
    Pending,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub seq: u64,
    pub step: String,
    pub summary: String,
    pub status: EntryStatus,
    pub at: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub status: EntryStatus,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actions: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    pub version: u32,
    /// Directories created to hold the state directory itself (removed last by unbootstrap).
    #[serde(default)]
    pub state_dirs_created: Vec<PathBuf>,
    #[serde(default)]
    pub undo: Vec<UndoEntry>,
    #[serde(default)]
    pub log: Vec<LogEntry>,
    #[serde(default)]
    pub steps: BTreeMap<String, StepRecord>,
    /// Paths written since the services that read them were last (re)started.
    #[serde(default)]
    pub changed: BTreeSet<PathBuf>,
    /// The cluster's API server and CA as the identity phase last found them: the daemon heals the host
    /// (kubeconfig, CA) from this without calling Azure, and its Azure pass refreshes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<PersistedCluster>,
    #[serde(default)]
    next_seq: u64,
}

/// A [`super::ClusterEndpoint`] as kept in the journal, with the cluster it belongs to (a config that
/// names another cluster does not use it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistedCluster {
    /// `azure.targetCluster.resourceId` it was read for.
    pub resource_id: String,
    pub server: String,
    /// The cluster CA, PEM (a public certificate).
    pub ca_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_service_ip: Option<std::net::IpAddr>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            version: JOURNAL_VERSION,
            state_dirs_created: Vec::new(),
            undo: Vec::new(),
            log: Vec::new(),
            steps: BTreeMap::new(),
            changed: BTreeSet::new(),
            cluster: None,
            next_seq: 1,
        }
    }
}

impl Journal {
    /// Load the journal; an absent file is an empty journal.
    pub fn load(host: &Host) -> Result<Journal, JournalError> {
        match host.fs.read(Path::new(JOURNAL_PATH))? {
            None => Ok(Journal::default()),
            Some(bytes) => {
                let j: Journal = serde_json::from_slice(&bytes)
                    .map_err(|source| JournalError::Corrupt { source })?;
                if j.version != JOURNAL_VERSION {
                    return Err(JournalError::Version { found: j.version });
                }
                Ok(j)
            }
        }
    }

    /// Persist atomically (0600: backups of files may be sensitive). A serialization or write failure is
    /// returned and leaves the journal on disk as it was: never empty, never half-written.
    pub fn save(&self, host: &Host) -> Result<(), JournalError> {
        write_json_atomic(host, Path::new(JOURNAL_PATH), self)
    }

    /// Change the journal and persist it; if persisting fails, the in-memory journal is put back as it
    /// was, so memory and disk never disagree (a caller that goes on after the error sees the journal
    /// that is on disk).
    pub(crate) fn update<T>(
        &mut self,
        host: &Host,
        change: impl FnOnce(&mut Journal) -> T,
    ) -> Result<T, JournalError> {
        let before = self.clone();
        let out = change(self);
        if let Err(e) = self.save(host) {
            *self = before;
            return Err(e);
        }
        Ok(out)
    }

    /// True when the journal records nothing to undo.
    pub fn is_empty(&self) -> bool {
        self.undo.is_empty() && self.steps.is_empty()
    }

    fn seq(&mut self) -> u64 {
        let s = self.next_seq.max(1);
        self.next_seq = s + 1;
        s
    }

    /// Has `path` been recorded already (so its original is known)?
    pub fn knows_path(&self, path: &Path) -> bool {
        self.undo.iter().any(|e| match &e.op {
            UndoOp::RestorePath { path: p, .. } | UndoOp::RemoveDir { path: p } => p == path,
            _ => false,
        })
    }

    /// Record the original state of `path` (once). Copies a file's bytes to the backup directory.
    pub fn record_original(
        &mut self,
        host: &Host,
        step: &str,
        path: &Path,
    ) -> Result<(), JournalError> {
        if self.knows_path(path) {
            return Ok(());
        }
        // Taken for real only once the record is saved (a failed save leaves the journal unchanged).
        let seq = self.next_seq.max(1);
        let original = match host.fs.entry(path)? {
            None => Original::Absent,
            Some(Entry::Symlink { target }) => Original::Symlink { target },
            Some(Entry::Dir { mode }) => Original::Dir { mode },
            Some(Entry::File { mode, uid, gid, .. }) => {
                let bytes = host.fs.read(path)?.unwrap_or_default();
                let backup = format!("{seq:06}");
                host.fs.create_dir_all(Path::new(BACKUP_DIR), 0o700)?;
                host.fs
                    .write_atomic(&Path::new(BACKUP_DIR).join(&backup), &bytes, 0o600, None)?;
                Original::File {
                    mode,
                    uid,
                    gid,
                    backup,
                }
            }
            Some(Entry::Other) => Original::Absent,
        };
        self.update(host, |j| {
            j.next_seq = seq + 1;
            j.undo.push(UndoEntry {
                seq,
                step: step.to_string(),
                op: UndoOp::RestorePath {
                    path: path.to_path_buf(),
                    original,
                },
            })
        })
    }

    /// Record directories the agent created.
    pub fn record_created_dirs(
        &mut self,
        host: &Host,
        step: &str,
        dirs: Vec<PathBuf>,
    ) -> Result<(), JournalError> {
        if dirs.is_empty() {
            return Ok(());
        }
        self.update(host, |j| {
            for d in dirs {
                let seq = j.seq();
                j.undo.push(UndoEntry {
                    seq,
                    step: step.to_string(),
                    op: UndoOp::RemoveDir { path: d },
                });
            }
        })
    }

    /// Record a unit's state before its first change by the agent.
    pub fn record_unit(
        &mut self,
        host: &Host,
        step: &str,
        unit: &str,
        was: UnitState,
    ) -> Result<(), JournalError> {
        let known = self
            .undo
            .iter()
            .any(|e| matches!(&e.op, UndoOp::RestoreUnit { unit: u, .. } if u == unit));
        if known {
            return Ok(());
        }
        self.update(host, |j| {
            let seq = j.seq();
            j.undo.push(UndoEntry {
                seq,
                step: step.to_string(),
                op: UndoOp::RestoreUnit {
                    unit: unit.to_string(),
                    was,
                },
            })
        })
    }

    /// Record a step-specific undo.
    pub fn record_custom(
        &mut self,
        host: &Host,
        step: &str,
        kind: &str,
        data: serde_json::Value,
    ) -> Result<(), JournalError> {
        self.update(host, |j| {
            let seq = j.seq();
            j.undo.push(UndoEntry {
                seq,
                step: step.to_string(),
                op: UndoOp::Custom {
                    kind: kind.to_string(),
                    data,
                },
            })
        })
    }

    /// Append a pending log entry; returns its sequence number. The log keeps the newest
    /// [`LOG_PER_STEP`] entries of each step, so its size is bounded by the number of steps, not by how
    /// long the daemon has been repairing drift (undo records are kept once per object anyway).
    pub fn begin(&mut self, host: &Host, step: &str, summary: String) -> Result<u64, JournalError> {
        self.update(host, |j| {
            let seq = j.seq();
            j.log.push(LogEntry {
                seq,
                step: step.to_string(),
                summary,
                status: EntryStatus::Pending,
                at: chrono::Utc::now(),
                error: None,
            });
            let mine = j.log.iter().filter(|e| e.step == step).count();
            if mine > LOG_PER_STEP {
                let mut drop = mine - LOG_PER_STEP;
                j.log.retain(|e| {
                    if drop > 0 && e.step == step {
                        drop -= 1;
                        false
                    } else {
                        true
                    }
                });
            }
            seq
        })
    }

    /// Close a log entry.
    pub fn finish(
        &mut self,
        host: &Host,
        seq: u64,
        error: Option<String>,
    ) -> Result<(), JournalError> {
        self.update(host, |j| {
            if let Some(e) = j.log.iter_mut().find(|e| e.seq == seq) {
                e.status = if error.is_some() {
                    EntryStatus::Failed
                } else {
                    EntryStatus::Done
                };
                e.at = chrono::Utc::now();
                e.error = error;
            }
        })
    }

    pub fn set_step(
        &mut self,
        host: &Host,
        step: &str,
        actions: usize,
        error: Option<String>,
    ) -> Result<(), JournalError> {
        self.update(host, |j| {
            j.steps.insert(
                step.to_string(),
                StepRecord {
                    status: if error.is_some() {
                        EntryStatus::Failed
                    } else {
                        EntryStatus::Done
                    },
                    at: chrono::Utc::now(),
                    actions,
                    error,
                },
            );
        })
    }

    /// Undo entries of one step, newest first.
    pub fn undo_for(&self, step: &str) -> Vec<UndoEntry> {
        let mut v: Vec<UndoEntry> = self
            .undo
            .iter()
            .filter(|e| e.step == step)
            .cloned()
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.seq));
        v
    }

    /// Forget a step entirely (after its undo succeeded).
    pub fn forget_step(&mut self, host: &Host, step: &str) -> Result<(), JournalError> {
        self.update(host, |j| {
            j.undo.retain(|e| e.step != step);
            j.log.retain(|e| e.step != step);
            j.steps.remove(step);
        })
    }

    /// Drop one undo entry (it has been carried out).
    pub fn drop_undo(&mut self, host: &Host, seq: u64) -> Result<(), JournalError> {
        self.update(host, |j| j.undo.retain(|e| e.seq != seq))
    }
}

/// Serialize `value` and write it atomically (0600). A serialization error is returned before anything
/// is written, so the file keeps its previous content instead of becoming empty.
fn write_json_atomic<T: Serialize>(
    host: &Host,
    path: &Path,
    value: &T,
) -> Result<(), JournalError> {
    let text =
        serde_json::to_vec_pretty(value).map_err(|source| JournalError::Serialize { source })?;
    host.fs.write_atomic(path, &text, 0o600, None)?;
    Ok(())
}

/// Make sure the state directory exists, recording which of its parents the agent created. The journal
/// lives in that directory, so it can only be recorded after the creation: when the record cannot be
/// saved, the directories just created (still empty) are removed again, or no journal would list them and
/// unbootstrap would leave them behind.
pub fn ensure_state_dir(host: &Host, journal: &mut Journal) -> Result<(), JournalError> {
    let created = host.fs.create_dir_all(Path::new(STATE_DIR), 0o700)?;
    if !created.is_empty() {
        if let Err(e) = journal.update(host, |j| j.state_dirs_created.extend(created.clone())) {
            for d in created.iter().rev() {
                let _ = host.fs.remove_dir_if_empty(d);
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Replace the state directory by a plain file (so every write under it fails, even as root) and
    /// return a guard-free way to put it back.
    pub(crate) fn break_state_dir(root: &Path) -> PathBuf {
        let state = root.join(STATE_DIR.trim_start_matches('/'));
        let aside = state.with_extension("aside");
        std::fs::rename(&state, &aside).unwrap();
        std::fs::write(&state, "not a directory").unwrap();
        aside
    }

    pub(crate) fn repair_state_dir(root: &Path, aside: &Path) {
        let state = root.join(STATE_DIR.trim_start_matches('/'));
        std::fs::remove_file(&state).unwrap();
        std::fs::rename(aside, &state).unwrap();
    }

    struct Unserializable;

    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("boom"))
        }
    }

    #[test]
    fn the_log_is_bounded_per_step_however_long_the_daemon_repairs() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let mut j = Journal::default();
        ensure_state_dir(&host, &mut j).unwrap();
        // A day of a heal pass every 2 minutes that repairs the same file, plus one other step.
        for i in 0..720 {
            let seq = j
                .begin(&host, "ContainerdInstaller", format!("write config #{i}"))
                .unwrap();
            j.finish(&host, seq, None).unwrap();
        }
        let seq = j
            .begin(&host, "KubeletInstaller", "write kubelet config".into())
            .unwrap();
        j.finish(&host, seq, None).unwrap();
        let containerd: Vec<&LogEntry> = j
            .log
            .iter()
            .filter(|e| e.step == "ContainerdInstaller")
            .collect();
        assert_eq!(containerd.len(), LOG_PER_STEP);
        assert_eq!(
            containerd.last().unwrap().summary,
            "write config #719",
            "the newest are kept"
        );
        assert_eq!(
            j.log
                .iter()
                .filter(|e| e.step == "KubeletInstaller")
                .count(),
            1,
            "other steps keep theirs"
        );
        let on_disk = host.fs.read(Path::new(JOURNAL_PATH)).unwrap().unwrap();
        assert!(
            on_disk.len() < 64 * 1024,
            "journal is {} bytes",
            on_disk.len()
        );
    }

    #[test]
    fn a_serialization_failure_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let mut j = Journal::default();
        ensure_state_dir(&host, &mut j).unwrap();
        j.record_custom(&host, "S", "k", serde_json::json!({"a": 1}))
            .unwrap();
        let before = host.fs.read(Path::new(JOURNAL_PATH)).unwrap().unwrap();
        let err = write_json_atomic(&host, Path::new(JOURNAL_PATH), &Unserializable).unwrap_err();
        assert!(matches!(err, JournalError::Serialize { .. }), "{err}");
        assert!(err.to_string().contains("left unchanged"), "{err}");
        assert_eq!(
            host.fs.read(Path::new(JOURNAL_PATH)).unwrap().unwrap(),
            before,
            "the journal on disk changed"
        );
    }

    #[test]
    fn a_failed_save_changes_neither_the_file_nor_the_journal_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(dir.path()).unwrap();
        let mut j = Journal::default();
        ensure_state_dir(&host, &mut j).unwrap();
        j.record_custom(&host, "S", "one", serde_json::json!({}))
            .unwrap();
        j.record_custom(&host, "S", "two", serde_json::json!({}))
            .unwrap();
        let on_disk = host.fs.read(Path::new(JOURNAL_PATH)).unwrap().unwrap();
        let in_memory = j.clone();
        let first = j.undo[0].seq;

        let aside = break_state_dir(dir.path());
        assert!(j.drop_undo(&host, first).is_err());
        assert!(j.forget_step(&host, "S").is_err());
        assert!(j
            .record_custom(&host, "S", "three", serde_json::json!({}))
            .is_err());
        assert!(j.begin(&host, "S", "x".into()).is_err());
        assert_eq!(
            j, in_memory,
            "a failed save left the in-memory journal changed"
        );
        repair_state_dir(dir.path(), &aside);
        assert_eq!(
            host.fs.read(Path::new(JOURNAL_PATH)).unwrap().unwrap(),
            on_disk,
            "the journal on disk changed"
        );
        assert_eq!(Journal::load(&host).unwrap(), in_memory);

        // Once writes work again, the same change goes through.
        j.drop_undo(&host, first).unwrap();
        assert_eq!(Journal::load(&host).unwrap().undo.len(), 1);
    }
}
