//! The dispatch-room HTTP API, the WebSocket live stream and the dashboard.
//!
//! ```text
//!  engine task ──watch(Arc<Snapshot>)──► GET /api/v1/points, /alarms, /hazard-sources, WS snapshot
//!              ──broadcast(Delta)───────► WS /api/v1/live (alarm frames ahead of value frames)
//!              ◄──control (bounded)───── POST …/ack, …/shelve, …/unshelve, …/out-of-service
//!  store (SQLite, read-only connections) ► history, alarm history, audit
//! ```
//!
//! Invariants:
//! - the API never locks the engine: it reads the published [`Snapshot`] and sends
//!   requests over the gateway's control channel ([`crate::gateway::Control`]);
//! - every route under `/api/v1` needs a bearer token (`Authorization: Bearer …`, or for
//!   the WebSocket the sub-protocol `bearer.TOKEN`); tokens are configured as SHA-256
//!   hashes with a role, viewer < operator < admin; there is no default token;
//! - acknowledge, shelve, unshelve, out of service, maintenance, manual cut and
//!   release of a safety action (admin), and every failed login are written to the
//!   audit log (when a store is attached; a refused cut or release too);
//! - no CORS headers are sent (cross-origin reads are refused by browsers), the
//!   WebSocket `Origin` must be the API's own host, every answer carries a CSP;
//! - bodies are limited to [`MAX_BODY_BYTES`]; bad input gets a 4xx with a JSON
//!   `{"error": "…"}` message;
//! - every request counts against its client's token bucket ([`RateLimit`]); over it
//!   the answer is 429 with `Retry-After`;
//! - with `[api] tls_cert`/`tls_key` the same router is served over HTTPS
//!   ([`serve_tls`], [`TlsListener`]), and the live stream over WSS.
//!
//! `router(state)` builds everything; tests drive it with `oneshot`, no socket.

mod actions;
mod assets;
mod auth;
mod catalog;
mod handlers;
mod history;
mod live;
mod metrics;
mod ratelimit;
mod tls;

pub use auth::{hash_token, Principal, TokenEntry, Tokens};
pub use catalog::{Catalog, DeviceInfo, HazardInfo, PointInfo};
pub use ratelimit::{RateLimit, RateLimiter};
pub use tls::TlsListener;

use crate::gateway::{Control, LiveFeed, LiveState, Running};
use crate::sources::modbus::poller::DeviceStats;
use crate::sources::mqtt::MqttStats;
use crate::store::StoreWriter;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The Content-Security-Policy of every answer: only this origin, no inline script.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Errors of the API stage, each with its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing bearer token")]
    Unauthenticated,
    #[error("invalid token")]
    BadToken,
    #[error("this needs the {0} role")]
    Forbidden(&'static str),
    #[error("too many failed logins; try again later")]
    RateLimited,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("request body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the engine has stopped")]
    Unavailable,
    #[error("no store is attached to this gateway")]
    NoStore,
    #[error("store: {0}")]
    Store(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::BadToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable | ApiError::NoStore => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = axum::Json(serde_json::json!({ "error": self.to_string() }));
        let mut resp = (status, body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hazgate\""),
            );
        }
        resp
    }
}

/// Where history and audit come from and go to.
#[derive(Clone)]
pub struct StoreAccess {
    /// The SQLite file; the API opens read-only connections on it.
    pub path: PathBuf,
    /// The store's writer, for audit records.
    pub writer: StoreWriter,
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub catalog: Arc<Catalog>,
    pub control: Control,
    pub live: LiveState,
    pub feed: LiveFeed,
    pub tokens: Arc<Tokens>,
    pub store: Option<StoreAccess>,
    pub devices: Arc<Vec<(String, Arc<DeviceStats>)>>,
    pub mqtt: Arc<Vec<(String, Arc<MqttStats>)>>,
    pub metrics: Arc<metrics::ApiMetrics>,
    /// The safety actions' live state and counters.
    pub actions: crate::gateway::ActionsLive,
    pub action_stats: Arc<crate::gateway::ActionStats>,
    /// Per-client request limit over every route.
    pub limiter: Arc<RateLimiter>,
}

impl ApiState {
    /// State for a running gateway.
    pub fn new(
        catalog: Catalog,
        running: &Running,
        tokens: Tokens,
        store: Option<StoreAccess>,
    ) -> ApiState {
        ApiState {
            catalog: Arc::new(catalog),
            control: running.control.clone(),
            live: running.live.clone(),
            feed: running.feed.clone(),
            tokens: Arc::new(tokens),
            store,
            devices: Arc::new(running.device_stats.clone()),
            mqtt: Arc::new(running.mqtt_stats.clone()),
            metrics: Arc::new(metrics::ApiMetrics::default()),
            actions: running.actions.clone(),
            action_stats: running.action_stats.clone(),
            limiter: Arc::new(RateLimiter::new(RateLimit::default())),
        }
    }

    /// The same state with another request limit (`[api] rate_limit_*`).
    pub fn with_rate_limit(mut self, limit: RateLimit) -> ApiState {
        self.limiter = Arc::new(RateLimiter::new(limit));
        self
    }
}

/// The whole HTTP surface.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/points", get(handlers::points))
        .route("/points/{id}", get(handlers::point))
        .route("/points/{id}/history", get(handlers::point_history))
        .route("/points/{id}/stats", get(handlers::point_stats))
        .route(
            "/points/{id}/out-of-service",
            post(handlers::out_of_service),
        )
        .route("/points/{id}/maintenance", post(handlers::maintenance))
        .route("/alarms", get(handlers::alarms))
        .route("/alarms/history", get(handlers::alarm_history))
        .route("/alarms/{id}", get(handlers::alarm))
        .route("/alarms/{id}/ack", post(handlers::acknowledge))
        .route("/alarms/{id}/shelve", post(handlers::shelve))
        .route("/alarms/{id}/unshelve", post(handlers::unshelve))
        .route("/hazard-sources", get(handlers::hazard_sources))
        .route("/devices", get(handlers::devices))
        .route("/actions", get(actions::list))
        .route("/actions/{id}", get(actions::one))
        .route("/actions/{id}/cut", post(actions::cut))
        .route("/actions/{id}/release", post(actions::release))
        .route("/audit", get(handlers::audit_log))
        .route("/whoami", get(handlers::whoami))
        .route("/live", get(live::live))
        .route("/openapi.json", get(handlers::openapi));
    Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(assets::index))
        .route("/app.js", get(assets::app_js))
        .route("/app.css", get(assets::app_css))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Serve the router on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(shutdown))
    .await
}

/// Serve the router over HTTPS (and WSS) on `listener` until `shutdown` turns true.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: ApiState,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    // `tap_io` only so axum hands the peer address (`ConnectInfo<SocketAddr>`) of a
    // listener of our own to the rate limit.
    let listener = TlsListener::new(listener, tls)?.tap_io(|_| {});
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(shutdown))
    .await
}

async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
}
