//! hazgate-sim
