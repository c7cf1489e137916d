//! Snapshots of a sandbox root, compared before and after a run: what a write could change.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether a snapshot records when each entry was last written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stamps {
    /// Kind, mode, owner and content only.
    No,
    /// Also each file's inode and mtime: a rewrite with identical bytes is still seen.
    Files,
    /// Also each directory's mtime: an entry created and removed again is seen too.
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Link,
}

/// One entry of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    /// A file's SHA-256, a link's target, empty for a directory.
    pub content: String,
    /// (inode, mtime seconds, mtime nanoseconds) as [`Stamps`] asks; a directory's inode is not kept.
    pub stamp: Option<(u64, i64, i64)>,
}

/// Every entry under a root, by host path ("/etc/fstab").
pub type Tree = BTreeMap<String, Entry>;

/// Whether the host path `path` is `dir` or under it.
pub fn under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Every entry under `root`, except the host paths `skip` and what is under them.
pub fn snapshot(root: &Path, stamps: Stamps, skip: &[&str]) -> Tree {
    fn walk(root: &Path, dir: &Path, stamps: Stamps, skip: &[&str], out: &mut Tree) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let host = format!("/{}", p.strip_prefix(root).unwrap().display());
            if skip.iter().any(|s| under(&host, s)) {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let (kind, content) = if md.file_type().is_symlink() {
                (
                    Kind::Link,
                    std::fs::read_link(&p).unwrap().display().to_string(),
                )
            } else if md.is_dir() {
                (Kind::Dir, String::new())
            } else {
                (Kind::File, super::sha256(&std::fs::read(&p).unwrap()))
            };
            let stamp = match (stamps, kind) {
                (Stamps::Files | Stamps::All, Kind::File) => {
                    Some((md.ino(), md.mtime(), md.mtime_nsec()))
                }
                (Stamps::All, Kind::Dir) => Some((0, md.mtime(), md.mtime_nsec())),
                _ => None,
            };
            out.insert(
                host,
                Entry {
                    kind,
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    content,
                    stamp,
                },
            );
            if kind == Kind::Dir {
                walk(root, &p, stamps, skip, out);
            }
        }
    }
    let mut out = Tree::new();
    walk(root, root, stamps, skip, &mut out);
    out
}

/// The entries that differ between two snapshots, one line each (readable failure messages).
pub fn diff(a: &Tree, b: &Tree) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", a.get(k), b.get(k)))
        .collect()
}
