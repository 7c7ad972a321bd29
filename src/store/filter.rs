//! Pure per-point state of the readings path: the store-on-change filter (deadband +
//! heartbeat) and the open 5-minute statistics bucket. No IO; time comes from readings.

use crate::model::{Quality, Reading};

/// Width of a statistics bucket: 5 minutes, in ms. Buckets start at multiples of it.
pub const BUCKET_MS: i64 = 300_000;

/// The start of the bucket holding `ts`.
pub fn bucket_of(ts: i64) -> i64 {
    ts.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// Statistics of one point over one bucket (good, finite values only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub start: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    /// Time of the (first) maximum.
    pub max_ts: i64,
}

impl Bucket {
    fn new(ts: i64, v: f64) -> Bucket {
        Bucket {
            start: bucket_of(ts),
            min: v,
            max: v,
            sum: v,
            count: 1,
            max_ts: ts,
        }
    }

    fn add(&mut self, ts: i64, v: f64) {
        self.min = self.min.min(v);
        if v > self.max {
            self.max = v;
            self.max_ts = ts;
        }
        self.sum += v;
        self.count += 1;
    }

    /// The average of the bucket's values.
    #[cfg(test)]
    pub fn average(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// The last stored reading of a point, for the change filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastStored {
    pub ts: i64,
    pub value: f64,
    pub quality: Quality,
}

/// Everything the readings path remembers about one point. `Copy`, so a batch can log
/// the old value and roll back when its transaction fails.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PointState {
    pub last: Option<LastStored>,
    pub bucket: Option<Bucket>,
}

/// The settings of the change filter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FilterRule {
    pub every: bool,
    pub deadband: f64,
    pub heartbeat_ms: i64,
}

/// What to do with one reading.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Step {
    /// Store the reading as a raw row.
    pub store: bool,
    /// A bucket to merge into `stats_5min` now (closed, or a late reading's own).
    pub emit: Option<Bucket>,
}

fn same_value(a: f64, b: f64, deadband: f64) -> bool {
    match (a.is_finite(), b.is_finite()) {
        (true, true) => (a - b).abs() <= deadband,
        (false, false) => a.is_nan() == b.is_nan() && (a.is_nan() || a == b),
        _ => false,
    }
}

impl PointState {
    /// Take one reading: decide whether to store it and advance the statistics.
    pub fn step(&mut self, r: &Reading, rule: FilterRule) -> Step {
        let ts = r.ts.0;
        let store = match self.last {
            _ if rule.every => true,
            None => true,
            Some(last) => {
                last.quality != r.quality
                    || !same_value(last.value, r.value, rule.deadband)
                    // An out-of-order reading is only kept when it differs (above).
                    || (ts.saturating_sub(last.ts) >= rule.heartbeat_ms && ts >= last.ts)
            }
        };
        if store && self.last.is_none_or(|l| ts >= l.ts) {
            self.last = Some(LastStored {
                ts,
                value: r.value,
                quality: r.quality,
            });
        }
        let mut emit = None;
        if r.quality.is_good() && r.value.is_finite() {
            let b = bucket_of(ts);
            match &mut self.bucket {
                Some(cur) if cur.start == b => cur.add(ts, r.value),
                Some(cur) if cur.start < b => {
                    emit = Some(*cur);
                    *cur = Bucket::new(ts, r.value);
                }
                Some(_) => emit = Some(Bucket::new(ts, r.value)),
                None => self.bucket = Some(Bucket::new(ts, r.value)),
            }
        }
        Step { store, emit }
    }

    /// Close the open bucket when it ended at or before `now`.
    pub fn close_before(&mut self, now: i64) -> Option<Bucket> {
        match self.bucket {
            Some(b) if b.start + BUCKET_MS <= now => self.bucket.take(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PointId, Timestamp};

    fn r(ts: i64, value: f64, quality: Quality) -> Reading {
        Reading {
            point: PointId(0),
            ts: Timestamp(ts),
            value,
            quality,
        }
    }

    const RULE: FilterRule = FilterRule {
        every: false,
        deadband: 0.125,
        heartbeat_ms: 60_000,
    };

    #[test]
    fn deadband_heartbeat_and_quality() {
        let mut s = PointState::default();
        assert!(s.step(&r(0, 1.0, Quality::Good), RULE).store);
        assert!(!s.step(&r(1_000, 1.0625, Quality::Good), RULE).store);
        assert!(
            !s.step(&r(2_000, 1.125, Quality::Good), RULE).store,
            "equal to the deadband is not beyond it"
        );
        assert!(s.step(&r(3_000, 1.25, Quality::Good), RULE).store);
        assert!(s.step(&r(4_000, 1.25, Quality::CommFail), RULE).store);
        assert!(s.step(&r(5_000, 1.25, Quality::Good), RULE).store);
        assert!(!s.step(&r(64_999, 1.25, Quality::Good), RULE).store);
        assert!(s.step(&r(65_000, 1.25, Quality::Good), RULE).store);
        assert!(s.step(&r(66_000, f64::NAN, Quality::BadData), RULE).store);
        assert!(!s.step(&r(67_000, f64::NAN, Quality::BadData), RULE).store);
    }

    #[test]
    fn buckets_close_and_late_readings_emit_their_own() {
        let mut s = PointState::default();
        s.step(&r(10, 1.0, Quality::Good), RULE);
        s.step(&r(20, 3.0, Quality::Good), RULE);
        s.step(&r(30, 2.0, Quality::Good), RULE);
        s.step(&r(40, 99.0, Quality::CommFail), RULE);
        let step = s.step(&r(BUCKET_MS + 5, 7.0, Quality::Good), RULE);
        let b = step.emit.unwrap();
        assert_eq!(
            (b.start, b.min, b.max, b.count, b.max_ts),
            (0, 1.0, 3.0, 3, 20)
        );
        assert_eq!(b.average(), 2.0);
        let late = s.step(&r(50, 5.0, Quality::Good), RULE).emit.unwrap();
        assert_eq!((late.start, late.count), (0, 1));
        assert_eq!(s.close_before(2 * BUCKET_MS - 1), None);
        assert_eq!(s.close_before(2 * BUCKET_MS).unwrap().start, BUCKET_MS);
    }
}
