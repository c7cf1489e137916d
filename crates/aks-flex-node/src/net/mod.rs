//! What every network call of the agent shares: the HTTP client's settings, one backoff policy, the
//! reading of `Retry-After`, which HTTP statuses are worth retrying, and the retry loop for calls that
//! need no more than that (artifact downloads). ARM and `azcmagent connect` run their own loop on the same
//! policy, because they decide more (throttling budgets, re-authentication, ARM error codes).

use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

/// The user agent of every request.
pub const USER_AGENT: &str = concat!("aks-flex-node/", env!("CARGO_PKG_VERSION"));

/// A reqwest client with the agent's user agent, timeouts and, in addition to the system roots, `roots`
/// (a private CA). reqwest honours HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment.
pub fn client(
    connect_timeout: Duration,
    timeout: Duration,
    roots: Vec<reqwest::Certificate>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(timeout)
        .user_agent(USER_AGENT);
    if !roots.is_empty() {
        b = b.tls_certs_merge(roots);
    }
    b.build()
}

/// Capped exponential backoff with jitter: the delay before retry `n` (1-based) is base·2^(n-1), capped,
/// times a random factor in [0.75, 1.25] (never above the cap), so many agents that failed together do
/// not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(
            1u32.checked_shl(n.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        );
        let d = exp.min(self.cap);
        let jitter = 0.75 + fastrand::f64() * 0.5;
        d.mul_f64(jitter).min(self.cap)
    }
}

/// A status worth retrying: throttling (429), a request timeout (408), or a server error other than
/// 501 Not Implemented (which will not change).
pub fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// `retry-after-ms` / `x-ms-retry-after-ms`, or `Retry-After` as seconds or as an HTTP date (RFC 9110
/// §10.2.3; all three HTTP-date forms). A date in the past means "now".
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// [`retry_after`] relative to `now` (tests pin the clock).
pub fn retry_after_at(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    for n in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = get(n).and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = get("retry-after")?;
    if let Some(secs) = v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0) {
        return Some(Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How one attempt of a retried call ended, when not with a result.
#[derive(Debug)]
pub enum Attempt<E> {
    /// Worth another try (a connection error, a [`retryable`] status); the reason is kept for the error.
    Transient(String),
    /// Final: no retry.
    Fatal(E),
}

/// Why [`retry`] gave up.
#[derive(Debug)]
pub enum GaveUp<E> {
    Fatal(E),
    /// Every attempt failed transiently; the last reason.
    Exhausted {
        attempts: u32,
        reason: String,
    },
}

/// Run `op` until it succeeds, fails fatally, or has failed transiently `retries + 1` times, sleeping
/// `backoff.delay(n)` after the n-th failure. `on_retry(n, reason, delay)` is told before each sleep.
pub async fn retry<T, E, F, Fut>(
    backoff: Backoff,
    retries: u32,
    mut op: F,
    mut on_retry: impl FnMut(u32, &str, Duration),
) -> Result<T, GaveUp<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Attempt<E>>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match op().await {
            Ok(t) => return Ok(t),
            Err(Attempt::Fatal(e)) => return Err(GaveUp::Fatal(e)),
            Err(Attempt::Transient(reason)) if attempt > retries => {
                return Err(GaveUp::Exhausted {
                    attempts: attempt,
                    reason,
                })
            }
            Err(Attempt::Transient(reason)) => {
                let d = backoff.delay(attempt);
                on_retry(attempt, &reason, d);
                tokio::time::sleep(d).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_jittered_and_never_passes_the_cap() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        };
        for _ in 0..50 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(750) && d1 <= Duration::from_millis(1250));
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_secs(3) && d3 <= Duration::from_secs(5));
            for n in (6..40).chain([u32::MAX]) {
                assert!(b.delay(n) <= Duration::from_secs(30));
            }
        }
    }

    #[test]
    fn retryable_statuses() {
        for s in [429, 408, 500, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 501] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_http_dates() {
        use reqwest::header::{HeaderMap as H, HeaderValue};
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        let h = |k: &'static str, v: &str| {
            let mut m = H::new();
            m.insert(k, HeaderValue::from_str(v).unwrap());
            m
        };
        let at = |m: &H| retry_after_at(m, now);
        assert_eq!(at(&h("retry-after", "7")), Some(Duration::from_secs(7)));
        assert_eq!(
            at(&h("retry-after-ms", "250")),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            at(&h("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")),
            Some(Duration::from_secs(30))
        );
        // The obsolete RFC 850 and asctime forms are HTTP dates too.
        assert_eq!(
            at(&h("retry-after", "Wednesday, 21-Oct-15 07:29:00 GMT")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            at(&h("retry-after", "Wed Oct 21 07:28:05 2015")),
            Some(Duration::from_secs(5))
        );
        // In the past: retry now.
        assert_eq!(
            at(&h("retry-after", "Tue, 20 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(at(&h("retry-after", "soon")), None);
        assert_eq!(at(&h("retry-after", "-3")), None);
        assert_eq!(at(&H::new()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_success_at_a_fatal_error_or_after_the_last_retry() {
        let b = Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
        };
        // Two transient failures, then success: two retries announced.
        let mut calls = 0;
        let mut announced = Vec::new();
        let r: Result<u32, GaveUp<String>> = retry(
            b,
            4,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err(Attempt::Transient(format!("try {n}")))
                    } else {
                        Ok(n)
                    }
                }
            },
            |n, reason, _| announced.push(format!("{n}:{reason}")),
        )
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(announced, ["1:try 1", "2:try 2"]);

        // A fatal error ends it at once.
        let r: Result<(), GaveUp<&str>> = retry(
            b,
            4,
            || async { Err(Attempt::Fatal("no")) },
            |_, _, _| panic!("a fatal error is not retried"),
        )
        .await;
        assert!(matches!(r, Err(GaveUp::Fatal("no"))));

        // Always transient: 1 + retries attempts, the last reason kept.
        let mut calls = 0;
        let r: Result<(), GaveUp<()>> = retry(
            b,
            2,
            || {
                calls += 1;
                let n = calls;
                async move { Err(Attempt::Transient(format!("HTTP 503 #{n}"))) }
            },
            |_, _, _| {},
        )
        .await;
        match r {
            Err(GaveUp::Exhausted { attempts, reason }) => {
                assert_eq!((attempts, reason.as_str()), (3, "HTTP 503 #3"))
            }
            other => panic!("{other:?}"),
        }
    }
}
