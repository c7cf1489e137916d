//! The config file: its on-disk schema (`file`), the effective typed model (`model`), key
//! normalisation (`keys`), value parsers (`parse`) and defaults plus validation (`build`, one
//! module per config section).
//!
//! Loading is: read the file -> parse JSON (syntax errors give file, line, column) -> normalise
//! keys against the generated JSON Schema (case-insensitive struct keys, exact map keys, unknown
//! keys warned with the nearest known key) -> deserialise into `file::ConfigFile` -> build the
//! effective `Config`, collecting every problem before failing.
//!
//! The original honoured (in theory) `AKS_NODE_CONTROLLER_*` environment overrides through
//! viper; they never worked in practice, so they are deliberately not supported. The only
//! environment input is `AZURE_CLIENT_SECRET` for a service principal.

mod build;
pub mod file;
mod keys;
pub mod model;
pub mod parse;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Serialize;

pub use model::*;

/// Inputs to loading that come from the machine rather than the file.
pub struct LoadOptions<'a> {
    /// The OS host name: default for `agent.nodeName` and `azure.arc.machineName`.
    pub hostname: String,
    /// Environment lookup (injected so tests never read the real environment).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// A loaded configuration plus the non-fatal findings to show the user.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Warnings (unknown keys, normalised node name, loose file modes, ...). Never hold secrets.
    pub warnings: Vec<String>,
}

/// One validation problem. `value` is `None` for secrets and for missing values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON path, e.g. `azure.targetCluster.resourceId` or `node.labels["a.b/c"]`.
    pub field: String,
    /// The offending value as JSON text, or `None` when missing or secret.
    pub value: Option<String>,
    /// What is wrong and what is expected, e.g. `is not a GUID; expected ...`.
    pub expected: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}: {} {}", self.field, v, self.expected),
            None => write!(f, "{}: {}", self.field, self.expected),
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON.
    #[error("{origin}:{line}:{column}: invalid JSON: {message}")]
    Syntax {
        /// File path or other origin name.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser found.
        message: String,
    },
    /// The JSON is well-formed but the configuration is invalid.
    #[error("{}", render_invalid(origin, problems))]
    Invalid {
        /// File path or other origin name.
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

fn render_invalid(origin: &str, problems: &[Problem]) -> String {
    let n = problems.len();
    let mut s = format!(
        "{origin}: {n} problem{} in the configuration:",
        if n == 1 { "" } else { "s" }
    );
    for p in problems {
        s.push_str("\n  ");
        s.push_str(&p.to_string());
    }
    s
}

/// The JSON Schema of the config file, generated from the `file` types.
pub fn json_schema() -> serde_json::Value {
    schema_value().clone()
}

fn schema_value() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = schemars::schema_for!(file::ConfigFile);
        serde_json::to_value(schema).unwrap_or(serde_json::Value::Bool(true))
    })
}

/// Loads and validates the config file at `path` (read as given, not under `--root`).
/// Also warns when the file holds a secret and is readable by group or others.
pub fn load_file(path: &Path, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let (mut loaded, inline_secret) = load_inner(&text, &origin, opts)?;
    if inline_secret {
        if let Some(w) = build::loose_mode_warning(path, "the config file holds a secret and") {
            loaded.warnings.push(w);
        }
    }
    Ok(loaded)
}

/// Loads and validates config text; `origin` names it in messages.
pub fn load_str(text: &str, origin: &str, opts: &LoadOptions) -> Result<Loaded, ConfigError> {
    load_inner(text, origin, opts).map(|(l, _)| l)
}

fn load_inner(text: &str, origin: &str, opts: &LoadOptions) -> Result<(Loaded, bool), ConfigError> {
    let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_string();
        ConfigError::Syntax {
            origin: origin.to_string(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })?;
    let schema = schema_value();
    let mut norm = keys::Normalizer::new(schema);
    if !raw.is_object() {
        // Nothing below the top level can be checked; further "missing" problems would be noise.
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems: vec![Problem {
                field: "(top level)".into(),
                value: Some(keys::show(&raw)),
                expected: "is not a JSON object; expected { \"azure\": {...}, ... }".into(),
            }],
        });
    }
    let normalized = norm
        .normalize(raw, schema, "")
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    let mut problems = norm.problems;
    let mut warnings = norm.warnings;
    let parsed: file::ConfigFile = match serde_json::from_value(normalized) {
        Ok(f) => f,
        Err(e) => {
            // Unreachable in practice: the normaliser checked every leaf's type.
            problems.push(Problem {
                field: "(top level)".into(),
                value: None,
                expected: format!("could not be read: {e}"),
            });
            file::ConfigFile::default()
        }
    };
    let out = build::build(parsed, opts);
    problems.extend(out.problems);
    warnings.extend(out.warnings);
    match out.config {
        Some(config) if problems.is_empty() => Ok((Loaded { config, warnings }, out.inline_secret)),
        _ => Err(ConfigError::Invalid {
            origin: origin.to_string(),
            problems,
        }),
    }
}
