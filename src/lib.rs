//! # hazgate
//!
//! A real-time sensor monitoring gateway for coal mines and hazardous-chemical sites:
//! graded monitoring with real-time warning (分级监控、实时预警) for major hazard
//! sources (重大危险源).
//!
//! ## Data flow
//!
//! ```text
//!  sources (Modbus, MQTT) ──mpsc──► engine (one task, pure) ──► durable log ──► sinks
//!                                   quality → graded thresholds     (SQLite)      (InfluxDB,
//!                                   → alarm states → risk colour                   province uplink)
//!                                                        └──► live state (watch + broadcast) ──► API / WebSocket / dashboard
//!                                   ◄── control channel (ack, shelve, out of service, manual cut) ── API
//!                                   └──► safety actions (same task) ──► relay writes (Modbus)
//! ```
//!
//! ## Modules
//!
//! - [`model`]: the shared names — `Reading`, `Quality`, `Colour`, `Direction`,
//!   `PointKind`, ids and timestamps.
//! - [`config`]: the TOML file a plant engineer writes — structures, loading with
//!   environment overrides (`HAZGATE__SECTION__KEY`), and validation that reports
//!   every problem at once with its key path and line; it compiles a valid file into
//!   an [`engine::EngineSpec`].
//! - [`engine`]: the pure core. No IO, no clock: time is an argument. It turns
//!   readings into graded alarms (hysteresis, on/off delays, rate of change, stale and
//!   sensor-fault detection), runs each alarm through its ISA-18.2 life, recomputes
//!   hazard-source risk colours and keeps alarm-rate figures (flood, chattering).
//! - [`sources`]: the edges that produce readings. [`sources::modbus`] polls PLCs,
//!   gas detectors and serial servers: data types and byte orders, request planning
//!   and block splitting, one task per link with timeouts, offline detection and
//!   graded polling, and a write handle for safety actions.
//! - [`gateway`]: sources → engine → outputs, as one running process; a bounded
//!   control channel into the engine task (acknowledge, shelve, out of service) and
//!   the live state it keeps for the API (a snapshot table patched in place, and
//!   alarm and value changes broadcast as they happen).
//! - [`api`]: the HTTP API under `/api/v1` (bearer tokens with roles, audit), the
//!   WebSocket live stream, `/healthz`, `/readyz`, `/metrics` and the dashboard.
//! - [`demo`]: `hazgate demo` — simulator farm, embedded MQTT broker, gateway, store
//!   and dashboard in one process.
//! - [`actions`]: the safety-action controller (pure; run by the engine task) — power
//!   cut on a cut grade, feed (馈电) feedback check, fault lockout, manual cut and
//!   release — and its compilation from `[[actions]]`.
//! - [`replay`]: feed recorded readings (CSV) through the engine and print the events,
//!   to check thresholds against real data before they go live.
//! - [`store`]: the durable log (SQLite, WAL): readings on change + heartbeat, 5-minute
//!   statistics, hash-chained alarm events and audit, sink cursors, retention.
//! - [`sinks`]: consumers that read the log by their own cursor — the InfluxDB sink
//!   (line protocol over `/api/v2/write` or `/write`).
//! - [`tls`]: the one TLS client builder (rustls on `ring`) for MQTT and HTTPS.
//! - [`uplink`]: the feed to the provincial supervision platform — alarm transitions
//!   first, real-time values, 5-minute statistics and a heartbeat, read from the log by
//!   its own cursors and sent over MQTT (QoS 1) or HTTP(S) (optionally SM4-encrypted),
//!   as JSON or KJ text; the same machinery, filtered, carries `[[linkage]]`
//!   notifications to site systems.

pub mod actions;
pub mod api;
pub mod config;
pub mod demo;
pub mod engine;
pub mod gateway;
pub mod model;
pub mod replay;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod tls;
pub mod uplink;
