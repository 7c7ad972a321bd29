//! Sinks: consumers of the durable log. Each reads the store by its own persisted
//! cursor ([`crate::store::SinkCursor`]), so an outage only makes its cursor wait and
//! nothing is lost across restarts.

pub mod influxdb;
