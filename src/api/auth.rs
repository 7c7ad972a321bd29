//! Bearer tokens with roles. Tokens are kept only as SHA-256 hashes; a presented
//! token is hashed and compared in constant time against every configured hash.
//! Failed logins are counted, audited and rate limited (per minute, all clients;
//! valid tokens are never limited).

use super::{ApiError, ApiState};
use crate::config::{Role, TokenConfig};
use crate::store::AuditEntry;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most this many failed logins per minute are answered; more get 429.
pub const MAX_FAILED_LOGINS_PER_MIN: u32 = 30;

/// One configured token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub sha256: [u8; 32],
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// The configured tokens and the failed-login limiter.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
    failed: Mutex<(Option<Instant>, u32)>,
}

/// SHA-256 of a token.
pub fn hash_token(token: &str) -> [u8; 32] {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(&digest);
    out
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    pub fn new(entries: Vec<TokenEntry>) -> Tokens {
        Tokens {
            entries,
            failed: Mutex::new((None, 0)),
        }
    }

    /// From `[[api.tokens]]`. Hashes that are not 64 hex digits are skipped with an
    /// error log (config validation already refuses them).
    pub fn from_config(tokens: &[TokenConfig]) -> Tokens {
        let entries = tokens
            .iter()
            .filter_map(|t| match parse_hex32(&t.sha256) {
                Some(sha256) => Some(TokenEntry {
                    name: t.name.clone(),
                    role: t.role,
                    sha256,
                }),
                None => {
                    tracing::error!(token = %t.name, "api token hash is not 64 hex digits; token ignored");
                    None
                }
            })
            .collect();
        Tokens::new(entries)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principal of a presented token, if any matches.
    pub fn check(&self, token: &str) -> Option<Principal> {
        let h = hash_token(token);
        let mut found = None;
        for e in &self.entries {
            if ct_eq(&e.sha256, &h) && found.is_none() {
                found = Some(Principal {
                    name: e.name.clone(),
                    role: e.role,
                });
            }
        }
        found
    }

    /// Count a failed login; `false` when over the limit.
    fn note_failure(&self) -> bool {
        let Ok(mut g) = self.failed.lock() else {
            return false;
        };
        let now = Instant::now();
        match g.0 {
            Some(start) if now.duration_since(start) < Duration::from_secs(60) => g.1 += 1,
            _ => *g = (Some(now), 1),
        }
        g.1 <= MAX_FAILED_LOGINS_PER_MIN
    }

    fn limited(&self) -> bool {
        self.failed.lock().map_or(true, |g| {
            g.0.is_some_and(|s| s.elapsed() < Duration::from_secs(60))
                && g.1 > MAX_FAILED_LOGINS_PER_MIN
        })
    }
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// The bearer token of a request: `Authorization: Bearer T`, or for WebSockets the
/// sub-protocol `bearer.T` (browsers cannot set headers on a WebSocket).
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = v.splitn(2, ' ');
        let scheme = parts.next().unwrap_or("");
        if scheme.eq_ignore_ascii_case("bearer") {
            return parts.next().map(|t| t.trim().to_owned());
        }
        return None;
    }
    headers
        .get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("bearer.").map(str::to_owned))
        })
}

/// Authenticate and authorize a request for `need`.
pub async fn authorize(
    state: &ApiState,
    headers: &HeaderMap,
    need: Role,
) -> Result<Principal, ApiError> {
    let Some(token) = presented_token(headers) else {
        return Err(ApiError::Unauthenticated);
    };
    let Some(p) = state.tokens.check(&token) else {
        // Over the limit, unknown tokens are refused without a record: a guesser
        // cannot fill the audit log. Valid tokens still pass, so a flood of bad
        // guesses does not lock the dispatch room out.
        if state.tokens.limited() {
            return Err(ApiError::RateLimited);
        }
        state
            .metrics
            .failed_logins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let within = state.tokens.note_failure();
        if within {
            audit(
                state,
                "anonymous",
                "login_failed",
                "api",
                "unknown bearer token",
            )
            .await;
        }
        return Err(if within {
            ApiError::BadToken
        } else {
            ApiError::RateLimited
        });
    };
    if p.role < need {
        return Err(ApiError::Forbidden(role_name(need)));
    }
    Ok(p)
}

/// Write one audit record; a store that refuses is logged and counted, never hidden.
pub async fn audit(state: &ApiState, who: &str, action: &str, target: &str, detail: &str) {
    let Some(store) = &state.store else {
        tracing::info!(who, action, target, detail, "audit (no store attached)");
        return;
    };
    let entry = AuditEntry {
        ts: crate::gateway::now(),
        who: who.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        detail: detail.to_owned(),
    };
    if let Err(e) = store.writer.audit(vec![entry]).await {
        state
            .metrics
            .audit_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::error!(error = %e, who, action, target, "audit record could not be stored");
    }
}
