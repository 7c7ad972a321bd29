//! Safety actions over the API: their live state for everyone with a token, and the
//! manual remote cut and release (admin only, audited).

use super::auth::{audit, authorize};
use super::handlers::{acting_name, body, control_error, text, ApiResult};
use super::{ApiError, ApiState};
use crate::config::Role;
use crate::gateway::Command;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

/// `GET /api/v1/actions`: every action with its cut state, cause and relays.
pub async fn list(State(s): State<ApiState>, h: HeaderMap) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let actions = s.actions.borrow().clone();
    Ok(Json(json!({ "actions": *actions })))
}

/// `GET /api/v1/actions/{id}`.
pub async fn one(State(s): State<ApiState>, h: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authorize(&s, &h, Role::Viewer).await?;
    let actions = s.actions.borrow().clone();
    let action = actions
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no safety action {id:?}")))?;
    Ok(Json(json!(action)))
}

/// Body of a manual cut or release: who asks, and why (required: it goes to the
/// audit log).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualBody {
    name: Option<String>,
    reason: Option<String>,
}

/// `POST /api/v1/actions/{id}/cut`: cut the power of the action's range by hand.
pub async fn cut(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ManualBody>, JsonRejection>,
) -> ApiResult {
    manual(s, h, id, b, true).await
}

/// `POST /api/v1/actions/{id}/release`: end a manual cut, or restore a latched
/// action whose cause is gone.
pub async fn release(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ManualBody>, JsonRejection>,
) -> ApiResult {
    manual(s, h, id, b, false).await
}

async fn manual(
    s: ApiState,
    h: HeaderMap,
    id: String,
    b: Result<Json<ManualBody>, JsonRejection>,
    cut: bool,
) -> ApiResult {
    let who = authorize(&s, &h, Role::Admin).await?;
    let b = body(b)?;
    let reason = text(b.reason, "reason", 500, true)?;
    let by = acting_name(b.name, &who)?;
    let (command, what) = if cut {
        (Command::ManualCut { action: id.clone() }, "manual_cut")
    } else {
        (Command::Release { action: id.clone() }, "release")
    };
    let result = s.control.send(command).await;
    let outcome = match &result {
        Ok(()) => "done".to_owned(),
        Err(e) => format!("refused: {e}"),
    };
    audit(
        &s,
        &who.name,
        what,
        &format!("action:{id}"),
        &format!("name={by}; reason={reason}; {outcome}"),
    )
    .await;
    result.map_err(control_error)?;
    let actions = s.actions.borrow().clone();
    let state = actions.iter().find(|a| a.id == id).cloned();
    Ok(Json(
        json!({ "id": id, "by": by, "reason": reason, "action": state }),
    ))
}
