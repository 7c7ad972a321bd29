//! Sources turn the outside world into [`Reading`](crate::model::Reading)s. They own
//! connections, scheduling, retries and decoding; they know nothing about alarms.

pub mod modbus;
pub mod mqtt;
