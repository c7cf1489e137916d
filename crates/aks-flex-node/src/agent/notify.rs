//! systemd notification for `Type=notify` (the `sd-notify` crate): `READY=1` once the first pass has
//! finished, `STATUS=` lines that `systemctl status` shows, `WATCHDOG=1` keep-alives when the unit sets
//! `WatchdogSec=`, and `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (not started by systemd, or
//! `Type=simple`) every call is a no-op.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// systemd shows one status line; longer text is cut (at a character boundary) so a long error does not
/// flood `systemctl status`.
const STATUS_MAX: usize = 200;

#[derive(Debug, Default)]
pub struct Notifier {
    ready_sent: AtomicBool,
    /// The last `STATUS=` line (what `systemctl status` shows now).
    last: std::sync::Mutex<String>,
}

impl Notifier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tell systemd the service is up (only the first call sends `READY=1`; later ones only the status).
    pub fn ready(&self, status: &str) {
        let line = self.remember(status);
        if self.ready_sent.swap(true, Ordering::SeqCst) {
            send(&[NotifyState::Status(&line)]);
        } else {
            send(&[NotifyState::Ready, NotifyState::Status(&line)]);
        }
    }

    /// True once [`Notifier::ready`] has been called.
    pub fn is_ready(&self) -> bool {
        self.ready_sent.load(Ordering::SeqCst)
    }

    pub fn status(&self, status: &str) {
        send(&[NotifyState::Status(&self.remember(status))]);
    }

    pub fn stopping(&self) {
        self.remember("stopping");
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// The status line last sent.
    pub fn last_status(&self) -> String {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    fn remember(&self, status: &str) -> String {
        let line = status_line(status);
        if let Ok(mut l) = self.last.lock() {
            l.clone_from(&line);
        }
        line
    }

    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }

    /// How often to send `WATCHDOG=1`: half the unit's `WatchdogSec=` (systemd's advice), or `None`
    /// when the unit sets no watchdog.
    pub fn watchdog_interval() -> Option<Duration> {
        sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2)
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

/// The first line of `s`, at most [`STATUS_MAX`] bytes (cut at a character boundary, with "...").
pub fn status_line(s: &str) -> String {
    let first = s.lines().next().unwrap_or_default().trim();
    if first.len() <= STATUS_MAX {
        return first.to_string();
    }
    let mut end = STATUS_MAX - 3;
    while !first.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &first[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_one_short_line() {
        assert_eq!(status_line("a\nb"), "a");
        assert_eq!(status_line("  ok  "), "ok");
        let long = "é".repeat(300);
        let cut = status_line(&long);
        assert!(cut.len() <= STATUS_MAX, "{}", cut.len());
        assert!(cut.ends_with("..."));
    }
}
