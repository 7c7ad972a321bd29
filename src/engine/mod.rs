//! The engine (placeholder while it is written).
pub mod spec;
pub use spec::*;
