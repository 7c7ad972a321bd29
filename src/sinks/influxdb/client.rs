//! The HTTP side: one write request and what its answer means for the sink.

use super::config::{InfluxApi, InfluxOptions};
use super::SinkError;
use std::io::Write;
use std::time::Duration;

/// What the server said to one write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// 2xx: every line was accepted.
    Accepted,
    /// 400: some lines were refused (the rest may have been written). The body names
    /// them when the server says which.
    BadRequest { body: String },
    /// 413: the request was too large; send smaller pieces.
    TooLarge,
    /// The server or the link failed, or asked us to slow down: send the same lines
    /// again later (after `retry_after` when the server gave one).
    Retry {
        status: Option<u16>,
        retry_after: Option<Duration>,
        reason: String,
    },
}

/// A write client for one server.
pub struct InfluxClient {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: Option<String>,
    gzip: bool,
}

impl InfluxClient {
    pub fn new(opts: &InfluxOptions) -> Result<InfluxClient, SinkError> {
        let base = reqwest::Url::parse(&opts.url)
            .map_err(|e| SinkError::Url(format!("{}: {e}", opts.url)))?;
        let (path, auth) = match &opts.api {
            InfluxApi::V2 { token, .. } => (
                "api/v2/write",
                (!token.is_empty()).then(|| format!("Token {token}")),
            ),
            InfluxApi::V1 { .. } => ("write", None),
        };
        let mut url = base
            .join(path)
            .map_err(|e| SinkError::Url(format!("{}: {e}", opts.url)))?;
        {
            let mut q = url.query_pairs_mut();
            match &opts.api {
                InfluxApi::V2 { org, bucket, .. } => {
                    q.append_pair("org", org).append_pair("bucket", bucket);
                }
                InfluxApi::V1 {
                    database,
                    retention_policy,
                    username,
                    password,
                } => {
                    q.append_pair("db", database);
                    if let Some(rp) = retention_policy {
                        q.append_pair("rp", rp);
                    }
                    if let Some(u) = username {
                        q.append_pair("u", u);
                    }
                    if let Some(p) = password {
                        q.append_pair("p", p);
                    }
                }
            }
            q.append_pair("precision", "ms");
        }
        let http = crate::tls::http_client_builder()
            .timeout(Duration::from_millis(opts.request_timeout_ms.max(1)))
            .build()
            .map_err(|e| SinkError::Http(e.to_string()))?;
        Ok(InfluxClient {
            http,
            url,
            auth,
            gzip: opts.gzip,
        })
    }

    /// The write URL (credentials included for v1; do not log it).
    pub fn url(&self) -> &reqwest::Url {
        &self.url
    }

    /// POST `body` (line protocol) once.
    pub async fn write(&self, body: &str) -> WriteOutcome {
        let mut req = self
            .http
            .post(self.url.clone())
            .header("Content-Type", "text/plain; charset=utf-8");
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        req = if self.gzip {
            match gzip(body.as_bytes()) {
                Ok(z) => req.header("Content-Encoding", "gzip").body(z),
                Err(_) => req.body(body.to_owned()),
            }
        } else {
            req.body(body.to_owned())
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return WriteOutcome::Retry {
                    status: None,
                    retry_after: None,
                    reason: e.to_string(),
                }
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("Retry-After")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = resp.text().await.unwrap_or_default();
        classify(status, retry_after, text)
    }
}

/// Map a status to what the sink does next. 401/403/404 (bad token, unknown bucket)
/// are retried too: the rows stay in the store until someone fixes the config.
pub fn classify(status: u16, retry_after: Option<Duration>, body: String) -> WriteOutcome {
    match status {
        200..=299 => WriteOutcome::Accepted,
        400 => WriteOutcome::BadRequest { body },
        413 => WriteOutcome::TooLarge,
        _ => WriteOutcome::Retry {
            status: Some(status),
            retry_after,
            reason: body.chars().take(300).collect(),
        },
    }
}

/// `Retry-After` in delay-seconds. (An HTTP-date is not understood; the sink then
/// falls back to its own backoff.)
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body)?;
    enc.finish()
}

/// Line numbers (1-based, in the request body) that a 400 body names, e.g. InfluxDB
/// 2.x/3.x `"... line 3: ..."` / `"errors encountered on line(s): line 2: ..."`.
pub fn error_lines(body: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find("line ") {
        rest = &rest[i + 5..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if let Ok(n) = digits.parse::<usize>() {
            if n > 0 && !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_line_numbers() {
        assert_eq!(
            error_lines(
                r#"{"code":"invalid","message":"partial write has occurred, errors encountered on line(s): line 2: no field, line 5: bad"}"#
            ),
            vec![2, 5]
        );
        assert!(error_lines(
            r#"{"error":"partial write: field type conflict: input field \"value\" ... dropped=1"}"#
        )
        .is_empty());
    }

    #[test]
    fn statuses() {
        assert_eq!(classify(204, None, String::new()), WriteOutcome::Accepted);
        assert!(
            matches!(classify(503, Some(Duration::from_secs(2)), String::new()), WriteOutcome::Retry { retry_after: Some(d), .. } if d == Duration::from_secs(2))
        );
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
