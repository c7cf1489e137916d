//! The rooted filesystem: every host path the agent touches is resolved under one root directory.
//!
//! On a real node the root is `/`; in tests and `--root DIR` runs it is a sandbox directory. Paths are
//! resolved the way a chroot would resolve them: `..` never climbs above the root and an absolute symlink
//! target is re-rooted, so no link (however malicious) can make the agent read or write outside the root.
//!
//! Writes are atomic: a temporary file in the same directory, written, chmod/chown'ed, fsync'ed, renamed over
//! the target, then the directory is fsync'ed. A reader never sees a half-written file and a crash leaves
//! either the old or the new content.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::faults::{Faults, Op};

/// How many symlinks one resolution may follow before it is treated as a loop (the kernel uses 40 too).
const MAX_SYMLINKS: usize = 40;

/// Errors of the rooted filesystem. Each names the host path (as seen inside the root) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: host paths must be absolute")]
    NotAbsolute { path: PathBuf },
    #[error("{path}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        FsError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = FsError> = std::result::Result<T, E>;

/// What is at a path (without following a final symlink).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Entry {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        len: u64,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: PathBuf,
    },
    /// Sockets, devices, fifos: never written by the agent.
    Other,
}

/// A directory tree the agent treats as `/`.
#[derive(Debug, Clone)]
pub struct RootFs {
    root: PathBuf,
    /// Tests' recorder and fault injector, consulted by every mutating method (see [`super::faults`]).
    faults: Option<Faults>,
}

impl RootFs {
    /// `root` must exist; it is canonicalised so that later prefix checks are exact.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let root = fs::canonicalize(root).map_err(|e| FsError::io("open root", root, e))?;
        Ok(RootFs { root, faults: None })
    }

    /// The same root with every mutating call recorded by, and subject to, `faults`.
    pub fn with_faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    pub(super) fn faults(&self) -> Option<&Faults> {
        self.faults.as_ref()
    }

    /// Consult the fault injector (when attached) before the effect `op` on `path`: an injected failure is
    /// the I/O error of `verb` the real call would return, and nothing is changed.
    fn fault(&self, op: Op, verb: &'static str, path: &Path) -> Result<()> {
        let Some(faults) = &self.faults else {
            return Ok(());
        };
        match faults.check(op, &path.display().to_string()) {
            None => Ok(()),
            Some(msg) => Err(FsError::io(verb, path, io::Error::other(msg))),
        }
    }

    /// The real directory acting as `/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when the root is the machine's real `/`.
    pub fn is_host_root(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Resolve every component of `path`, following symlinks inside the root.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf> {
        self.resolve_inner(path, true)
    }

    /// Resolve the parent of `path` following symlinks, but keep the last component literal. Used for
    /// anything that acts on the directory entry itself (replace, remove, lstat, create a link).
    pub fn resolve_entry(&self, path: &Path) -> Result<PathBuf> {
        self.resolve_inner(path, false)
    }

    fn resolve_inner(&self, path: &Path, follow_last: bool) -> Result<PathBuf> {
        if !path.is_absolute() {
            return Err(FsError::NotAbsolute {
                path: path.to_path_buf(),
            });
        }
        // `done` holds the components resolved so far (relative to root); `todo` is a stack of remaining
        // components in reverse order so that a symlink's target can be pushed in front of them.
        let mut done: Vec<std::ffi::OsString> = Vec::new();
        let mut todo: Vec<std::ffi::OsString> = components_rev(path);
        let mut links = 0;
        while let Some(comp) = todo.pop() {
            if comp == OsStr::new("..") {
                done.pop();
                continue;
            }
            if comp == OsStr::new(".") || comp.is_empty() {
                continue;
            }
            let is_last = todo.is_empty();
            let mut candidate = self.root.clone();
            candidate.extend(done.iter());
            candidate.push(&comp);
            if is_last && !follow_last {
                done.push(comp);
                break;
            }
            match fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(FsError::SymlinkLoop {
                            path: path.to_path_buf(),
                        });
                    }
                    let target =
                        fs::read_link(&candidate).map_err(|e| FsError::io("readlink", path, e))?;
                    if target.is_absolute() {
                        done.clear();
                    }
                    todo.extend(components_rev(&target));
                }
                _ => done.push(comp),
            }
        }
        let mut out = self.root.clone();
        out.extend(done.iter());
        Ok(out)
    }

    /// Read a whole file; `None` when it does not exist.
    pub fn read(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        let real = self.resolve(path)?;
        match fs::read(&real) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FsError::io("read", path, e)),
        }
    }

    /// Read a file as UTF-8 text (lossy); `None` when it does not exist.
    pub fn read_to_string(&self, path: &Path) -> Result<Option<String>> {
        Ok(self
            .read(path)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    pub fn exists(&self, path: &Path) -> Result<bool> {
        Ok(self.resolve(path)?.exists())
    }

    /// What is at `path` itself (a final symlink is reported, not followed).
    pub fn entry(&self, path: &Path) -> Result<Option<Entry>> {
        let real = self.resolve_entry(path)?;
        let meta = match fs::symlink_metadata(&real) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FsError::io("stat", path, e)),
        };
        let ft = meta.file_type();
        Ok(Some(if ft.is_symlink() {
            Entry::Symlink {
                target: fs::read_link(&real).map_err(|e| FsError::io("readlink", path, e))?,
            }
        } else if ft.is_dir() {
            Entry::Dir {
                mode: meta.mode() & 0o7777,
            }
        } else if ft.is_file() {
            Entry::File {
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                len: meta.len(),
            }
        } else {
            Entry::Other
        }))
    }

    /// Create `path` with `mode` and any missing parents with 0755. Returns the directories that were
    /// created, outermost first, so that the caller can record them for undo.
    pub fn create_dir_all(&self, path: &Path, mode: u32) -> Result<Vec<PathBuf>> {
        self.fault(Op::CreateDir, "mkdir", path)?;
        let mut created = Vec::new();
        let mut cur = PathBuf::from("/");
        for comp in path.components() {
            match comp {
                Component::RootDir => continue,
                Component::Normal(c) => cur.push(c),
                _ => {
                    return Err(FsError::io(
                        "mkdir",
                        path,
                        io::Error::new(io::ErrorKind::InvalidInput, "path must be normalised"),
                    ))
                }
            }
            let real = self.resolve(&cur)?;
            match fs::metadata(&real) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => {
                    return Err(FsError::io(
                        "mkdir",
                        &cur,
                        io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "exists and is not a directory",
                        ),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&real).map_err(|e| FsError::io("mkdir", &cur, e))?;
                    let m = if cur.as_path() == path { mode } else { 0o755 };
                    fs::set_permissions(&real, fs::Permissions::from_mode(m))
                        .map_err(|e| FsError::io("chmod", &cur, e))?;
                    created.push(cur.clone());
                }
                Err(e) => return Err(FsError::io("stat", &cur, e)),
            }
        }
        Ok(created)
    }

    /// Atomically replace `path` with `content` and `mode` (and `owner` when given and we are root).
    /// The parent directory must exist. A symlink at `path` is replaced, never written through.
    pub fn write_atomic(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        self.fault(Op::Write, "write", path)?;
        self.write_atomic_unrecorded(path, content, mode, owner)
    }

    /// [`RootFs::write_atomic`] without the fault injector: for the sandbox's own record, which is the
    /// simulated machine's state rather than an effect of the agent.
    pub(super) fn write_atomic_unrecorded(
        &self,
        path: &Path,
        content: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let real = self.resolve_entry(path)?;
        let dir = real.parent().unwrap_or(&self.root).to_path_buf();
        let mut tmp = tempfile::Builder::new()
            .prefix(".aks-flex-node.")
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(|e| FsError::io("create temp file for", path, e))?;
        tmp.write_all(content)
            .map_err(|e| FsError::io("write", path, e))?;
        let f = tmp.as_file();
        if let Some((uid, gid)) = owner {
            if is_root_user() {
                std::os::unix::fs::fchown(f, Some(uid), Some(gid))
                    .map_err(|e| FsError::io("chown", path, e))?;
            }
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::io("chmod", path, e))?;
        f.sync_all().map_err(|e| FsError::io("fsync", path, e))?;
        tmp.persist(&real)
            .map_err(|e| FsError::io("rename into place", path, e.error))?;
        sync_dir(&dir).map_err(|e| FsError::io("fsync directory of", path, e))?;
        Ok(())
    }

    /// Atomically make `path` a symlink to `target` (replacing what is there).
    pub fn symlink(&self, target: &Path, path: &Path) -> Result<()> {
        self.fault(Op::Symlink, "symlink", path)?;
        let real = self.resolve_entry(path)?;
        let dir = real.parent().unwrap_or(&self.root).to_path_buf();
        let tmp = dir.join(format!(
            ".aks-flex-node.{}.lnk",
            uuid::Uuid::new_v4().simple()
        ));
        std::os::unix::fs::symlink(target, &tmp).map_err(|e| FsError::io("symlink", path, e))?;
        if let Err(e) = fs::rename(&tmp, &real) {
            let _ = fs::remove_file(&tmp);
            return Err(FsError::io("rename into place", path, e));
        }
        sync_dir(&dir).map_err(|e| FsError::io("fsync directory of", path, e))?;
        Ok(())
    }

    /// Change the mode of a file or directory.
    pub fn set_mode(&self, path: &Path, mode: u32) -> Result<()> {
        self.fault(Op::SetMode, "chmod", path)?;
        let real = self.resolve(path)?;
        fs::set_permissions(&real, fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::io("chmod", path, e))
    }

    /// Remove a file or symlink; `Ok(false)` when it was already gone.
    pub fn remove_file(&self, path: &Path) -> Result<bool> {
        self.fault(Op::Remove, "remove", path)?;
        let real = self.resolve_entry(path)?;
        match fs::remove_file(&real) {
            Ok(()) => {
                if let Some(dir) = real.parent() {
                    sync_dir(dir).map_err(|e| FsError::io("fsync directory of", path, e))?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(FsError::io("remove", path, e)),
        }
    }

    /// Remove an empty directory. `Ok(false)` when it is gone already or not empty (left in place).
    pub fn remove_dir_if_empty(&self, path: &Path) -> Result<bool> {
        self.fault(Op::RemoveDir, "rmdir", path)?;
        let real = self.resolve_entry(path)?;
        match fs::remove_dir(&real) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Ok(false),
            Err(e) => Err(FsError::io("rmdir", path, e)),
        }
    }

    /// Remove a directory tree the agent owns entirely (its state and cache directories).
    pub fn remove_dir_all(&self, path: &Path) -> Result<bool> {
        self.fault(Op::RemoveDir, "remove", path)?;
        let real = self.resolve_entry(path)?;
        match fs::remove_dir_all(&real) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(FsError::io("remove", path, e)),
        }
    }

    /// Names in a directory, sorted; empty when it does not exist.
    pub fn list_dir(&self, path: &Path) -> Result<Vec<String>> {
        let real = self.resolve(path)?;
        let rd = match fs::read_dir(&real) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FsError::io("list", path, e)),
        };
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| FsError::io("list", path, e))?;
            names.push(ent.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Open a file for appending (the agent's log), creating it with `mode`.
    pub fn open_append(&self, path: &Path, mode: u32) -> Result<File> {
        self.fault(Op::Append, "open", path)?;
        let real = self.resolve(path)?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(mode)
            .open(&real)
            .map_err(|e| FsError::io("open", path, e))
    }
}

fn components_rev(path: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::RootDir | Component::Prefix(_) => None,
            Component::CurDir => Some(".".into()),
            Component::ParentDir => Some("..".into()),
            Component::Normal(s) => Some(s.to_os_string()),
        })
        .collect();
    v.reverse();
    v
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether this process runs with effective UID 0.
pub fn is_root_user() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sandbox() -> (tempfile::TempDir, RootFs) {
        let dir = tempfile::tempdir().unwrap();
        let fs = RootFs::new(dir.path()).unwrap();
        (dir, fs)
    }

    #[test]
    fn dotdot_never_leaves_the_root() {
        let (_d, fs) = sandbox();
        let p = fs.resolve(Path::new("/../../etc/passwd")).unwrap();
        assert_eq!(p, fs.root().join("etc/passwd"));
    }

    #[test]
    fn absolute_symlink_is_rerooted() {
        let (_d, fs) = sandbox();
        fs.create_dir_all(Path::new("/etc"), 0o755).unwrap();
        std::os::unix::fs::symlink("/etc", fs.root().join("link")).unwrap();
        assert_eq!(
            fs.resolve(Path::new("/link/hosts")).unwrap(),
            fs.root().join("etc/hosts")
        );
    }

    #[test]
    fn relative_symlink_cannot_escape() {
        let (_d, fs) = sandbox();
        fs.create_dir_all(Path::new("/a"), 0o755).unwrap();
        std::os::unix::fs::symlink("../../../../tmp", fs.root().join("a/up")).unwrap();
        assert_eq!(
            fs.resolve(Path::new("/a/up/x")).unwrap(),
            fs.root().join("tmp/x")
        );
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let (_d, fs) = sandbox();
        std::os::unix::fs::symlink("/b", fs.root().join("a")).unwrap();
        std::os::unix::fs::symlink("/a", fs.root().join("b")).unwrap();
        assert!(matches!(
            fs.resolve(Path::new("/a/x")),
            Err(FsError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn relative_paths_are_rejected() {
        let (_d, fs) = sandbox();
        assert!(matches!(
            fs.read(Path::new("etc/x")),
            Err(FsError::NotAbsolute { .. })
        ));
    }

    #[test]
    fn atomic_write_sets_mode_and_replaces_symlink_instead_of_following_it() {
        let (_d, fs) = sandbox();
        fs.create_dir_all(Path::new("/etc"), 0o755).unwrap();
        fs.write_atomic(Path::new("/etc/target"), b"keep", 0o644, None)
            .unwrap();
        fs.symlink(Path::new("/etc/target"), Path::new("/etc/resolv.conf"))
            .unwrap();
        fs.write_atomic(Path::new("/etc/resolv.conf"), b"new", 0o600, None)
            .unwrap();
        assert_eq!(fs.read(Path::new("/etc/target")).unwrap().unwrap(), b"keep");
        match fs.entry(Path::new("/etc/resolv.conf")).unwrap().unwrap() {
            Entry::File { mode, len, .. } => {
                assert_eq!(mode, 0o600);
                assert_eq!(len, 3);
            }
            other => panic!("expected a file, got {other:?}"),
        }
        // No temporary files are left behind.
        assert_eq!(
            fs.list_dir(Path::new("/etc")).unwrap(),
            vec!["resolv.conf", "target"]
        );
    }

    #[test]
    fn create_dir_all_reports_only_new_directories() {
        let (_d, fs) = sandbox();
        fs.create_dir_all(Path::new("/var"), 0o755).unwrap();
        let created = fs
            .create_dir_all(Path::new("/var/lib/aks-flex-node"), 0o700)
            .unwrap();
        assert_eq!(
            created,
            vec![
                PathBuf::from("/var/lib"),
                PathBuf::from("/var/lib/aks-flex-node")
            ]
        );
        assert_eq!(
            fs.entry(Path::new("/var/lib/aks-flex-node")).unwrap(),
            Some(Entry::Dir { mode: 0o700 })
        );
    }

    #[test]
    fn remove_dir_if_empty_keeps_non_empty_dirs() {
        let (_d, fs) = sandbox();
        fs.create_dir_all(Path::new("/d"), 0o755).unwrap();
        fs.write_atomic(Path::new("/d/f"), b"x", 0o644, None)
            .unwrap();
        assert!(!fs.remove_dir_if_empty(Path::new("/d")).unwrap());
        assert!(fs.remove_file(Path::new("/d/f")).unwrap());
        assert!(!fs.remove_file(Path::new("/d/f")).unwrap());
        assert!(fs.remove_dir_if_empty(Path::new("/d")).unwrap());
    }

    proptest! {
        // Whatever path and whatever links exist, resolution stays inside the root.
        #[test]
        fn resolution_stays_inside_root(
            parts in proptest::collection::vec(prop_oneof![
                Just("..".to_string()), Just(".".to_string()), Just("l".to_string()), "[a-z]{1,3}"
            ], 1..8),
            link_target in prop_oneof![Just("/".to_string()), Just("../..".to_string()), Just("/l/..".to_string()), "[a-z/.]{1,8}"],
        ) {
            let (_d, fs) = sandbox();
            let _ = std::os::unix::fs::symlink(&link_target, fs.root().join("l"));
            let path = format!("/{}", parts.join("/"));
            match fs.resolve(Path::new(&path)) {
                Ok(p) => prop_assert!(p.starts_with(fs.root())),
                Err(FsError::SymlinkLoop { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }
}
