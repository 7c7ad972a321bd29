//! Signal generators, pure: the value of every signal is a function of scenario
//! time and the seed only, so two runs with the same seed and the same clock serve
//! the same values, whatever order or rate they are read at.
//!
//! `value(t) = overlay(clamp(profile(t) + noise(t)))` where `profile` interpolates the
//! keyframes linearly, `noise` is a Gaussian sample that holds for `noise_period_ms`
//! (drawn from a counter-based generator keyed by seed, signal id and period index),
//! `clamp` keeps the value inside the sensor range, and the fault overlays (stuck,
//! out of range) replace the value inside their time windows.

use std::collections::HashMap;

use crate::scenario::{in_window, SignalFault, SignalSpec};

/// SplitMix64 finaliser: a good 64-bit mix, used as a counter-based generator.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a of a string, to key a signal's noise by its id (stable when other
/// signals are added or reordered).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn unit_interval(x: u64) -> f64 {
    // 53 random bits in (0, 1].
    ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// A standard normal sample determined by `key` and `tick`.
fn gaussian(key: u64, tick: i64) -> f64 {
    let a = splitmix64(key ^ splitmix64(tick as u64));
    let b = splitmix64(a);
    let (u1, u2) = (unit_interval(a), unit_interval(b));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Linear interpolation over keyframes (`[t_s, value]`, time increasing).
pub fn profile(keyframes: &[[f64; 2]], looped: bool, t: f64) -> f64 {
    let (Some(first), Some(last)) = (keyframes.first(), keyframes.last()) else {
        return 0.0;
    };
    let t = if looped && last[0] > 0.0 {
        t.rem_euclid(last[0])
    } else {
        t
    };
    if t <= first[0] {
        return first[1];
    }
    if t >= last[0] {
        return last[1];
    }
    let i = keyframes.partition_point(|k| k[0] <= t);
    let (a, b) = (keyframes[i - 1], keyframes[i]);
    a[1] + (b[1] - a[1]) * (t - a[0]) / (b[0] - a[0])
}

/// The signals of a scenario, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Signals {
    specs: Vec<SignalSpec>,
    keys: Vec<u64>,
    index: HashMap<String, usize>,
}

impl Signals {
    /// Build from the scenario's signals and a seed.
    pub fn new(specs: &[SignalSpec], seed: u64) -> Signals {
        let keys = specs
            .iter()
            .map(|s| splitmix64(seed ^ fnv1a(&s.id)))
            .collect();
        let index = specs
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        Signals {
            specs: specs.to_vec(),
            keys,
            index,
        }
    }

    /// Index of a signal by id.
    pub fn index(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// The spec of signal `i`.
    pub fn spec(&self, i: usize) -> Option<&SignalSpec> {
        self.specs.get(i)
    }

    /// Profile plus noise, clamped to the sensor range, without fault overlays.
    pub fn clean_value(&self, i: usize, t: f64) -> f64 {
        let Some(s) = self.specs.get(i) else {
            return f64::NAN;
        };
        let mut v = profile(&s.keyframes, s.looped, t);
        if s.noise_std > 0.0 {
            let tick = (t * 1000.0 / s.noise_period_ms as f64).floor() as i64;
            v += s.noise_std * gaussian(self.keys[i], tick);
        }
        if let Some(lo) = s.range_min {
            v = v.max(lo);
        }
        if let Some(hi) = s.range_max {
            v = v.min(hi);
        }
        v
    }

    /// The value of signal `i` at scenario time `t` (seconds), faults applied.
    pub fn value(&self, i: usize, t: f64) -> f64 {
        let Some(s) = self.specs.get(i) else {
            return f64::NAN;
        };
        let mut v = self.clean_value(i, t);
        for f in &s.faults {
            match *f {
                SignalFault::Stuck { from_s, to_s } if in_window(t, from_s, to_s) => {
                    v = self.clean_value(i, from_s);
                }
                SignalFault::OutOfRange {
                    from_s,
                    to_s,
                    value,
                } if in_window(t, from_s, to_s) => {
                    v = value;
                }
                _ => {}
            }
        }
        v
    }

    /// Names of the fault overlays active on signal `i` at `t`.
    pub fn active_faults(&self, i: usize, t: f64) -> Vec<&'static str> {
        let Some(s) = self.specs.get(i) else {
            return Vec::new();
        };
        s.faults
            .iter()
            .filter_map(|f| match *f {
                SignalFault::Stuck { from_s, to_s } if in_window(t, from_s, to_s) => Some("stuck"),
                SignalFault::OutOfRange { from_s, to_s, .. } if in_window(t, from_s, to_s) => {
                    Some("out_of_range")
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(noise: f64) -> SignalSpec {
        SignalSpec {
            id: "ch4".into(),
            unit: "%CH4".into(),
            keyframes: vec![[0.0, 0.3], [100.0, 1.3], [200.0, 0.3]],
            looped: false,
            noise_std: noise,
            noise_period_ms: 1000,
            range_min: Some(0.0),
            range_max: Some(4.0),
            faults: vec![],
        }
    }

    #[test]
    fn interpolates_and_holds() {
        let k = [[10.0, 1.0], [20.0, 3.0]];
        assert_eq!(profile(&k, false, 0.0), 1.0);
        assert_eq!(profile(&k, false, 15.0), 2.0);
        assert_eq!(profile(&k, false, 99.0), 3.0);
        assert_eq!(profile(&[[0.0, 0.0], [10.0, 10.0]], true, 25.0), 5.0);
    }

    #[test]
    fn noise_is_deterministic_per_seed() {
        let a = Signals::new(&[spec(0.05)], 7);
        let b = Signals::new(&[spec(0.05)], 7);
        let c = Signals::new(&[spec(0.05)], 8);
        let va: Vec<f64> = (0..50).map(|t| a.value(0, f64::from(t) * 1.7)).collect();
        let vb: Vec<f64> = (0..50)
            .rev()
            .map(|t| b.value(0, f64::from(t) * 1.7))
            .collect();
        let vc: Vec<f64> = (0..50).map(|t| c.value(0, f64::from(t) * 1.7)).collect();
        assert_eq!(va, vb.into_iter().rev().collect::<Vec<_>>());
        assert_ne!(va, vc);
        // Noise is noise: mean close to the profile, spread close to noise_std.
        let errs: Vec<f64> = (0..2000)
            .map(|t| a.value(0, 1000.0 + f64::from(t)) - 0.3)
            .collect();
        let mean = errs.iter().sum::<f64>() / errs.len() as f64;
        let var = errs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / errs.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var.sqrt() - 0.05).abs() < 0.01, "{}", var.sqrt());
    }

    #[test]
    fn faults_overlay() {
        let mut s = spec(0.0);
        s.faults = vec![
            SignalFault::Stuck {
                from_s: 50.0,
                to_s: Some(60.0),
            },
            SignalFault::OutOfRange {
                from_s: 150.0,
                to_s: None,
                value: -1.0,
            },
        ];
        let sig = Signals::new(&[s], 1);
        assert!((sig.value(0, 55.0) - 0.8).abs() < 1e-9);
        assert!((sig.value(0, 59.9) - 0.8).abs() < 1e-9);
        assert!((sig.value(0, 60.0) - 0.9).abs() < 1e-9);
        assert_eq!(sig.value(0, 150.0), -1.0);
        assert_eq!(sig.active_faults(0, 55.0), vec!["stuck"]);
        assert!(sig.active_faults(0, 70.0).is_empty());
    }
}
