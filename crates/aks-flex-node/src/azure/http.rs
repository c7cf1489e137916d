//! The HTTP client every Azure call uses: rustls with the system roots plus an optional `azure.caBundle`,
//! timeouts, and the scheme rule: https everywhere, plain http only for loopback (tests, the emulator,
//! HIMDS on 127.0.0.1:40342).

use std::path::Path;
use std::time::Duration;

use reqwest::Url;

use crate::azure::{AzureError, Result};

/// True for 127.0.0.0/8, ::1 and `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Parse `value` (named `field` in errors) and enforce the scheme rule.
pub fn checked_url(field: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value.trim())
        .map_err(|e| AzureError::Config(format!("{field}: {value:?} is not a valid URL ({e})")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(AzureError::Config(format!(
            "{field}: {value:?} uses plain http; only https is accepted (plain http is allowed for 127.0.0.1/localhost only). \
             For a private CA set azure.caBundle instead"
        ))),
        other => Err(AzureError::Config(format!(
            "{field}: {value:?} has scheme {other:?}; use https"
        ))),
    }
}

/// Like [`checked_url`], returned as a string without trailing slash (a base to append paths to).
pub fn checked_base_url(field: &str, value: &str) -> Result<String> {
    let url = checked_url(field, value)?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Build the shared client. `ca_bundle` is a PEM file whose certificates are trusted in addition to the
/// system roots (Azure Stack Hub, private clouds).
pub fn client(ca_bundle: Option<&Path>) -> Result<reqwest::Client> {
    let mut roots = Vec::new();
    if let Some(path) = ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            AzureError::Config(format!(
                "azure.caBundle: cannot read {}: {e}",
                path.display()
            ))
        })?;
        roots = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            AzureError::Config(format!(
                "azure.caBundle: {} is not a PEM certificate bundle: {e}",
                path.display()
            ))
        })?;
        if roots.is_empty() {
            return Err(AzureError::Config(format!(
                "azure.caBundle: {} contains no certificate",
                path.display()
            )));
        }
    }
    crate::net::client(Duration::from_secs(10), Duration::from_secs(60), roots)
        .map_err(|e| AzureError::Config(format!("cannot build the HTTP client: {e}")))
}

/// A transport error worded without URLs' query strings (they never carry secrets here, but keep it short).
pub fn transport(what: impl Into<String>, e: &reqwest::Error) -> AzureError {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    AzureError::Transport {
        what: what.into(),
        message: msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_rule() {
        for ok in [
            "https://management.azure.com",
            "http://127.0.0.1:1234",
            "http://127.1.2.3",
            "http://[::1]:80",
            "http://LOCALHOST:5",
        ] {
            assert!(checked_url("f", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1",
            "http://example.com",
            "ftp://x",
            "nonsense",
        ] {
            let e = checked_url("azure.x", bad).unwrap_err().to_string();
            assert!(e.contains("azure.x"), "{e}");
        }
    }

    #[test]
    fn ca_bundle_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a pem").unwrap();
        let e = client(Some(&p)).unwrap_err().to_string();
        assert!(e.contains("azure.caBundle"), "{e}");
        let e = client(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
