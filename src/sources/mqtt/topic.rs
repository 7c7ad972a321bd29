//! Topic mapping (pure): which points a message feeds, and which filters to
//! subscribe.
//!
//! ## Rules
//!
//! Every topic below is the device's `topic_prefix` followed by what the point or
//! device names (the prefix is pasted as written: `plant/` + `h2s/TK-201`).
//!
//! - **Fixed**: a point with `mqtt.topic` reads exactly that topic. Several points
//!   may read one topic (each with its own `value_path`). Each distinct topic is one
//!   subscription.
//! - **Keyed** (device `point_topic`): one filter for the device, whose level
//!   `{point}` names the point. The level's text is looked up among the device's
//!   points that have no `mqtt.topic`, by `mqtt.key`, else by point id. Other levels
//!   may be `+`, and the last level may be `#` (any number of levels, also none). The
//!   subscription is the filter with `{point}` replaced by `+`.
//! - A fixed topic wins over the keyed filter. A message that matches neither, or
//!   whose `{point}` level names no point, is an *unknown topic*: counted and logged,
//!   no reading (there is no point to mark bad).

use super::decode::Fields;
use crate::model::PointId;
use std::collections::HashMap;

/// The placeholder level of a `point_topic`.
pub const POINT_LEVEL: &str = "{point}";

/// One point fed by a topic, and where its value is in the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub point: PointId,
    pub fields: Fields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`
    Any,
    /// `{point}`
    Point,
    /// `#`, last only.
    Rest,
}

/// The topic → points table of one device.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Router {
    fixed: HashMap<String, Vec<Target>>,
    pattern: Option<Vec<Level>>,
    keyed: HashMap<String, Vec<Target>>,
    filter: Option<String>,
}

/// Why a message has no point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// The topic matches no fixed topic and not the keyed filter.
    NoMatch,
    /// The keyed filter matched but its `{point}` level names no point.
    UnknownKey,
}

/// Check a `point_topic` (see the module docs); the message says what is wrong.
pub fn check_point_topic(filter: &str) -> Result<(), String> {
    parse_pattern(filter).map(|_| ())
}

fn parse_pattern(filter: &str) -> Result<Vec<Level>, String> {
    let levels: Vec<&str> = filter.split('/').collect();
    let mut out = Vec::with_capacity(levels.len());
    let mut points = 0;
    for (i, level) in levels.iter().enumerate() {
        out.push(match *level {
            "+" => Level::Any,
            "#" if i + 1 == levels.len() => Level::Rest,
            "#" => return Err(format!("`{filter}`: `#` may only be the last level")),
            POINT_LEVEL => {
                points += 1;
                Level::Point
            }
            other if other.contains(['+', '#', '{', '}']) => {
                return Err(format!(
                    "`{filter}`: level `{other}` mixes text with `+`, `#` or braces; wildcards and `{POINT_LEVEL}` must be whole levels"
                ))
            }
            other => Level::Exact(other.to_owned()),
        });
    }
    if points != 1 {
        return Err(format!(
            "`{filter}` must have exactly one level `{POINT_LEVEL}` naming the point, found {points}"
        ));
    }
    Ok(out)
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Route `topic` (full, prefix included) to `target`.
    pub fn add_fixed(&mut self, topic: String, target: Target) {
        self.fixed.entry(topic).or_default().push(target);
    }

    /// Set the keyed filter (full, prefix included).
    pub fn set_pattern(&mut self, filter: &str) -> Result<(), String> {
        self.pattern = Some(parse_pattern(filter)?);
        self.filter = Some(filter.replace(POINT_LEVEL, "+"));
        Ok(())
    }

    /// Route the `{point}` level text `key` to `target`.
    pub fn add_keyed(&mut self, key: String, target: Target) {
        self.keyed.entry(key).or_default().push(target);
    }

    /// The topic filters to subscribe, each once.
    pub fn filters(&self) -> Vec<String> {
        let mut out: Vec<String> = self.fixed.keys().cloned().collect();
        out.sort();
        out.extend(self.filter.iter().cloned());
        out
    }

    /// Every point this router can feed.
    pub fn points(&self) -> Vec<PointId> {
        let mut out: Vec<PointId> = self
            .fixed
            .values()
            .chain(self.keyed.values())
            .flatten()
            .map(|t| t.point)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The points a message on `topic` feeds.
    pub fn route(&self, topic: &str) -> Result<&[Target], Miss> {
        // Hashing the topic costs more than the rest of the match: skip it when no
        // point has a fixed topic.
        if !self.fixed.is_empty() {
            if let Some(targets) = self.fixed.get(topic) {
                return Ok(targets);
            }
        }
        let Some(pattern) = &self.pattern else {
            return Err(Miss::NoMatch);
        };
        let mut key = None;
        let mut levels = topic.split('/');
        for want in pattern {
            match want {
                Level::Rest => break,
                _ => {
                    let Some(level) = levels.next() else {
                        return Err(Miss::NoMatch);
                    };
                    match want {
                        Level::Exact(text) if text != level => return Err(Miss::NoMatch),
                        Level::Point => key = Some(level),
                        _ => {}
                    }
                }
            }
        }
        if !matches!(pattern.last(), Some(Level::Rest)) && levels.next().is_some() {
            return Err(Miss::NoMatch);
        }
        key.and_then(|k| self.keyed.get(k))
            .map(Vec::as_slice)
            .ok_or(Miss::UnknownKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(p: u32) -> Target {
        Target {
            point: PointId(p),
            fields: Fields::default(),
        }
    }

    fn points(r: Result<&[Target], Miss>) -> Result<Vec<u32>, Miss> {
        r.map(|ts| ts.iter().map(|t| t.point.0).collect())
    }

    #[test]
    fn fixed_and_keyed() {
        let mut r = Router::new();
        r.add_fixed("plant/h2s/TK-201".into(), target(0));
        r.add_fixed("plant/h2s/TK-201".into(), target(1));
        r.set_pattern("plant/+/{point}/data").unwrap();
        r.add_keyed("LEL-3".into(), target(2));
        assert_eq!(points(r.route("plant/h2s/TK-201")), Ok(vec![0, 1]));
        assert_eq!(points(r.route("plant/area7/LEL-3/data")), Ok(vec![2]));
        assert_eq!(
            points(r.route("plant/area7/LEL-4/data")),
            Err(Miss::UnknownKey)
        );
        assert_eq!(points(r.route("plant/area7/LEL-3")), Err(Miss::NoMatch));
        assert_eq!(
            points(r.route("plant/area7/LEL-3/data/x")),
            Err(Miss::NoMatch)
        );
        assert_eq!(
            points(r.route("other/area7/LEL-3/data")),
            Err(Miss::NoMatch)
        );
        assert_eq!(r.filters(), vec!["plant/h2s/TK-201", "plant/+/+/data"]);
        assert_eq!(r.points(), vec![PointId(0), PointId(1), PointId(2)]);
    }

    #[test]
    fn hash_matches_any_rest() {
        let mut r = Router::new();
        r.set_pattern("mine/{point}/#").unwrap();
        r.add_keyed("ch4_t1".into(), target(5));
        for t in ["mine/ch4_t1", "mine/ch4_t1/v", "mine/ch4_t1/a/b"] {
            assert_eq!(points(r.route(t)), Ok(vec![5]), "{t}");
        }
        assert_eq!(points(r.route("mine")), Err(Miss::NoMatch));
        assert_eq!(r.filters(), vec!["mine/+/#"]);
    }

    #[test]
    fn bad_patterns() {
        for p in [
            "a/b",
            "a/{point}/{point}",
            "a/#/{point}",
            "a/x+/{point}",
            "a/{point}x",
            "a/b{point}",
        ] {
            assert!(check_point_topic(p).is_err(), "{p}");
        }
        assert!(check_point_topic("{point}").is_ok());
        assert!(check_point_topic("+/{point}/#").is_ok());
    }
}
