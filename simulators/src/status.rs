//! `GET /status`: the farm's live state as JSON, over a minimal HTTP/1.1 responder.
//!
//! One request per connection (`Connection: close`). Only `GET /status` (200) and
//! `GET /healthz` (200, `ok`) exist; other paths get 404, other methods 405. A
//! request head larger than 8 KiB or slower than 5 s is dropped.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::farm::StatusSource;

/// Errors starting the status server.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The address could not be bound.
    #[error("cannot listen for status on {addr}: {source}")]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running status server.
pub struct StatusServer {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl StatusServer {
    /// Bind `addr` (port 0 for a free port) and serve `source`.
    pub async fn start(
        addr: SocketAddr,
        source: StatusSource,
    ) -> Result<StatusServer, StatusError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StatusError::Bind { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| StatusError::Bind { addr, source })?;
        let (shutdown, mut rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    conn = listener.accept() => {
                        if let Ok((stream, _)) = conn {
                            let src = source.clone();
                            tokio::spawn(async move {
                                let _ = tokio::time::timeout(Duration::from_secs(5), respond(stream, src)).await;
                            });
                        }
                    }
                    _ = rx.changed() => break,
                }
            }
        });
        Ok(StatusServer {
            addr: bound,
            shutdown,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Status line and body for a request head (pure, for tests).
pub fn route(head: &str, source: &StatusSource) -> (&'static str, &'static str, String) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/status") => match serde_json::to_string(&source.status()) {
            Ok(body) => ("200 OK", "application/json", body),
            Err(e) => ("500 Internal Server Error", "text/plain", e.to_string()),
        },
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok".to_owned()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed".to_owned(),
        ),
    }
}

async fn respond(mut stream: TcpStream, source: StatusSource) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let (status, ctype, body) = route(&text, &source);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}
