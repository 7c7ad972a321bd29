//! `GET /api/v1/live`: the WebSocket live stream.
//!
//! Authentication: `Authorization: Bearer T` or the sub-protocol pair
//! `hazgate, bearer.T` (the server answers with `hazgate`). The `Origin` header, when
//! present (browsers always send it), must name this host: other sites cannot read
//! the stream with a victim's token.
//!
//! Frames (JSON text):
//! - first `{"type":"snapshot", …Snapshot}` — every point, open alarm and hazard colour;
//! - then every newer [`Delta`] the engine task publishes: `{"type":"delta","seq","ts",
//!   "points":[changed points], "alarms":[all open alarms] (only when they changed),
//!   "hazard_sources":[changed sources], "alarms_per_10min", "flood"}`. Alarm and
//!   colour changes come in frames of their own and overtake value frames waiting for
//!   this client; value frames hold at most 1,000 points.
//!
//! A client that falls more than a channel's worth of frames behind (a stalled
//! browser) gets a fresh snapshot and continues from it; nothing accumulates for it.

use super::auth::authorize;
use super::{ApiError, ApiState};
use crate::config::Role;
use crate::gateway::{Delta, Snapshot};
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

fn origin_ok(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true; // not a browser
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

pub async fn live(
    State(s): State<ApiState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    if let Err(e) = authorize(&s, &headers, Role::Viewer).await {
        return e.into_response();
    }
    if !origin_ok(&headers) {
        return ApiError::Forbidden("same-origin").into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::BadRequest(e.body_text()).into_response(),
    };
    s.metrics
        .ws_clients
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let metrics = s.metrics.clone();
    ws.protocols(["hazgate"])
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            stream(socket, s).await;
            metrics
                .ws_clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        })
}

/// Send the table as a `snapshot` frame; returns its `seq` (frames at or below it
/// are already in it).
async fn send_snapshot(socket: &mut WebSocket, s: &ApiState) -> Option<u64> {
    #[derive(serde::Serialize)]
    struct First<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(flatten)]
        snapshot: &'a Snapshot,
    }
    let snap = s.live.borrow().clone();
    // Straight to text: a JSON value tree of 10,000 points would cost ten times more.
    let text = serde_json::to_string(&First {
        kind: "snapshot",
        snapshot: &snap,
    })
    .ok()?;
    let seq = snap.seq;
    drop(snap);
    socket.send(Message::Text(text.into())).await.ok()?;
    Some(seq)
}

/// What to do with one received frame.
enum Next {
    Send(Arc<Delta>),
    Skip,
    /// The client fell more than a channel's worth behind: start again from the table.
    Resync,
    /// The engine task ended.
    Close,
}

fn next(r: Result<Arc<Delta>, RecvError>, base: u64) -> Next {
    match r {
        Ok(d) if d.seq > base => Next::Send(d),
        Ok(_) => Next::Skip,
        Err(RecvError::Lagged(_)) => Next::Resync,
        Err(RecvError::Closed) => Next::Close,
    }
}

async fn stream(mut socket: WebSocket, s: ApiState) {
    // Subscribe first, then read the table: every frame newer than the table's seq
    // is then in the subscription (see `gateway/live.rs`).
    let Some(mut sub) = s.feed.subscribe() else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    let Some(mut base) = send_snapshot(&mut socket, &s).await else {
        return;
    };
    loop {
        // Alarm frames first: one waiting overtakes value frames not yet sent.
        let step = tokio::select! {
            biased;
            r = sub.alarms.recv() => next(r, base),
            r = sub.values.recv() => next(r, base),
            msg = socket.recv() => match msg {
                // Clients only ping or close; anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => Next::Skip,
            },
        };
        match step {
            Next::Send(d) => {
                let Ok(text) = Utf8Bytes::try_from(d.json()) else {
                    continue;
                };
                if socket.send(Message::Text(text)).await.is_err() {
                    return;
                }
            }
            Next::Skip => {}
            Next::Resync => {
                s.metrics
                    .ws_resyncs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match send_snapshot(&mut socket, &s).await {
                    Some(seq) => base = seq,
                    None => return,
                }
            }
            Next::Close => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
        }
    }
}
