//! The build's state and the checks shared by every section: each check validates one field, records a
//! `Problem` (or a warning) when it is wrong, and returns the usable value or a default.

use std::path::PathBuf;

use crate::config::parse::{self, VersionError};
use crate::config::{LoadOptions, Problem};

/// Why a key of the newer AKSFlexNode shape is only warned about.
pub(super) const UNSUPPORTED: &str =
    "it is a newer AKSFlexNode setting this agent does not support";

/// What a build has found so far, in the order found.
pub(super) struct B<'a> {
    pub opts: &'a LoadOptions<'a>,
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// The file itself holds a secret (inline clientSecret, or a bootstrap token, which is refused).
    pub inline_secret: bool,
}

/// Non-empty trimmed string or `None`.
pub(super) fn given(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `s` as JSON text (quoted and escaped), as problems and warnings show values.
pub(super) fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

impl<'a> B<'a> {
    pub fn new(opts: &'a LoadOptions<'a>) -> Self {
        B {
            opts,
            problems: Vec::new(),
            warnings: Vec::new(),
            inline_secret: false,
        }
    }

    pub fn bad(&mut self, field: &str, value: Option<&str>, expected: impl Into<String>) {
        self.problems.push(Problem {
            field: field.to_string(),
            value: value.map(q),
            expected: expected.into(),
        });
    }

    pub fn missing(&mut self, field: &str, expected: &str) {
        self.bad(field, None, format!("is missing; expected {expected}"));
    }

    pub fn guid(
        &mut self,
        field: &str,
        v: Option<String>,
        what: &str,
        required: bool,
    ) -> Option<String> {
        match given(v) {
            Some(v) if parse::is_guid(&v) => Some(v),
            Some(v) => {
                self.bad(
                    field,
                    Some(&v),
                    format!(
                        "is not a GUID; expected {what} like 00000000-0000-0000-0000-000000000000"
                    ),
                );
                None
            }
            None => {
                if required {
                    self.missing(field, what);
                }
                None
            }
        }
    }

    /// Picks the value of a setting that has a legacy and a newer key. Both set to different
    /// values (as compared by `same`) is a problem naming both paths.
    pub fn merge(
        &mut self,
        old: (&str, Option<String>),
        new: (&str, Option<String>),
        same: impl Fn(&str, &str) -> bool,
    ) -> Option<(String, String)> {
        match (given(old.1), given(new.1)) {
            (Some(a), Some(b)) => {
                if !same(&a, &b) {
                    self.bad(
                        old.0,
                        Some(&a),
                        format!(
                            "conflicts with {} = {}; expected only one of the two keys (or the same value in both)",
                            new.0,
                            q(&b)
                        ),
                    );
                }
                Some((old.0.to_string(), a))
            }
            (Some(a), None) => Some((old.0.to_string(), a)),
            (None, Some(b)) => Some((new.0.to_string(), b)),
            (None, None) => None,
        }
    }

    pub fn version(&mut self, field: &str, v: &str, example: &str) -> Option<String> {
        match parse::parse_version(v) {
            Ok(v) => Some(v),
            Err(VersionError::Partial) => {
                self.bad(field, Some(v), format!("is only major.minor; expected a full version with the patch number, e.g. {example} (list patch versions with `az aks get-versions`)"));
                None
            }
            Err(VersionError::Invalid) => {
                self.bad(
                    field,
                    Some(v),
                    format!("is not a version; expected major.minor.patch, e.g. {example}"),
                );
                None
            }
        }
    }

    pub fn component_version(&mut self, picked: Option<(String, String)>, default: &str) -> String {
        match picked {
            Some((field, v)) => self.version(&field, &v, default).unwrap_or_default(),
            None => default.to_string(),
        }
    }

    pub fn sha(&mut self, field: &str, v: Option<String>) -> Option<String> {
        let v = given(v)?;
        if parse::is_sha256(&v) {
            Some(v.to_ascii_lowercase())
        } else {
            self.bad(
                field,
                Some(&v),
                "is not a sha256 digest; expected 64 hexadecimal characters",
            );
            None
        }
    }

    pub fn abs_path(&mut self, field: &str, v: Option<String>, default: &str) -> PathBuf {
        match given(v) {
            Some(v) if v.starts_with('/') => PathBuf::from(v),
            Some(v) => {
                self.bad(
                    field,
                    Some(&v),
                    "is not an absolute path; expected a path starting with /",
                );
                PathBuf::from(default)
            }
            None => PathBuf::from(default),
        }
    }

    /// An absolute URL; https, or http only when `allow_http` or the host is loopback.
    pub fn url(&mut self, field: &str, v: Option<String>, allow_http: bool) -> Option<String> {
        let v = given(v)?;
        let https_only = if allow_http {
            "an absolute http(s) URL"
        } else {
            "an absolute https URL (http only for localhost)"
        };
        match reqwest::Url::parse(&v) {
            Ok(u)
                if u.host_str().is_some_and(|h| !h.is_empty())
                    && (u.scheme() == "https"
                        || (u.scheme() == "http"
                            && (allow_http || parse::is_loopback_host(&u)))) =>
            {
                Some(v)
            }
            _ => {
                self.bad(
                    field,
                    Some(&v),
                    format!("is not a valid URL here; expected {https_only}"),
                );
                None
            }
        }
    }

    pub fn ignored(&mut self, field: &str, present: bool, why: &str) {
        if present {
            self.warnings.push(format!("`{field}` is ignored: {why}"));
        }
    }
}

/// Versions compare by their parsed form (`v1.2.3` = `1.2.3`), else as written.
pub(super) fn same_version(a: &str, b: &str) -> bool {
    match (parse::parse_version(a), parse::parse_version(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// URLs compare by scheme, host (any case), port (default filled in) and path (trailing `/` ignored).
pub(super) fn same_url(a: &str, b: &str) -> bool {
    match (reqwest::Url::parse(a), reqwest::Url::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str().map(str::to_ascii_lowercase)
                    == b.host_str().map(str::to_ascii_lowercase)
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_compare_by_host_port_and_path() {
        assert!(same_url(
            "https://A.example.com",
            "https://a.example.com:443/"
        ));
        assert!(!same_url(
            "https://a.example.com:6443",
            "https://a.example.com:443"
        ));
        assert!(same_version("v1.2.3", "1.2.3"));
    }
}
