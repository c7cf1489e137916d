//! The request log: one entry per request served (method, path without query, api-version,
//! status, caller object id, duration, injected fault, and the AKS webhooks' decisions), kept in memory and optionally appended
//! to a JSON-lines file. By construction it never holds a header, token, secret or body.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One served request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestLogEntry {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// HTTP method.
    pub method: String,
    /// Path only (the query string is never logged).
    pub path: String,
    /// The `api-version` query parameter, if any.
    pub api_version: Option<String>,
    /// Response status; `0` when the connection was reset by a fault.
    pub status: u16,
    /// Object id of the authenticated caller (ARM requests and HIMDS), if known.
    pub caller: Option<String>,
    /// Time to respond, in milliseconds.
    pub duration_ms: u64,
    /// Id of the fault rule that decided the response, if any.
    pub fault: Option<String>,
    /// AKS webhooks only: `authenticated` or `unauthenticated` (TokenReview), `allowed` or
    /// `no_opinion` (SubjectAccessReview).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    /// AKS webhooks only: why a token was rejected (`expired`, `invalid`, `wrong_audience`,
    /// `wrong_tenant`, ...), or the data action a SubjectAccessReview was checked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The in-memory log plus an optional file sink.
#[derive(Debug, Default)]
pub struct RequestLog {
    entries: Mutex<Vec<RequestLogEntry>>,
    file: Option<Mutex<File>>,
}

impl RequestLog {
    /// A log that also appends JSON lines to `path` (created 0600 if missing).
    pub fn with_file(path: Option<&Path>) -> std::io::Result<RequestLog> {
        let file = match path {
            Some(p) => {
                use std::os::unix::fs::OpenOptionsExt;
                Some(Mutex::new(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(p)?,
                ))
            }
            None => None,
        };
        Ok(RequestLog {
            entries: Mutex::new(Vec::new()),
            file,
        })
    }

    /// Record one entry.
    pub fn push(&self, entry: RequestLogEntry) {
        if let Some(file) = &self.file {
            if let Ok(line) = serde_json::to_string(&entry) {
                let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
                // A full disk must not take the emulator down; the in-memory log still has it.
                if let Err(e) = writeln!(f, "{line}") {
                    tracing::warn!(error = %e, "cannot append to the request log file");
                }
            }
        }
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    /// A copy of all entries so far.
    pub fn snapshot(&self) -> Vec<RequestLogEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forget the in-memory entries (the file is left alone).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
