//! Logging with `tracing`.
//!
//! - On a terminal: human, coloured lines on stderr.
//! - Under systemd (`JOURNAL_STREAM` set): plain `level message key=value` lines on stderr, no timestamp
//!   (journald adds its own).
//! - Otherwise (pipes, CI): plain lines with a UTC timestamp.
//! - Always also `<agent.logDir>/aks-flex-node.log` (mode 0640, under `--root`), with timestamps, capped at
//!   [`MAX_LOG_BYTES`] and rotated to `.1` … `.3`.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::host::RootFs;

pub const LOG_FILE: &str = "aks-flex-node.log";
pub const MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;
pub const KEEP_ROTATED: u32 = 3;

/// Log levels as the config file spells them (case-insensitive; `warn` accepted).
pub fn parse_level(s: &str) -> Option<tracing::Level> {
    match s.trim().to_ascii_lowercase().as_str() {
        "debug" => Some(tracing::Level::DEBUG),
        "info" => Some(tracing::Level::INFO),
        "warning" | "warn" => Some(tracing::Level::WARN),
        "error" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

/// Install the global subscriber. `log_file` is `(root, logDir)`; a file that cannot be opened is reported
/// on stderr and logging continues there only.
pub fn init(level: tracing::Level, no_color: bool, log_file: Option<(&RootFs, &Path)>) {
    let filter = tracing_subscriber::filter::LevelFilter::from_level(level);
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let tty = io::stderr().is_terminal();
    let color = tty && !no_color && std::env::var_os("NO_COLOR").is_none();

    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_target(false)
        .with_ansi(color);
    let stderr_layer = if under_systemd || tty {
        stderr_layer.without_time().boxed()
    } else {
        stderr_layer.boxed()
    };

    let mut file_error = None;
    let file_layer = log_file.and_then(|(root, dir)| match RotatingFile::open(root, dir) {
        Ok(w) => Some(
            tracing_subscriber::fmt::layer()
                .with_writer(w)
                .with_target(false)
                .with_ansi(false),
        ),
        Err(e) => {
            file_error = Some(format!("{}: {e}", dir.join(LOG_FILE).display()));
            None
        }
    });

    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr_layer)
        .with(file_layer)
        .try_init();
    if let Some(e) = file_error {
        tracing::warn!("cannot write the log file ({e}); logging to stderr only");
    }
}

/// A size-capped log file: at [`MAX_LOG_BYTES`] it is renamed to `.1` (older ones shift up to `.3`).
#[derive(Clone)]
pub struct RotatingFile {
    inner: Arc<Mutex<RotState>>,
}

struct RotState {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max: u64,
}

impl RotatingFile {
    pub fn open(root: &RootFs, dir: &Path) -> io::Result<Self> {
        Self::open_with_limit(root, dir, MAX_LOG_BYTES)
    }

    pub fn open_with_limit(root: &RootFs, dir: &Path, max: u64) -> io::Result<Self> {
        root.create_dir_all(dir, 0o755).map_err(io::Error::other)?;
        let rel = dir.join(LOG_FILE);
        let path = root.resolve(&rel).map_err(io::Error::other)?;
        let file = open_log(&path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            inner: Arc::new(Mutex::new(RotState {
                path,
                file,
                written,
                max,
            })),
        })
    }
}

fn open_log(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)?;
    // An existing file keeps its content but never stays more open than 0640.
    f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    Ok(f)
}

impl RotState {
    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..KEEP_ROTATED).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.file = open_log(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.written + buf.len() as u64 > st.max && st.written > 0 {
            st.rotate()?;
        }
        st.file.write_all(buf)?;
        st.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        st.file.flush()
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = RotatingFile;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(parse_level(" DEBUG "), Some(tracing::Level::DEBUG));
        assert_eq!(parse_level("Warning"), Some(tracing::Level::WARN));
        assert_eq!(parse_level("warn"), Some(tracing::Level::WARN));
        assert_eq!(parse_level("verbose"), None);
    }

    #[test]
    fn log_file_is_0640_capped_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let root = RootFs::new(dir.path()).unwrap();
        let mut w =
            RotatingFile::open_with_limit(&root, Path::new("/var/log/aks-flex-node"), 100).unwrap();
        // tracing formats each event into one buffer and writes it at once; do the same here.
        for i in 0..30 {
            w.write_all(format!("line {i:04} padding padding\n").as_bytes())
                .unwrap();
        }
        let base = dir.path().join("var/log/aks-flex-node");
        let meta = std::fs::metadata(base.join(LOG_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert!(meta.len() <= 100);
        for i in 1..=3 {
            assert!(
                base.join(format!("{LOG_FILE}.{i}")).exists(),
                "rotation {i}"
            );
        }
        assert!(!base.join(format!("{LOG_FILE}.4")).exists());
        // The newest line is in the live file.
        let live = std::fs::read_to_string(base.join(LOG_FILE)).unwrap();
        assert!(live.contains("line 0029"));
    }
}
