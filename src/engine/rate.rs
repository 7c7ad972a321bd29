//! Two small trackers over time: the rate of change of one point's value, and the
//! alarm rate of the whole gateway (flood and chattering, after EEMUA 191 / ISA-18.2).
//! Both are pure: time comes in with every call.

use crate::model::Timestamp;
use std::collections::VecDeque;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Rate of change of one point over a sliding window.
///
/// Memory is bounded: a sample is kept at most every `window / 16`, so at most about
/// 18 samples are held whatever the reading rate. The rate is measured from the
/// oldest kept sample (at most one window plus one step old) to the current reading,
/// and only once at least half a window of history exists, so a single noisy reading
/// right after start cannot raise a rate alarm.
#[derive(Debug, Clone, Default)]
pub struct RateOfChange {
    samples: VecDeque<(i64, f64)>,
}

impl RateOfChange {
    /// Feed a good reading; returns the rate in units per hour, if enough history.
    pub fn push(&mut self, ts: Timestamp, value: f64, window_ms: u64) -> Option<f64> {
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX).max(1);
        let step = (window / 16).max(1);
        let now = ts.0;
        // Keep exactly one sample at or beyond the window edge, drop older ones.
        while self.samples.len() >= 2 && now - self.samples[1].0 >= window {
            self.samples.pop_front();
        }
        let rate = match self.samples.front() {
            Some(&(t0, v0)) if now - t0 >= window / 2 && now > t0 => {
                Some((value - v0) / (now - t0) as f64 * MS_PER_HOUR)
            }
            _ => None,
        };
        match self.samples.back() {
            Some(&(t_last, _)) if now - t_last < step => {}
            Some(&(t_last, _)) if now < t_last => {}
            _ => self.samples.push_back((now, value)),
        }
        rate
    }

    /// Forget the history (after a gap in good data).
    pub fn reset(&mut self) {
        self.samples.clear();
    }
}

/// Gateway-wide alarm rate: raises in the last 10 minutes and the flood state.
#[derive(Debug, Clone, Default)]
pub struct AlarmRate {
    raises: VecDeque<i64>,
    flood: bool,
    floods_started: u64,
}

/// The 10-minute window of the EEMUA flood definition.
pub const FLOOD_WINDOW_MS: i64 = 600_000;

/// A change of flood state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodChange {
    Started,
    Ended,
}

impl AlarmRate {
    /// Record one raise; returns a flood change if one happened.
    pub fn on_raise(
        &mut self,
        ts: Timestamp,
        start_above: u32,
        end_below: u32,
    ) -> Option<FloodChange> {
        self.raises.push_back(ts.0);
        self.update(ts, start_above, end_below)
    }

    /// Let time pass (drops old raises, may end a flood).
    pub fn update(
        &mut self,
        now: Timestamp,
        start_above: u32,
        end_below: u32,
    ) -> Option<FloodChange> {
        while let Some(&t) = self.raises.front() {
            if now.0 - t >= FLOOD_WINDOW_MS {
                self.raises.pop_front();
            } else {
                break;
            }
        }
        let n = self.raises.len();
        if !self.flood && n > start_above as usize {
            self.flood = true;
            self.floods_started += 1;
            Some(FloodChange::Started)
        } else if self.flood && n < end_below as usize {
            self.flood = false;
            Some(FloodChange::Ended)
        } else {
            None
        }
    }

    /// Raises within the last 10 minutes (as of the last update).
    pub fn per_10min(&self) -> u32 {
        u32::try_from(self.raises.len()).unwrap_or(u32::MAX)
    }

    pub fn in_flood(&self) -> bool {
        self.flood
    }

    pub fn floods_started(&self) -> u64 {
        self.floods_started
    }
}

/// Raise times of one point, to tell chattering (more than `count` raises within
/// `window_ms`).
#[derive(Debug, Clone, Default)]
pub struct Chatter {
    raises: VecDeque<i64>,
}

impl Chatter {
    /// Record one raise; returns whether the point is chattering now.
    pub fn on_raise(&mut self, ts: Timestamp, count: u32, window_ms: u64) -> bool {
        self.raises.push_back(ts.0);
        self.is_chattering(ts, count, window_ms)
    }

    /// Whether more than `count` raises happened within the window ending at `now`.
    pub fn is_chattering(&mut self, now: Timestamp, count: u32, window_ms: u64) -> bool {
        let window = i64::try_from(window_ms).unwrap_or(i64::MAX);
        while let Some(&t) = self.raises.front() {
            if now.0 - t >= window || self.raises.len() > count as usize + 1 {
                self.raises.pop_front();
            } else {
                break;
            }
        }
        self.raises.len() > count as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_needs_half_a_window_of_history() {
        let mut r = RateOfChange::default();
        let w = 600_000; // 10 min
        assert_eq!(r.push(Timestamp(0), 1.0, w), None);
        assert_eq!(r.push(Timestamp(60_000), 1.1, w), None);
        // 5 minutes in, rising 0.1 per minute = 6 per hour
        let rate = r.push(Timestamp(300_000), 1.5, w).unwrap_or(f64::NAN);
        assert!((rate - 6.0).abs() < 1e-9, "rate {rate}");
    }

    #[test]
    fn rate_memory_is_bounded_and_window_slides() {
        let mut r = RateOfChange::default();
        let w = 600_000;
        // one reading per second for an hour, flat then rising 1 unit per hour
        let mut last = None;
        for s in 0..3600i64 {
            let v = if s < 1800 {
                2.0
            } else {
                2.0 + (s - 1800) as f64 / 3600.0
            };
            last = r.push(Timestamp(s * 1000), v, w);
            assert!(r.samples.len() <= 18, "{} samples", r.samples.len());
        }
        let rate = last.unwrap_or(f64::NAN);
        assert!((rate - 1.0).abs() < 0.01, "rate {rate}");
    }

    #[test]
    fn flood_starts_above_ten_and_ends_below_five() {
        let mut a = AlarmRate::default();
        let mut changes = vec![];
        for i in 0..11 {
            if let Some(c) = a.on_raise(Timestamp(i * 1000), 10, 5) {
                changes.push((i, c));
            }
        }
        assert_eq!(changes, vec![(10, FloodChange::Started)]);
        assert!(a.in_flood());
        // 10 minutes after the 6th raise, raises 5..=10 (6) remain: still a flood
        assert_eq!(a.update(Timestamp(4_000 + FLOOD_WINDOW_MS), 10, 5), None);
        assert_eq!(a.per_10min(), 6);
        // one second later only 5 remain: not below 5 yet
        assert_eq!(a.update(Timestamp(5_000 + FLOOD_WINDOW_MS), 10, 5), None);
        assert_eq!(
            a.update(Timestamp(6_000 + FLOOD_WINDOW_MS), 10, 5),
            Some(FloodChange::Ended)
        );
        assert_eq!(a.per_10min(), 4);
    }

    #[test]
    fn chattering_is_more_than_count_in_window() {
        let mut c = Chatter::default();
        assert!(!c.on_raise(Timestamp(0), 3, 60_000));
        assert!(!c.on_raise(Timestamp(10_000), 3, 60_000));
        assert!(!c.on_raise(Timestamp(20_000), 3, 60_000));
        assert!(c.on_raise(Timestamp(30_000), 3, 60_000));
        assert!(!c.is_chattering(Timestamp(65_000), 3, 60_000));
    }
}
