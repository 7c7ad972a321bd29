//! JSON handlers under `/api/v1`, plus `/healthz`, `/readyz` and the 404 answer.
//! Each handler authorizes first, then reads its body: a request without a valid
//! token learns nothing about the body it sent.

use super::auth::{audit, authorize};
use super::history::{self, HistoryError};
use super::{ApiError, ApiState};
use crate::config::Role;
use crate::engine::ControlError;
use crate::gateway::{Command, ControlRequestError};
use crate::model::AlarmId;
use crate::model::PointId;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

const HOUR_MS: i64 = 3_600_000;
/// Longest history window one request may ask for (31 days).
const MAX_RANGE_MS: i64 = 31 * 24 * HOUR_MS;
const MAX_LIMIT: usize = 100_000;

pub(super) type ApiResult = Result<Json<Value>, ApiError>;

pub(super) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(v)| v).map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::BadRequest(format!("bad request body: {}", e.body_text()))
        }
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(format!("bad query: {}", e.body_text())))
}

pub(super) fn control_error(e: ControlRequestError) -> ApiError {
    match e {
        ControlRequestError::Stopped => ApiError::Unavailable,
        ControlRequestError::Refused(c) => match c {
            ControlError::UnknownAlarm(_) | ControlError::UnknownPoint(_) => {
                ApiError::NotFound(c.to_string())
            }
            ControlError::InvalidDuration => ApiError::BadRequest(c.to_string()),
            _ => ApiError::Conflict(c.to_string()),
        },
        ControlRequestError::Action(a) => match a {
            crate::actions::ActionError::Unknown(_) => ApiError::NotFound(a.to_string()),
            _ => ApiError::Conflict(a.to_string()),
        },
    }
}

fn alarm_id(s: &str) -> Result<AlarmId, ApiError> {
    s.parse::<u64>()
        .map(AlarmId)
        .map_err(|_| ApiError::BadRequest(format!("alarm id {s:?} is not a number")))
}

fn point_index(state: &ApiState, id: &str) -> Result<u32, ApiError> {
    state
        .catalog
        .point_index(id)
        .ok_or_else(|| ApiError::NotFound(format!("no point {id:?}")))
}

/// The operator a request acts for: the `name` in the body, else the token's holder.
pub(super) fn acting_name(
    name: Option<String>,
    who: &super::Principal,
) -> Result<String, ApiError> {
    let name = text(name, "name", 64, false)?;
    Ok(if name.is_empty() {
        who.name.clone()
    } else {
        name
    })
}

pub(super) fn text(
    s: Option<String>,
    what: &str,
    max: usize,
    required: bool,
) -> Result<String, ApiError> {
    let s = s.unwrap_or_default().trim().to_owned();
    if required && s.is_empty() {
        return Err(ApiError::BadRequest(format!("{what} is required")));
    }
    if s.chars().count() > max {
        return Err(ApiError::BadRequest(format!(
            "{what} is longer than {max} characters"
        )));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ApiError::BadRequest(format!(
            "{what} contains control characters"
        )));
    }
    Ok(s)
}

/// `from`/`to` in ms since the epoch; default the last `default_ms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    from: Option<i64>,
    to: Option<i64>,
    limit: Option<usize>,
    point: Option<String>,
    alarm: Option<i64>,
}

fn range(r: &Range, default_ms: i64) -> Result<(i64, i64, usize), ApiError> {
    let to = r.to.unwrap_or_else(|| crate::gateway::now().0 + 1);
    let from = r.from.unwrap_or(to - default_ms);
    if from >= to {
        return Err(ApiError::BadRequest(format!(
            "invalid time range: from ({from}) must be before to ({to})"
        )));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest(
            "invalid time range: at most 31 days per request".to_owned(),
        ));
    }
    let limit = r.limit.unwrap_or(10_000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok((from, to, limit))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ApiError::Store(e.to_string())),
        Err(e) => Err(ApiError::Store(e.to_string())),
    }
}

fn point_json(state: &ApiState, i: usize) -> Value {
    let snap = state.live.borrow().clone();
    let info = state.catalog.points.get(i);
    let live = snap.points.get(i);
    json!({ "point": info, "live": live })
}

pub async fn points(State(s): State<ApiState>, h: HeaderMap) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let snap = s.live.borrow().clone();
    let list: Vec<Value> = s
        .catalog
        .points
        .iter()
        .map(|p| {
            let live = snap.points.get(p.index as usize);
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            if let (Some(obj), Some(l)) = (v.as_object_mut(), live) {
                obj.insert("value".into(), json!(l.value));
                obj.insert("ts".into(), json!(l.ts));
                obj.insert("quality".into(), json!(l.quality));
                obj.insert("grade".into(), json!(l.grade));
                obj.insert("colour".into(), json!(l.colour));
                obj.insert("stale".into(), json!(l.stale));
                obj.insert("out_of_service".into(), json!(l.out_of_service));
                obj.insert("maintenance".into(), json!(l.maintenance));
            }
            v
        })
        .collect();
    Ok(Json(
        json!({ "seq": snap.seq, "ts": snap.ts, "points": list }),
    ))
}

pub async fn point(State(s): State<ApiState>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let i = point_index(&s, &id)?;
    Ok(Json(point_json(&s, i as usize)))
}

pub async fn point_history(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<Range>, QueryRejection>,
) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let q = query(q)?;
    point_index(&s, &id)?;
    let (from, to, limit) = range(&q, HOUR_MS)?;
    let store = s.store.clone().ok_or(ApiError::NoStore)?;
    let pid = id.clone();
    let rows = blocking(move || history::raw(&store.path, &pid, from, to, limit)).await?;
    Ok(Json(
        json!({ "point": id, "from": from, "to": to, "readings": rows }),
    ))
}

pub async fn point_stats(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    q: Result<Query<Range>, QueryRejection>,
) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let q = query(q)?;
    point_index(&s, &id)?;
    let (from, to, _) = range(&q, 24 * HOUR_MS)?;
    let store = s.store.clone().ok_or(ApiError::NoStore)?;
    let pid = id.clone();
    let rows = blocking(move || history::stats(&store.path, &pid, from, to)).await?;
    Ok(Json(
        json!({ "point": id, "from": from, "to": to, "bucket_ms": 300_000, "stats": rows }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OosBody {
    out_of_service: bool,
    reason: Option<String>,
}

pub async fn out_of_service(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<OosBody>, JsonRejection>,
) -> ApiResult {
    let who = authorize(&s, &h, Role::Admin).await?;
    let b = body(b)?;
    let on = b.out_of_service;
    let action = if on { "out_of_service" } else { "in_service" };
    set_point_mode(&s, &who.name, &id, b.reason, action, |point| {
        Command::OutOfService {
            point,
            out_of_service: on,
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceBody {
    maintenance: bool,
    reason: Option<String>,
}

pub async fn maintenance(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<MaintenanceBody>, JsonRejection>,
) -> ApiResult {
    let who = authorize(&s, &h, Role::Admin).await?;
    let b = body(b)?;
    let on = b.maintenance;
    let action = if on {
        "maintenance_on"
    } else {
        "maintenance_off"
    };
    set_point_mode(&s, &who.name, &id, b.reason, action, |point| {
        Command::Maintenance {
            point,
            maintenance: on,
        }
    })
    .await
}

/// An authorised admin switches a point's mode (out of service, maintenance): sent
/// to the engine, audited with the reason, answered with the point as it is now.
async fn set_point_mode(
    s: &ApiState,
    who: &str,
    id: &str,
    reason: Option<String>,
    action: &str,
    command: impl FnOnce(PointId) -> Command,
) -> ApiResult {
    let reason = text(reason, "reason", 500, false)?;
    let i = point_index(s, id)?;
    s.control
        .send(command(PointId(i)))
        .await
        .map_err(control_error)?;
    audit(s, who, action, id, &reason).await;
    Ok(Json(point_json(s, i as usize)))
}

fn alarm_json(s: &ApiState, a: &crate::engine::Alarm) -> Value {
    let p = s.catalog.points.get(a.point.0 as usize);
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let Some(obj) = v.as_object_mut() {
        obj.insert("point_id".into(), json!(p.map(|p| &p.id)));
        obj.insert("point_name".into(), json!(p.map(|p| &p.name)));
        obj.insert("unit".into(), json!(p.map(|p| &p.unit)));
        obj.insert(
            "hazard_source".into(),
            json!(p.and_then(|p| p.hazard_source.as_ref())),
        );
    }
    v
}

pub async fn alarms(State(s): State<ApiState>, h: HeaderMap) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let snap = s.live.borrow().clone();
    let list: Vec<Value> = snap.alarms.iter().map(|a| alarm_json(&s, a)).collect();
    Ok(Json(json!({
        "seq": snap.seq,
        "ts": snap.ts,
        "alarms_per_10min": snap.alarms_per_10min,
        "flood": snap.flood,
        "alarms": list,
    })))
}

pub async fn alarm(State(s): State<ApiState>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let id = alarm_id(&id)?;
    let snap = s.live.borrow().clone();
    let open = snap
        .alarms
        .iter()
        .find(|a| a.id == id)
        .map(|a| alarm_json(&s, a));
    let events = match s.store.clone() {
        Some(store) => Some(
            blocking(move || {
                history::alarm_events(&store.path, 0, i64::MAX, None, Some(id.0 as i64), 1000)
            })
            .await?,
        ),
        None => None,
    };
    if open.is_none() && events.as_ref().is_none_or(|e| e.is_empty()) {
        return Err(ApiError::NotFound(format!("no alarm with id {}", id.0)));
    }
    Ok(Json(json!({ "id": id.0, "open": open, "events": events })))
}

pub async fn alarm_history(
    State(s): State<ApiState>,
    h: HeaderMap,
    q: Result<Query<Range>, QueryRejection>,
) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let q = query(q)?;
    let (from, to, limit) = range(&q, 24 * HOUR_MS)?;
    if let Some(p) = &q.point {
        point_index(&s, p)?;
    }
    let store = s.store.clone().ok_or(ApiError::NoStore)?;
    let (point, alarm) = (q.point.clone(), q.alarm);
    let rows = blocking(move || {
        history::alarm_events(&store.path, from, to, point.as_deref(), alarm, limit)
    })
    .await?;
    Ok(Json(json!({ "from": from, "to": to, "events": rows })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// The operator's name as typed on the board.
    name: Option<String>,
    comment: Option<String>,
}

pub async fn acknowledge(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<AckBody>, JsonRejection>,
) -> ApiResult {
    let who = authorize(&s, &h, Role::Operator).await?;
    let b = body(b)?;
    let id = alarm_id(&id)?;
    let name = text(b.name, "name", 64, true)?;
    let comment = text(b.comment, "comment", 500, false)?;
    s.control
        .send(Command::Acknowledge {
            alarm: id,
            by: name.clone(),
            comment: comment.clone(),
        })
        .await
        .map_err(control_error)?;
    audit(
        &s,
        &who.name,
        "acknowledge",
        &format!("alarm:{}", id.0),
        &format!("name={name}; comment={comment}"),
    )
    .await;
    Ok(Json(
        json!({ "id": id.0, "acknowledged_by": name, "comment": comment }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShelveBody {
    /// How long, in seconds (1 s … 24 h).
    duration_s: u64,
    reason: Option<String>,
    name: Option<String>,
}

pub async fn shelve(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ShelveBody>, JsonRejection>,
) -> ApiResult {
    let who = authorize(&s, &h, Role::Operator).await?;
    let b = body(b)?;
    let id = alarm_id(&id)?;
    if b.duration_s == 0 || b.duration_s > 24 * 3600 {
        return Err(ApiError::BadRequest(
            "duration_s must be between 1 and 86400".to_owned(),
        ));
    }
    let reason = text(b.reason, "reason", 500, true)?;
    let by = acting_name(b.name, &who)?;
    s.control
        .send(Command::Shelve {
            alarm: id,
            by: by.clone(),
            reason: reason.clone(),
            duration_ms: b.duration_s * 1000,
        })
        .await
        .map_err(control_error)?;
    audit(
        &s,
        &who.name,
        "shelve",
        &format!("alarm:{}", id.0),
        &format!("name={by}; duration_s={}; reason={reason}", b.duration_s),
    )
    .await;
    Ok(Json(
        json!({ "id": id.0, "shelved_by": by, "duration_s": b.duration_s }),
    ))
}

pub async fn unshelve(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let who = authorize(&s, &h, Role::Operator).await?;
    let id = alarm_id(&id)?;
    s.control
        .send(Command::Unshelve { alarm: id })
        .await
        .map_err(control_error)?;
    audit(&s, &who.name, "unshelve", &format!("alarm:{}", id.0), "").await;
    Ok(Json(json!({ "id": id.0, "unshelved": true })))
}

pub async fn hazard_sources(State(s): State<ApiState>, h: HeaderMap) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let snap = s.live.borrow().clone();
    let list: Vec<Value> = s
        .catalog
        .hazard_sources
        .iter()
        .map(|hz| {
            let colour = snap.hazard_sources.get(hz.index as usize).map(|l| l.colour);
            let active = snap
                .alarms
                .iter()
                .filter(|a| {
                    s.catalog
                        .points
                        .get(a.point.0 as usize)
                        .and_then(|p| p.hazard_source.as_deref())
                        == Some(hz.id.as_str())
                })
                .count();
            json!({
                "id": hz.id, "name": hz.name, "grade": hz.grade, "points": hz.points,
                "colour": colour, "open_alarms": active,
            })
        })
        .collect();
    Ok(Json(json!({ "hazard_sources": list })))
}

pub async fn devices(State(s): State<ApiState>, h: HeaderMap) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let mut list: Vec<Value> = Vec::new();
    for d in &s.catalog.devices {
        let stats = s
            .devices
            .iter()
            .find(|(id, _)| id == &d.id)
            .map(|(_, st)| st);
        let mqtt = s.mqtt.iter().find(|(id, _)| id == &d.id).map(|(_, st)| st);
        let mut v = json!({
            "id": d.id, "name": d.name, "protocol": d.protocol, "address": d.address,
        });
        if let (Some(obj), Some(st)) = (v.as_object_mut(), stats) {
            let last_error = st.last_error.lock().ok().and_then(|g| g.clone());
            obj.insert("online".into(), json!(st.online.load(Ordering::Relaxed)));
            obj.insert(
                "rtt_ms".into(),
                json!(st.last_rtt_us.load(Ordering::Relaxed) as f64 / 1000.0),
            );
            obj.insert(
                "max_rtt_ms".into(),
                json!(st.max_rtt_us.load(Ordering::Relaxed) as f64 / 1000.0),
            );
            obj.insert("polls".into(), json!(st.polls.load(Ordering::Relaxed)));
            obj.insert(
                "failed_polls".into(),
                json!(st.failed_polls.load(Ordering::Relaxed)),
            );
            obj.insert(
                "timeouts".into(),
                json!(st.timeouts.load(Ordering::Relaxed)),
            );
            obj.insert(
                "exceptions".into(),
                json!(st.exceptions.load(Ordering::Relaxed)),
            );
            obj.insert("last_error".into(), json!(last_error));
        }
        if let (Some(obj), Some(st)) = (v.as_object_mut(), mqtt) {
            let last_error = st.last_error.lock().ok().and_then(|g| g.clone());
            obj.insert("online".into(), json!(st.online.load(Ordering::Relaxed)));
            obj.insert("last_error".into(), json!(last_error));
            obj.insert(
                "messages".into(),
                json!(st.messages.load(Ordering::Relaxed)),
            );
            obj.insert(
                "readings".into(),
                json!(st.readings.load(Ordering::Relaxed)),
            );
            obj.insert("acks".into(), json!(st.acks.load(Ordering::Relaxed)));
            obj.insert(
                "unacknowledged".into(),
                json!(st.unacknowledged.load(Ordering::Relaxed)),
            );
            obj.insert(
                "redelivered".into(),
                json!(st.redelivered.load(Ordering::Relaxed)),
            );
            obj.insert("rejected".into(), json!(st.rejected()));
        }
        list.push(v);
    }
    Ok(Json(json!({ "devices": list })))
}

pub async fn audit_log(
    State(s): State<ApiState>,
    h: HeaderMap,
    q: Result<Query<Range>, QueryRejection>,
) -> ApiResult {
    authorize(&s, &h, Role::Admin).await?;
    let q = query(q)?;
    let (from, to, limit) = range(&q, 7 * 24 * HOUR_MS)?;
    let store = s.store.clone().ok_or(ApiError::NoStore)?;
    let rows = blocking(move || history::audit(&store.path, from, to, limit)).await?;
    Ok(Json(json!({ "from": from, "to": to, "audit": rows })))
}

pub async fn whoami(State(s): State<ApiState>, h: HeaderMap) -> ApiResult {
    let p = authorize(&s, &h, Role::Viewer).await?;
    Ok(Json(json!({
        "name": p.name, "role": super::auth::role_name(p.role),
        "site_id": s.catalog.site_id, "site_name": s.catalog.site_name,
    })))
}

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    if s.control.is_closed() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "engine stopped" })),
        )
    } else {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".to_owned())
}

pub async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        super::assets::OPENAPI,
    )
}
