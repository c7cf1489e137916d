//! Fault injection: rules that match requests by method, path (glob or regex) and api-version,
//! and inject latency, an error status (429 with `Retry-After`, 500, 503, ...), a dropped
//! connection, or `PrincipalNotFound`, on a deterministic schedule (skip the first `after`
//! matches, then apply to the next `count`, or to all when `count` is absent).

use regex::Regex;
use serde::{Deserialize, Serialize};

/// What a fault does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Delay the request by `latency_ms`, then serve it normally.
    Latency,
    /// Answer with `status` (and `Retry-After: retry_after_secs` when given; 429 defaults to 1).
    Status,
    /// Close the connection without any response.
    Reset,
    /// Role-assignment PUTs fail with `400 PrincipalNotFound` (other routes are unaffected).
    PrincipalNotFound,
}

/// One fault rule, as given in a scenario or to the control API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Identifier; assigned when the rule is added if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// HTTP method to match (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path glob: `*` matches within one segment, `**` across segments. Case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path regex (case-insensitive, unanchored unless you anchor it). Alternative to `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// `api-version` query value to match (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// What to do.
    pub kind: FaultKind,
    /// For `latency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// For `status`: value of `Retry-After` in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// Let this many matching requests through before the fault starts.
    #[serde(default)]
    pub after: u32,
    /// Apply to this many matching requests, then stop (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

impl FaultRule {
    /// Check the rule is complete and its patterns compile.
    pub fn validate(&self) -> Result<(), String> {
        self.compile().map(|_| ())?;
        match self.kind {
            FaultKind::Latency if self.latency_ms.is_none() => {
                Err("kind \"latency\" needs latency_ms".into())
            }
            FaultKind::Status => match self.status {
                Some(s) if (400..=599).contains(&s) => Ok(()),
                Some(s) => Err(format!("status {s} is not an error status (400-599)")),
                None => Err("kind \"status\" needs status (e.g. 429, 500, 503)".into()),
            },
            _ => Ok(()),
        }
    }

    fn compile(&self) -> Result<Regex, String> {
        let pattern = match (&self.path, &self.path_regex) {
            (Some(_), Some(_)) => return Err("give either path or path_regex, not both".into()),
            (Some(glob), None) => format!("(?i)^{}$", glob_to_regex(glob)),
            (None, Some(re)) => format!("(?i){re}"),
            (None, None) => "^".to_string(),
        };
        Regex::new(&pattern).map_err(|e| format!("path pattern does not compile: {e}"))
    }
}

fn glob_to_regex(glob: &str) -> String {
    let mut out = String::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push_str(".*");
            }
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out
}

/// A terminal fault decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Terminal {
    /// Respond with this status.
    Status {
        /// HTTP status.
        status: u16,
        /// Retry-After seconds.
        retry_after_secs: Option<u64>,
    },
    /// Drop the connection.
    Reset,
    /// Tell the handler to answer PrincipalNotFound.
    PrincipalNotFound,
}

/// What the fault layer decided for one request.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decision {
    /// Total injected delay.
    pub delay_ms: u64,
    /// The terminal fault, if any, with the id of its rule.
    pub terminal: Option<(String, Terminal)>,
    /// Ids of every rule applied (latency and terminal).
    pub applied: Vec<String>,
}

#[derive(Debug)]
struct Active {
    rule: FaultRule,
    regex: Regex,
    seen: u32,
    applied: u32,
}

/// The active fault rules.
#[derive(Debug, Default)]
pub struct FaultSet {
    rules: Vec<Active>,
    next_id: u64,
}

impl FaultSet {
    /// Add a rule; returns its id.
    pub fn add(&mut self, mut rule: FaultRule) -> Result<String, String> {
        rule.validate()?;
        let regex = rule.compile()?;
        let id = match &rule.id {
            Some(id) => id.clone(),
            None => {
                self.next_id += 1;
                format!("fault-{}", self.next_id)
            }
        };
        rule.id = Some(id.clone());
        self.rules
            .retain(|a| a.rule.id.as_deref() != Some(id.as_str()));
        self.rules.push(Active {
            rule,
            regex,
            seen: 0,
            applied: 0,
        });
        Ok(id)
    }

    /// Remove one rule; false when unknown.
    pub fn remove(&mut self, id: &str) -> bool {
        let before = self.rules.len();
        self.rules.retain(|a| a.rule.id.as_deref() != Some(id));
        before != self.rules.len()
    }

    /// Remove all rules.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The rules with their ids.
    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|a| a.rule.clone()).collect()
    }

    /// Decide the faults for a request and advance the schedules of the rules involved.
    pub fn decide(&mut self, method: &str, path: &str, api_version: Option<&str>) -> Decision {
        let mut d = Decision::default();
        for a in &mut self.rules {
            let r = &a.rule;
            let is_terminal = r.kind != FaultKind::Latency;
            if is_terminal && d.terminal.is_some() {
                continue;
            }
            if r.method
                .as_deref()
                .is_some_and(|m| !m.eq_ignore_ascii_case(method))
                || r.api_version
                    .as_deref()
                    .is_some_and(|v| api_version != Some(v))
                || !a.regex.is_match(path)
            {
                continue;
            }
            a.seen += 1;
            if a.seen <= r.after || r.count.is_some_and(|c| a.applied >= c) {
                continue;
            }
            a.applied += 1;
            let id = r.id.clone().unwrap_or_default();
            d.applied.push(id.clone());
            match r.kind {
                FaultKind::Latency => d.delay_ms += r.latency_ms.unwrap_or(0),
                FaultKind::Status => {
                    let status = r.status.unwrap_or(500);
                    let retry_after_secs =
                        r.retry_after_secs
                            .or(if status == 429 { Some(1) } else { None });
                    d.terminal = Some((
                        id,
                        Terminal::Status {
                            status,
                            retry_after_secs,
                        },
                    ));
                }
                FaultKind::Reset => d.terminal = Some((id, Terminal::Reset)),
                FaultKind::PrincipalNotFound => {
                    d.terminal = Some((id, Terminal::PrincipalNotFound))
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> FaultRule {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn glob_matches_within_and_across_segments() {
        let mut set = FaultSet::default();
        set.add(rule(r#"{"path":"/subscriptions/*/resourceGroups/*/providers/Microsoft.HybridCompute/**","kind":"status","status":503}"#))
            .unwrap();
        let hit = set.decide(
            "GET",
            "/subscriptions/s/resourcegroups/rg/providers/microsoft.hybridcompute/machines/m",
            None,
        );
        assert!(matches!(
            hit.terminal,
            Some((_, Terminal::Status { status: 503, .. }))
        ));
        let miss = set.decide("GET", "/subscriptions/s/providers/x", None);
        assert_eq!(miss.terminal, None);
    }

    #[test]
    fn schedule_after_and_count() {
        let mut set = FaultSet::default();
        set.add(rule(
            r#"{"method":"PUT","path":"/x","kind":"reset","after":1,"count":2}"#,
        ))
        .unwrap();
        let got: Vec<bool> = (0..5)
            .map(|_| set.decide("PUT", "/x", None).terminal.is_some())
            .collect();
        assert_eq!(got, vec![false, true, true, false, false]);
        assert_eq!(set.decide("GET", "/x", None).terminal, None);
    }

    #[test]
    fn latency_accumulates_and_429_defaults_retry_after() {
        let mut set = FaultSet::default();
        set.add(rule(r#"{"path":"/**","kind":"latency","latency_ms":5}"#))
            .unwrap();
        set.add(rule(
            r#"{"path_regex":"token","kind":"status","status":429,"api_version":"1"}"#,
        ))
        .unwrap();
        let d = set.decide("POST", "/t/oauth2/v2.0/token", Some("1"));
        assert_eq!(d.delay_ms, 5);
        assert!(matches!(
            d.terminal,
            Some((
                _,
                Terminal::Status {
                    status: 429,
                    retry_after_secs: Some(1)
                }
            ))
        ));
        let d = set.decide("POST", "/t/oauth2/v2.0/token", Some("2"));
        assert_eq!(d.terminal, None);
    }

    #[test]
    fn incomplete_rules_are_rejected() {
        assert!(rule(r#"{"kind":"latency"}"#).validate().is_err());
        assert!(rule(r#"{"kind":"status","status":200}"#)
            .validate()
            .is_err());
        assert!(rule(r#"{"kind":"reset","path_regex":"("}"#)
            .validate()
            .is_err());
    }
}
