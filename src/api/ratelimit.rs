//! Per-client request rate limit: one token bucket per client IP address, over every
//! request the HTTP server answers (API, WebSocket upgrade, dashboard files, health
//! and metrics). A request that finds its bucket empty gets `429 Too Many Requests`
//! with `Retry-After` (whole seconds until a token is back) and is counted in
//! `/metrics` (`hazgate_api_rate_limited_total`).
//!
//! The client is the TCP peer address; `X-Forwarded-For` is not trusted (anyone can
//! write it). Requests without a peer address (a router driven in-process, never a
//! network client) are not limited. The table holds at most [`MAX_CLIENTS`] buckets: when it is full, buckets
//! that have refilled completely (clients that went quiet) are dropped first; if none
//! has, the whole table starts afresh rather than growing.

use super::ApiState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

/// Most client buckets kept at once.
pub const MAX_CLIENTS: usize = 4096;

/// Bucket settings: `per_s` tokens a second up to `burst`. `per_s == 0` turns the limit
/// off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_s: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_s: 50.0,
            burst: 100.0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of every client seen recently.
#[derive(Debug, Default)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `client` at `now`: `Ok` when there was one, else how long
    /// until there is (seconds).
    pub fn take(&self, client: IpAddr, now: Instant) -> Result<(), f64> {
        let RateLimit { per_s, burst } = self.limit;
        if per_s <= 0.0 {
            return Ok(());
        }
        let burst = burst.max(1.0);
        // A poisoned lock only means another request panicked mid-update; the
        // buckets are still numbers.
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_CLIENTS && !map.contains_key(&client) {
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_s < burst
            });
            if map.len() >= MAX_CLIENTS {
                map.clear();
            }
        }
        let b = map.entry(client).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_s).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - b.tokens) / per_s)
        }
    }
}

/// Middleware: refuse a request over its client's limit.
pub async fn limit(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    // `serve` and `serve_tls` give every request its peer; only an in-process caller
    // (a test driving the router) has none, and it is not limited.
    let Some(client) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    else {
        return next.run(req).await;
    };
    match s.limiter.take(client, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait_s) => {
            s.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            let retry_after = wait_s.ceil().max(1.0) as u64;
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(serde_json::json!({
                    "error": format!("too many requests from {client}; retry in {retry_after} s")
                })),
            )
                .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let l = RateLimiter::new(RateLimit {
            per_s: 10.0,
            burst: 5.0,
        });
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(l.take(ip, t0).is_ok());
        }
        let wait = l.take(ip, t0).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-9, "{wait}");
        // Another client has its own bucket.
        assert!(l.take(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), t0).is_ok());
        // 100 ms later one token is back, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.take(ip, t1).is_ok());
        assert!(l.take(ip, t1).is_err());
    }

    #[test]
    fn zero_rate_turns_the_limit_off() {
        let l = RateLimiter::new(RateLimit {
            per_s: 0.0,
            burst: 0.0,
        });
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(l.take(IpAddr::V4(Ipv4Addr::LOCALHOST), t0).is_ok());
        }
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = RateLimiter::new(RateLimit {
            per_s: 1.0,
            burst: 2.0,
        });
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 * 2) {
            let _ = l.take(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        assert!(l.buckets.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
