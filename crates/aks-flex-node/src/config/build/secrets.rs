//! The service principal's client secret: exactly one of the inline value, a file, or the
//! environment; and the warning about files with secrets that others can read.
//!
//! The file is read with `std::fs`, as given (like the config file itself, not under `--root`):
//! loading has no `host::RootFs` to go through, and `config` sits above `host` in the layers.

use std::path::Path;

use super::check::{given, B};
use crate::config::Secret;

const SECRET_ENV: &str = "AZURE_CLIENT_SECRET";

/// Returns a warning when `path` is readable or writable by group or others.
pub(in crate::config) fn loose_mode_warning(path: &Path, what: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{what} {} has mode {mode:04o} (readable by group or others); run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// Resolves the service-principal secret from exactly one of: inline, file, environment.
pub(super) fn resolve_secret(
    b: &mut B,
    inline: Option<Secret>,
    file: Option<String>,
) -> Option<Secret> {
    const FIELD: &str = "azure.servicePrincipal.clientSecret";
    let inline = inline.filter(|s| !s.expose().is_empty());
    let file = given(file);
    let env = (b.opts.env)(SECRET_ENV).filter(|s| !s.is_empty());
    let mut sources = Vec::new();
    if inline.is_some() {
        sources.push("azure.servicePrincipal.clientSecret".to_string());
    }
    if let Some(f) = &file {
        sources.push(format!("azure.servicePrincipal.clientSecretFile ({f})"));
    }
    if env.is_some() {
        sources.push(format!("environment variable {SECRET_ENV}"));
    }
    if sources.len() > 1 {
        b.bad(
            FIELD,
            None,
            format!(
                "is given by more than one source ({}); expected exactly one",
                sources.join(", ")
            ),
        );
        return None;
    }
    if let Some(s) = inline {
        return Some(s);
    }
    if let Some(s) = env {
        return Some(Secret::new(s));
    }
    let Some(path) = file else {
        b.missing(FIELD, &format!("the client secret in clientSecret, clientSecretFile, or the environment variable {SECRET_ENV}"));
        return None;
    };
    read_secret_file(b, &path)
}

/// Reads `azure.servicePrincipal.clientSecretFile`: an absolute path to a file holding the secret
/// (one trailing line ending dropped); warns when others can read it.
fn read_secret_file(b: &mut B, path: &str) -> Option<Secret> {
    const FFIELD: &str = "azure.servicePrincipal.clientSecretFile";
    if !path.starts_with('/') {
        b.bad(
            FFIELD,
            Some(path),
            "is not an absolute path; expected a path starting with /",
        );
        return None;
    }
    let p = Path::new(path);
    match std::fs::read_to_string(p) {
        Ok(text) => {
            if let Some(w) = loose_mode_warning(p, "the client secret file") {
                b.warnings.push(w);
            }
            let s = text.strip_suffix('\n').unwrap_or(&text);
            let s = s.strip_suffix('\r').unwrap_or(s);
            if s.trim().is_empty() {
                b.bad(FFIELD, Some(path), "is empty; expected the client secret");
                None
            } else {
                Some(Secret::new(s))
            }
        }
        Err(e) => {
            b.bad(
                FFIELD,
                Some(path),
                format!("cannot be read ({e}); expected a readable file holding the client secret"),
            );
            None
        }
    }
}
