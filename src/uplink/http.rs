//! The HTTP(S) link: one POST per message, in order, each accepted only on a 2xx.
//!
//! Body: the message itself (`application/json` for JSON, `text/plain;
//! charset=utf-8` for KJ text). With an SM4 key the body becomes
//! `{"appid": "<appid>", "data": "<base64(SM4-CBC/PKCS#7(message))>"}` (the way the
//! emergency-management data feeds carry it, DOMAIN.md §3.4). Headers: `appid` and
//! `appsecret` when configured, and `X-Message-Id` with the message's stable id.

use super::encode::Message;
use super::options::HttpUplink;
use super::sm4::base64_encode;
use super::UplinkError;
use std::time::Duration;

/// One HTTP endpoint of the platform.
pub struct HttpLink {
    http: reqwest::Client,
    url: reqwest::Url,
    opts: HttpUplink,
    json: bool,
}

impl HttpLink {
    pub fn new(o: &HttpUplink, json: bool) -> Result<HttpLink, UplinkError> {
        let url =
            reqwest::Url::parse(&o.url).map_err(|e| UplinkError::Url(format!("{}: {e}", o.url)))?;
        let b = crate::tls::http_client_builder()
            .timeout(Duration::from_millis(o.request_timeout_ms.max(1)))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60));
        let b = if url.scheme() == "https" {
            // The shared rustls configuration: the configured CA file (else the
            // system's roots) and the client certificate when one is configured.
            let cfg = super::tls::client_config(&o.tls)?;
            b.tls_backend_preconfigured((*cfg).clone())
        } else {
            b
        };
        let http = b.build().map_err(|e| UplinkError::Tls(error_chain(&e)))?;
        Ok(HttpLink {
            http,
            url,
            opts: o.clone(),
            json,
        })
    }

    /// The request body of `m` (encrypted when SM4 is configured).
    pub fn body(&self, m: &Message) -> (Vec<u8>, &'static str) {
        match &self.opts.sm4 {
            Some(key) => {
                let doc = serde_json::json!({
                    "appid": self.opts.appid.as_deref().unwrap_or(""),
                    "data": base64_encode(&key.encrypt(&m.payload)),
                });
                (
                    serde_json::to_vec(&doc).unwrap_or_default(),
                    "application/json",
                )
            }
            None if self.json => (m.payload.clone(), "application/json"),
            None => (m.payload.clone(), "text/plain; charset=utf-8"),
        }
    }

    /// POST `msgs` in order. On failure, `Err((accepted, error))`.
    pub async fn send(&mut self, msgs: &[Message]) -> Result<(), (usize, UplinkError)> {
        for (i, m) in msgs.iter().enumerate() {
            let (body, ctype) = self.body(m);
            let mut req = self
                .http
                .post(self.url.clone())
                .header("content-type", ctype)
                .header("x-message-id", m.id.as_str())
                .body(body);
            if let Some(a) = &self.opts.appid {
                req = req.header("appid", a.as_str());
            }
            if let Some(s) = &self.opts.appsecret {
                req = req.header("appsecret", s.as_str());
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    // Read the body so the connection goes back to the pool.
                    let _ = r.bytes().await;
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let text: String = text.chars().take(200).collect();
                    return Err((i, UplinkError::Refused(format!("{status}: {text}"))));
                }
                // The whole chain: "error sending request" alone hides a refused
                // certificate or a refused connection.
                Err(e) => return Err((i, UplinkError::Link(error_chain(&e)))),
            }
        }
        Ok(())
    }
}

/// `e` and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = c.source();
    }
    s
}
