//! hazgate-sim: simulated sites for hazgate — a Modbus device farm, an MQTT sensor
//! publisher and the scenarios that drive them.
//!
//! Map of the modules (pure first, IO last):
//! - [`codec`]: engineering value ⇄ registers in every type and byte/word order.
//! - [`pdu`]: Modbus request parsing, response building, exception codes.
//! - [`frame`]: MBAP and RTU-over-TCP framing, CRC-16/MODBUS.
//! - [`scenario`]: scenario files, loaded with every error and its place.
//! - [`signal`]: keyframe profiles, seeded noise, fault overlays — `f(seed, t)`.
//! - [`clock`]: scenario time (real with a speed factor, or manual for tests).
//! - [`device`]: one device: request + time → response; relays, exceptions, offline.
//! - [`farm`]: TCP listeners and connections serving the devices ([`farm::Farm::start`]).
//! - [`status`]: `GET /status` JSON over a hand-written HTTP/1.1 responder.
//! - [`mqtt`]: the MQTT publisher ([`mqtt::Publisher::start`]).
//!
//! Data flow: scenario → [`signal::Signals`] (values as a function of time) →
//! [`device::Device`] (register map, state) → [`farm`] (sockets). hazgate uses the
//! library in-process: `Farm::start(&scenario, FarmOptions::default())` returns a
//! [`farm::FarmHandle`] with the bound addresses, a status snapshot and shutdown.

pub mod clock;
pub mod codec;
pub mod device;
pub mod farm;
pub mod frame;
pub mod mqtt;
pub mod pdu;
pub mod scenario;
pub mod signal;
pub mod status;

pub use clock::Clock;
pub use farm::{Farm, FarmHandle, FarmOptions, FarmStatus};
pub use mqtt::{Publisher, PublisherHandle, PublisherOptions};
pub use scenario::{Scenario, ScenarioError};
