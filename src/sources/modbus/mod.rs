//! The Modbus source: planned, fault-isolated polling of PLCs, gas detectors and
//! serial device servers.
//!
//! - [`decode`]: data types and byte orders (pure).
//! - [`plan`]: merging points into as few reads as possible, and splitting a block
//!   that answers with an address exception (pure).

pub mod build;
pub mod decode;
pub mod plan;
pub mod poller;
