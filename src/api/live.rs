//! `GET /api/v1/live`: the WebSocket live stream.
//!
//! Authentication: `Authorization: Bearer T` or the sub-protocol pair
//! `hazgate, bearer.T` (the server answers with `hazgate`). The `Origin` header, when
//! present (browsers always send it), must name this host: other sites cannot read
//! the stream with a victim's token.
//!
//! Frames (JSON text):
//! - first `{"type":"snapshot", …Snapshot}` — every point, open alarm and hazard colour;
//! - then, for every newer published snapshot, `{"type":"delta","seq","ts",
//!   "points":[changed points], "alarms":[all open alarms] (only when they changed),
//!   "hazard_sources":[changed sources], "alarms_per_10min", "flood"}` — alarm and
//!   colour changes in one frame first, value changes in a second frame.
//!
//! A slow client skips intermediate snapshots (the `watch` channel keeps the newest),
//! so deltas are always against what that client last received; nothing accumulates.

use super::auth::authorize;
use super::{ApiError, ApiState};
use crate::config::Role;
use crate::gateway::Snapshot;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

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

/// The frames that bring a client from `old` to `new`: empty when nothing visible
/// changed. Alarm and hazard-colour changes go first in a small frame of their own,
/// so a board (or an upstream relay) sees a new alarm before it parses thousands of
/// value changes.
pub fn delta(old: &Snapshot, new: &Snapshot) -> Vec<serde_json::Value> {
    let points: Vec<_> = new
        .points
        .iter()
        .filter(|p| old.points.get(p.index as usize) != Some(p))
        .collect();
    let hazards: Vec<_> = new
        .hazard_sources
        .iter()
        .filter(|h| old.hazard_sources.get(h.index as usize) != Some(h))
        .collect();
    let alarms_changed = old.alarms != new.alarms;
    let mut frames = Vec::new();
    if alarms_changed || !hazards.is_empty() || old.flood != new.flood {
        let mut v = json!({
            "type": "delta",
            "seq": new.seq,
            "ts": new.ts,
            "points": [],
            "hazard_sources": hazards,
            "alarms_per_10min": new.alarms_per_10min,
            "flood": new.flood,
        });
        if alarms_changed {
            if let Some(o) = v.as_object_mut() {
                o.insert("alarms".into(), json!(new.alarms));
            }
        }
        frames.push(v);
    }
    if !points.is_empty() {
        frames.push(json!({
            "type": "delta",
            "seq": new.seq,
            "ts": new.ts,
            "points": points,
            "hazard_sources": [],
            "alarms_per_10min": new.alarms_per_10min,
            "flood": new.flood,
        }));
    }
    frames
}

async fn stream(mut socket: WebSocket, s: ApiState) {
    let mut rx = s.live.clone();
    let mut last: Arc<Snapshot> = rx.borrow_and_update().clone();
    let mut first = match serde_json::to_value(&*last) {
        Ok(v) => v,
        Err(_) => return,
    };
    if let Some(o) = first.as_object_mut() {
        o.insert("type".into(), json!("snapshot"));
    }
    if socket
        .send(Message::Text(first.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                let new = rx.borrow_and_update().clone();
                for d in delta(&last, &new) {
                    if socket.send(Message::Text(d.to_string().into())).await.is_err() {
                        return;
                    }
                }
                last = new;
            }
            msg = socket.recv() => match msg {
                // Clients only ping or close; anything else is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
