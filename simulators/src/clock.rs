//! Scenario time.
//!
//! Everything that changes over a scenario (signals, faults, offline windows, relay
//! delays) reads scenario time from a [`Clock`], never the wall clock, so tests can
//! drive time by hand ([`Clock::manual`]) and a run can replay an hour in a minute
//! ([`Clock::real`] with `speed = 60`). Response delays of slow devices are real
//! time on purpose: they exist to exercise a gateway's real timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
enum Inner {
    Real {
        start: Instant,
        start_s: f64,
        speed: f64,
    },
    Manual {
        /// f64 bits of the current scenario time.
        bits: AtomicU64,
    },
}

/// A cheap-to-clone source of scenario time in seconds.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Inner>);

impl Clock {
    /// Scenario time runs `speed` times faster than real time, from `start_s`.
    pub fn real(start_s: f64, speed: f64) -> Clock {
        Clock(Arc::new(Inner::Real {
            start: Instant::now(),
            start_s,
            speed,
        }))
    }

    /// Scenario time stands still at `start_s` until set or advanced.
    pub fn manual(start_s: f64) -> Clock {
        Clock(Arc::new(Inner::Manual {
            bits: AtomicU64::new(start_s.to_bits()),
        }))
    }

    /// Current scenario time, seconds.
    pub fn now_s(&self) -> f64 {
        match &*self.0 {
            Inner::Real {
                start,
                start_s,
                speed,
            } => start_s + start.elapsed().as_secs_f64() * speed,
            Inner::Manual { bits } => f64::from_bits(bits.load(Ordering::Acquire)),
        }
    }

    /// Speed factor (1 for a manual clock).
    pub fn speed(&self) -> f64 {
        match &*self.0 {
            Inner::Real { speed, .. } => *speed,
            Inner::Manual { .. } => 1.0,
        }
    }

    /// Set a manual clock; returns false (and does nothing) on a real clock.
    pub fn set_s(&self, t: f64) -> bool {
        match &*self.0 {
            Inner::Manual { bits } => {
                bits.store(t.to_bits(), Ordering::Release);
                true
            }
            Inner::Real { .. } => false,
        }
    }

    /// Advance a manual clock by `dt` seconds; returns false on a real clock.
    pub fn advance_s(&self, dt: f64) -> bool {
        self.set_s(self.now_s() + dt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_and_real() {
        let c = Clock::manual(5.0);
        assert_eq!(c.now_s(), 5.0);
        assert!(c.advance_s(2.5));
        assert_eq!(c.now_s(), 7.5);
        let r = Clock::real(100.0, 60.0);
        assert!(r.now_s() >= 100.0);
        assert!(!r.set_s(0.0));
    }
}
