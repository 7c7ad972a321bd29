//! Configuration (placeholder while it is written).
