//! Payload decoding (pure): bytes of one MQTT message → value, timestamp and quality
//! of each point the message feeds.
//!
//! ## Accepted payloads
//!
//! Checked in this order, each failure a [`DecodeError`] of its own kind:
//!
//! 1. At most `max_payload_bytes` long ([`DecodeError::TooLarge`]).
//! 2. UTF-8 ([`DecodeError::NotUtf8`]).
//! 3. After trimming white space, either
//!    - a **JSON object or array** (first character `{` or `[`), nested at most
//!      `max_json_depth` deep ([`DecodeError::TooDeep`], checked by a scan before any
//!      parsing, so a hostile payload costs one pass and no allocation), and valid
//!      JSON ([`DecodeError::Malformed`]); or
//!    - a **plain value**: a decimal number (`12.5`, `-3e2`) or `true`/`false`
//!      (1/0, for switches). Anything else is [`DecodeError::Malformed`].
//!
//! A plain payload is the value itself: no device timestamp, quality good.
//!
//! ## Fields of a JSON payload
//!
//! Paths are dotted (`data.v`); a level that is a number indexes an array
//! (`values.0`).
//!
//! - **value** (`value_path`): a finite number, `true`/`false` (1/0) or a text that
//!   holds a number (`"12.5"`). Missing, `null`, an object, an array, or text that is
//!   no number is [`DecodeError::WrongType`].
//! - **timestamp** (`ts_path`, optional): a number — milliseconds since the Unix
//!   epoch when ≥ 10^11, else seconds (fractions allowed) — or an RFC 3339 text
//!   (`2024-05-01T08:00:00.250+08:00`, `…Z`; a space may replace the `T`), or a text
//!   holding a number. Absent → the time of arrival. Present but unreadable, or not
//!   after the epoch → [`DecodeError::BadTimestamp`]: the message's time is unknown,
//!   so its value is not used (never re-dated to the arrival time).
//! - **quality** (`quality_path`, optional): good when absent, `true`, `0`, or the
//!   text `good`/`ok` (any case); anything else makes the reading `source_bad`, with
//!   the value the source sent (NaN when it sent none that reads as a number).
//!
//! A message that fails gives each of its points a reading with quality `bad_data`,
//! value NaN and the time of arrival — never a made-up value.

use crate::model::{Quality, Timestamp};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A parsed JSON payload, borrowing its keys and texts from the payload (a text is
/// copied only when it has escapes). Objects keep their members in order in a `Vec`:
/// payloads are small, so a linear search beats hashing, and parsing costs one
/// allocation per object or array instead of a map with owned keys per message.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(f64),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value::Number(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value::Number(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value<'de>, E> {
        Ok(Value::Number(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
        while let Some(k) = map.next_key::<Key<'de>>()? {
            members.push((k.0, map.next_value()?));
        }
        Ok(Value::Object(members))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Why a payload (or one point's part of it) could not be used. Each kind is counted
/// apart in [`MqttStats`](super::MqttStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("payload is not UTF-8")]
    NotUtf8,
    #[error("JSON nested deeper than the limit")]
    TooDeep,
    #[error("payload is neither a JSON object nor a plain number")]
    Malformed,
    #[error("value missing or not a number")]
    WrongType,
    #[error("timestamp unreadable")]
    BadTimestamp,
}

impl DecodeError {
    /// Short stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::TooLarge(_) => "too_large",
            DecodeError::NotUtf8 => "not_utf8",
            DecodeError::TooDeep => "too_deep",
            DecodeError::Malformed => "malformed",
            DecodeError::WrongType => "wrong_type",
            DecodeError::BadTimestamp => "bad_timestamp",
        }
    }
}

/// Bounds on one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_json_depth: u32,
}

/// A dotted path, split once at build time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub fn parse(dotted: &str) -> FieldPath {
        FieldPath(dotted.split('.').map(str::to_owned).collect())
    }

    fn lookup<'v, 'a>(&self, mut v: &'v Value<'a>) -> Option<&'v Value<'a>> {
        for level in &self.0 {
            v = match v {
                // The last of duplicate keys wins, as with serde_json's maps.
                Value::Object(members) => {
                    &members.iter().rev().find(|(k, _)| k == level.as_str())?.1
                }
                Value::Array(items) => items.get(level.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(v)
    }
}

/// Where one point's value, timestamp and quality are in a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    pub value: FieldPath,
    pub ts: Option<FieldPath>,
    pub quality: Option<FieldPath>,
}

impl Default for Fields {
    fn default() -> Self {
        Fields {
            value: FieldPath::parse("value"),
            ts: None,
            quality: None,
        }
    }
}

/// A payload that passed the checks common to all its points.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload<'a> {
    /// A bare number (or `true`/`false`).
    Plain(f64),
    /// A JSON object or array.
    Json(Value<'a>),
}

/// What one point gets from a message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: Timestamp,
    pub value: f64,
    pub quality: Quality,
}

/// Check and parse a payload (see the module docs).
pub fn parse(payload: &[u8], limits: Limits) -> Result<Payload<'_>, DecodeError> {
    if payload.len() > limits.max_payload_bytes {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
    let text = text.trim();
    match text.as_bytes().first() {
        Some(b'{' | b'[') => {
            if json_depth_exceeds(text.as_bytes(), limits.max_json_depth) {
                return Err(DecodeError::TooDeep);
            }
            serde_json::from_str::<Value<'_>>(text)
                .map(Payload::Json)
                .map_err(|_| DecodeError::Malformed)
        }
        _ => plain_number(text)
            .map(Payload::Plain)
            .ok_or(DecodeError::Malformed),
    }
}

/// Take one point's sample out of a parsed payload. `arrival` is the time the message
/// was received.
pub fn extract(
    payload: &Payload<'_>,
    fields: &Fields,
    arrival: Timestamp,
) -> Result<Sample, DecodeError> {
    let json = match payload {
        Payload::Plain(value) => {
            return Ok(Sample {
                ts: arrival,
                value: *value,
                quality: Quality::Good,
            })
        }
        Payload::Json(json) => json,
    };
    let ts = match fields.ts.as_ref().and_then(|p| p.lookup(json)) {
        None => arrival,
        Some(v) => timestamp(v).ok_or(DecodeError::BadTimestamp)?,
    };
    let value = fields.value.lookup(json).and_then(number);
    let good = fields
        .quality
        .as_ref()
        .and_then(|p| p.lookup(json))
        .is_none_or(quality_good);
    if !good {
        return Ok(Sample {
            ts,
            value: value.unwrap_or(f64::NAN),
            quality: Quality::SourceBad,
        });
    }
    let value = value.ok_or(DecodeError::WrongType)?;
    Ok(Sample {
        ts,
        value,
        quality: Quality::Good,
    })
}

/// Whether nesting of `{`/`[` outside strings goes deeper than `max`.
fn json_depth_exceeds(bytes: &[u8], max: u32) -> bool {
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A plain decimal number or `true`/`false`; NaN and infinities are not values.
fn plain_number(text: &str) -> Option<f64> {
    match text {
        "true" => return Some(1.0),
        "false" => return Some(0.0),
        _ => {}
    }
    // `f64::from_str` also takes `inf` and `NaN`; a sensor value must be finite and
    // written with digits.
    if !text
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

fn number(v: &Value<'_>) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n).filter(|v| v.is_finite()),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => plain_number(s.trim()),
        _ => None,
    }
}

fn quality_good(v: &Value<'_>) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => *n == 0.0,
        Value::String(s) => s.eq_ignore_ascii_case("good") || s.eq_ignore_ascii_case("ok"),
        Value::Null => true,
        _ => false,
    }
}

/// Milliseconds at or above this are milliseconds; below, seconds (10^11 ms is
/// 1973-03-03, 10^11 s is the year 5138).
const MS_THRESHOLD: f64 = 1e11;

fn timestamp(v: &Value<'_>) -> Option<Timestamp> {
    let n = match v {
        Value::Number(n) => *n,
        Value::String(s) => {
            let s = s.trim();
            match plain_number(s) {
                Some(n) => n,
                None => return rfc3339_ms(s).filter(|ms| *ms > 0).map(Timestamp),
            }
        }
        _ => return None,
    };
    if !n.is_finite() || n <= 0.0 {
        return None;
    }
    let ms = if n >= MS_THRESHOLD { n } else { n * 1000.0 };
    if ms >= i64::MAX as f64 {
        return None;
    }
    Some(Timestamp(ms.round() as i64))
}

/// Milliseconds since the epoch of an RFC 3339 date-time, e.g.
/// `2024-05-01T08:00:00.250+08:00` or `2024-05-01 00:00:00Z`.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(sep(4, b'-') && sep(7, b'-') && sep(13, b':') && sep(16, b':')) {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if sep(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // Milliseconds: the first three digits, padded.
        let mut scale = 100;
        for d in &b[start..(start + 3).min(i)] {
            frac_ms += i64::from(d - b'0') * scale;
            scale /= 10;
        }
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && sep(i + 3, b':') => {
            let h = digits(i + 1..i + 3)?;
            let m = digits(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 60 + m;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_payload_bytes: 1024,
        max_json_depth: 4,
    };
    const ARRIVAL: Timestamp = Timestamp(1_700_000_000_000);

    fn fields(value: &str, ts: Option<&str>, quality: Option<&str>) -> Fields {
        Fields {
            value: FieldPath::parse(value),
            ts: ts.map(FieldPath::parse),
            quality: quality.map(FieldPath::parse),
        }
    }

    fn decode(payload: &str, f: &Fields) -> Result<Sample, DecodeError> {
        extract(&parse(payload.as_bytes(), LIMITS)?, f, ARRIVAL)
    }

    #[test]
    fn plain_numbers_and_booleans() {
        let f = Fields::default();
        for (text, want) in [
            ("12.5", 12.5),
            (" -3e2\n", -300.0),
            ("true", 1.0),
            ("false", 0.0),
            ("0", 0.0),
        ] {
            let s = decode(text, &f).unwrap();
            assert_eq!(
                (s.value, s.quality, s.ts),
                (want, Quality::Good, ARRIVAL),
                "{text}"
            );
        }
        for text in ["", "abc", "NaN", "inf", "1.2.3", "\"12\"", "null", "12 13"] {
            assert_eq!(decode(text, &f), Err(DecodeError::Malformed), "{text:?}");
        }
    }

    #[test]
    fn json_paths_timestamps_and_quality() {
        let f = fields("data.v", Some("data.ts"), Some("data.q"));
        let s = decode(r#"{"data":{"v":0.82,"ts":1714521600250,"q":"good"}}"#, &f).unwrap();
        assert_eq!(
            s,
            Sample {
                ts: Timestamp(1_714_521_600_250),
                value: 0.82,
                quality: Quality::Good
            }
        );
        // Seconds, fractional seconds, RFC 3339 with offset, numeric text.
        for (ts, want) in [
            ("1714521600", 1_714_521_600_000),
            ("1714521600.25", 1_714_521_600_250),
            (r#""2024-05-01T08:00:00.250+08:00""#, 1_714_521_600_250),
            (r#""2024-05-01 00:00:00Z""#, 1_714_521_600_000),
            (r#""1714521600250""#, 1_714_521_600_250),
        ] {
            let s = decode(&format!(r#"{{"data":{{"v":1,"ts":{ts}}}}}"#), &f).unwrap();
            assert_eq!(s.ts, Timestamp(want), "{ts}");
        }
        // No timestamp in the message: time of arrival.
        assert_eq!(decode(r#"{"data":{"v":1}}"#, &f).unwrap().ts, ARRIVAL);
        // An unreadable one: the value is not used.
        for ts in [
            r#""yesterday""#,
            "-5",
            "0",
            "{}",
            r#""2024-13-01T00:00:00Z""#,
        ] {
            let p = format!(r#"{{"data":{{"v":1,"ts":{ts}}}}}"#);
            assert_eq!(decode(&p, &f), Err(DecodeError::BadTimestamp), "{ts}");
        }
        // Quality flags.
        for (q, good) in [
            ("true", true),
            ("0", true),
            (r#""OK""#, true),
            ("false", false),
            ("3", false),
            (r#""bad""#, false),
            (r#""out_of_range""#, false),
        ] {
            let s = decode(&format!(r#"{{"data":{{"v":2.5,"q":{q}}}}}"#), &f).unwrap();
            let want = if good {
                Quality::Good
            } else {
                Quality::SourceBad
            };
            assert_eq!((s.quality, s.value), (want, 2.5), "{q}");
        }
        // The source says bad and sends no number: NaN, still source_bad.
        let s = decode(r#"{"data":{"v":null,"q":"bad"}}"#, &f).unwrap();
        assert!(s.value.is_nan() && s.quality == Quality::SourceBad);
        // Array index in a path.
        let f = fields("values.1", None, None);
        assert_eq!(decode(r#"{"values":[1,2,3]}"#, &f).unwrap().value, 2.0);
    }

    #[test]
    fn wrong_types() {
        let f = Fields::default();
        for p in [
            r#"{"value":null}"#,
            r#"{"value":{}}"#,
            r#"{"value":[1]}"#,
            r#"{"value":"high"}"#,
            r#"{"other":1}"#,
            "[1,2]",
        ] {
            assert_eq!(decode(p, &f), Err(DecodeError::WrongType), "{p}");
        }
        assert_eq!(decode(r#"{"value":"12.5"}"#, &f).unwrap().value, 12.5);
        assert_eq!(decode(r#"{"value":true}"#, &f).unwrap().value, 1.0);
    }

    #[test]
    fn bounds() {
        let f = Fields::default();
        let big = format!(r#"{{"value":1,"pad":"{}"}}"#, "x".repeat(2000));
        assert!(matches!(decode(&big, &f), Err(DecodeError::TooLarge(n)) if n == big.len()));
        assert_eq!(parse(b"\xff\xfe1", LIMITS), Err(DecodeError::NotUtf8));
        assert_eq!(
            parse(b"{\"value\":1.5,\"s\":\"caf\xc3\"}", LIMITS),
            Err(DecodeError::NotUtf8)
        );
        // Depth 4 passes, 5 does not; brackets inside strings do not count.
        assert!(parse(br#"{"a":{"b":{"c":[1]}},"value":1}"#, LIMITS).is_ok());
        assert_eq!(
            parse(br#"{"a":{"b":{"c":[[1]]}}}"#, LIMITS),
            Err(DecodeError::TooDeep)
        );
        assert!(parse(br#"{"value":1,"s":"[[[[[[{{{{\"]]"}"#, LIMITS).is_ok());
        let deep = "[".repeat(100_000);
        assert_eq!(
            parse(
                deep.as_bytes(),
                Limits {
                    max_payload_bytes: 1 << 20,
                    max_json_depth: 16
                }
            ),
            Err(DecodeError::TooDeep)
        );
        assert_eq!(parse(br#"{"value":1"#, LIMITS), Err(DecodeError::Malformed));
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("2000-02-29T12:00:00.5Z"), Some(951_825_600_500));
        assert_eq!(rfc3339_ms("2001-02-29T12:00:00Z"), None);
        assert_eq!(
            rfc3339_ms("2024-05-01T08:00:00-01:30"),
            Some(1_714_555_800_000)
        );
        assert_eq!(rfc3339_ms("2024-05-01T08:00:00"), None);
        assert_eq!(rfc3339_ms("2024-05-01T08:00:00.Z"), None);
    }
}
