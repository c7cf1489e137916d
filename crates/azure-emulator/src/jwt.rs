//! Access tokens: compact JWTs (HS256, signed with the emulator's own key) carrying the claims
//! clients read from Entra tokens (`aud`, `iss`, `tid`, `oid`, `exp`, ...), and their verification.
//!
//! Real Entra tokens are RS256; clients must treat tokens as opaque apart from reading claims, so
//! the signature algorithm is not part of the contract.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The claims the emulator puts in and reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Audience (resource).
    pub aud: String,
    /// Issuer.
    pub iss: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Tenant id.
    pub tid: String,
    /// Object id of the caller.
    pub oid: String,
    /// Subject.
    pub sub: String,
    /// Client application id, when the caller is an application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appid: Option<String>,
    /// `app` or `user`.
    pub idtyp: String,
    /// User principal name for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upn: Option<String>,
    /// Token version.
    pub ver: String,
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, bad signature, or unreadable claims.
    #[error("the access token is invalid")]
    Invalid,
    /// Signature fine but `exp` has passed.
    #[error("the access token expired at {exp}")]
    Expired {
        /// The token's expiry (unix seconds).
        exp: i64,
    },
}

/// Sign claims into a compact JWT.
pub fn mint(claims: &Claims, key: &[u8]) -> String {
    let header = serde_json::json!({"typ": "JWT", "alg": "HS256", "kid": "flexnode-emulator"});
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    // Serialising a plain struct of strings and integers cannot fail.
    let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{h}.{p}");
    let sig = URL_SAFE_NO_PAD.encode(sign(signing_input.as_bytes(), key));
    format!("{signing_input}.{sig}")
}

fn sign(data: &[u8], key: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Verify signature and expiry at `now` (unix seconds).
pub fn verify(token: &str, key: &[u8], now: i64) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Invalid)?;
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(format!("{h}.{p}").as_bytes());
    mac.verify_slice(&sig).map_err(|_| TokenError::Invalid)?;
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| TokenError::Invalid)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Invalid)?;
    if claims.exp <= now {
        return Err(TokenError::Expired { exp: claims.exp });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            aud: "https://management.azure.com".into(),
            iss: "https://sts.windows.net/t/".into(),
            iat: 0,
            nbf: 0,
            exp,
            tid: "t".into(),
            oid: "o".into(),
            sub: "o".into(),
            appid: Some("a".into()),
            idtyp: "app".into(),
            upn: None,
            ver: "1.0".into(),
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let t = mint(&claims(100), b"k");
        assert_eq!(verify(&t, b"k", 99).unwrap().oid, "o");
        assert_eq!(verify(&t, b"k", 100), Err(TokenError::Expired { exp: 100 }));
    }

    #[test]
    fn tampering_and_wrong_key_are_rejected() {
        let t = mint(&claims(100), b"k");
        assert_eq!(verify(&t, b"other", 1), Err(TokenError::Invalid));
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(999)).unwrap());
        assert_eq!(verify(&parts.join("."), b"k", 1), Err(TokenError::Invalid));
        assert_eq!(verify("garbage", b"k", 1), Err(TokenError::Invalid));
    }
}
