//! Scenario files: what a simulated site contains and how it behaves over time.
//!
//! A scenario is a TOML document with four parts:
//! - top-level keys (`name`, `description`, `seed`, `start_s`);
//! - `[[signals]]`: keyframe profiles (scenario time → value, linear interpolation),
//!   seeded noise and fault overlays (stuck, out of range);
//! - `[[devices]]`: Modbus devices with their register map (`[[devices.points]]`),
//!   power-cut relays, exception rules, offline windows and response delay;
//! - `[mqtt]`: sensors published by the MQTT publisher.
//!
//! Loading collects **every** error before giving up: syntax errors (with line and
//! column), then each section and each array entry is deserialized on its own (so
//! one bad device does not hide the next one), then semantic checks run over the
//! whole scenario (unknown signal references, overlapping registers, …). Each error
//! carries its key path (`devices[1].points[0].type`) and, where known, line/column.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::codec::{DataType, WordOrder};
use crate::pdu::Table;

/// A whole scenario, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name of the scenario, shown in the status surface.
    pub name: String,
    /// What the scenario plays, for people.
    #[serde(default)]
    pub description: String,
    /// Default seed of the noise generators (overridable from the command line).
    #[serde(default)]
    pub seed: u64,
    /// Scenario time at which the clock starts, in seconds.
    #[serde(default)]
    pub start_s: f64,
    /// Signal generators referenced by device points and MQTT sensors.
    #[serde(default)]
    pub signals: Vec<SignalSpec>,
    /// Modbus devices served by the farm.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// Sensors published by the MQTT publisher.
    #[serde(default)]
    pub mqtt: Option<MqttSpec>,
}

/// The top-level keys only (the arrays are deserialized entry by entry).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    start_s: f64,
}

/// One signal generator: `value(t) = fault(clamp(profile(t) + noise(t)))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalSpec {
    /// Unique id, referenced by points (`signal = "…"`).
    pub id: String,
    /// Engineering unit, for people (`%CH4`, `m`, `MPa`, `%LEL`, `ppm`).
    #[serde(default)]
    pub unit: String,
    /// Profile as `[time_s, value]` pairs, time strictly increasing. Before the first
    /// keyframe the first value holds; after the last one the last value holds,
    /// unless `loop` is set.
    pub keyframes: Vec<[f64; 2]>,
    /// Repeat the profile with the period of its last keyframe time.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    /// Standard deviation of the Gaussian noise added to the profile, in the signal's unit.
    #[serde(default)]
    pub noise_std: f64,
    /// How long one noise sample holds, in milliseconds of scenario time.
    #[serde(default = "default_noise_period_ms")]
    pub noise_period_ms: u64,
    /// Lower end of the sensor range; noisy values are clamped to it.
    #[serde(default)]
    pub range_min: Option<f64>,
    /// Upper end of the sensor range; noisy values are clamped to it.
    #[serde(default)]
    pub range_max: Option<f64>,
    /// Fault overlays, applied in order.
    #[serde(default)]
    pub faults: Vec<SignalFault>,
}

fn default_noise_period_ms() -> u64 {
    1000
}

/// A fault overlay on a signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SignalFault {
    /// The sensor freezes at the value it had at `from_s` (a flat line).
    Stuck {
        /// Start of the fault, scenario seconds.
        from_s: f64,
        /// End of the fault, scenario seconds (absent: never ends).
        #[serde(default)]
        to_s: Option<f64>,
    },
    /// The sensor reports a value outside its range (a broken sensor).
    OutOfRange {
        /// Start of the fault, scenario seconds.
        from_s: f64,
        /// End of the fault, scenario seconds (absent: never ends).
        #[serde(default)]
        to_s: Option<f64>,
        /// The value reported during the fault, in the signal's unit.
        value: f64,
    },
}

/// Modbus framing on a TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// Modbus TCP (MBAP header).
    #[default]
    Tcp,
    /// RTU frames (unit, PDU, CRC-16) over a TCP socket, as serial device servers do.
    RtuOverTcp,
}

/// What a read of an address with nothing mapped returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmappedPolicy {
    /// Exception 02 (illegal data address), as most PLCs do.
    #[default]
    Exception,
    /// Zero (and writes are accepted and remembered).
    Zero,
}

/// How a device is offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineMode {
    /// The port is closed: connections are refused (on a shared endpoint, other unit
    /// ids keep working and this unit answers exception 0B, like a serial gateway).
    Refuse,
    /// Connections are accepted but requests are never answered.
    Silent,
}

/// A window of scenario time during which a device is offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineWindow {
    /// Start, scenario seconds.
    pub from_s: f64,
    /// End, scenario seconds (absent: never comes back).
    #[serde(default)]
    pub to_s: Option<f64>,
    /// Refused or silent.
    pub mode: OfflineMode,
}

/// Answer matching requests with an exception.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionRule {
    /// Exception code: 1, 2, 3, 4, 5, 6, 10 or 11.
    pub code: u8,
    /// Only requests on this table (absent: any table).
    #[serde(default)]
    pub table: Option<Table>,
    /// Only this function code (absent: any).
    #[serde(default)]
    pub function: Option<u8>,
    /// First address of the range.
    #[serde(default)]
    pub start: u16,
    /// Number of addresses in the range (default: all 65536).
    #[serde(default = "default_rule_count")]
    pub count: u32,
    /// Start, scenario seconds (absent: from the beginning).
    #[serde(default)]
    pub from_s: Option<f64>,
    /// End, scenario seconds (absent: forever).
    #[serde(default)]
    pub to_s: Option<f64>,
}

fn default_rule_count() -> u32 {
    65536
}

/// One Modbus device (one unit id on one endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    /// Unique id, shown in the status surface.
    pub id: String,
    /// Modbus unit id (slave address), 1–247 (0 accepted for TCP-only devices).
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// Devices with the same endpoint share one listener and are told apart by unit
    /// id, as behind a serial device server. Default: the device's own id.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// TCP port of the endpoint; 0 = a free port chosen at start.
    #[serde(default)]
    pub port: u16,
    /// Framing of the endpoint (all devices of one endpoint must agree).
    #[serde(default)]
    pub framing: Framing,
    /// Every answer is delayed by this long, in real milliseconds (a slow device).
    #[serde(default)]
    pub response_delay_ms: u64,
    /// What reading an unmapped address does.
    #[serde(default)]
    pub unmapped: UnmappedPolicy,
    /// Windows of scenario time during which the device is offline.
    #[serde(default)]
    pub offline: Vec<OfflineWindow>,
    /// Exception answers on demand.
    #[serde(default)]
    pub exceptions: Vec<ExceptionRule>,
    /// The register map.
    #[serde(default)]
    pub points: Vec<PointSpec>,
    /// Power-cut relays with feed-status (馈电) feedback.
    #[serde(default)]
    pub relays: Vec<RelaySpec>,
}

fn default_unit_id() -> u8 {
    1
}

impl DeviceSpec {
    /// The endpoint this device is served on.
    pub fn endpoint_name(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(&self.id)
    }
}

/// One mapped value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointSpec {
    /// Point id, unique in the device (shown in status, used in MQTT topics).
    pub id: String,
    /// Table: `coil`, `discrete`, `holding` or `input`.
    pub table: Table,
    /// First address (0-based protocol address).
    pub address: u16,
    /// Data type; default `bool` on bit tables and `u16` on register tables.
    #[serde(default, rename = "type")]
    pub data_type: Option<DataType>,
    /// Byte/word order of multi-register values.
    #[serde(default)]
    pub order: WordOrder,
    /// Integers carry `round(value * scale)`; floats carry `value * scale`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Signal that drives the value (exactly one of `signal` and `value`).
    #[serde(default)]
    pub signal: Option<String>,
    /// Constant value (exactly one of `signal` and `value`).
    #[serde(default)]
    pub value: Option<f64>,
}

fn default_scale() -> f64 {
    1.0
}

impl PointSpec {
    /// Resolved data type.
    pub fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.table.is_bits() {
            DataType::Bool
        } else {
            DataType::U16
        })
    }
}

/// A power-cut relay: writing its coil ON cuts the feed; the feed-status discrete
/// input follows after a delay (or never, if faulty).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySpec {
    /// Relay id, shown in status.
    pub id: String,
    /// Coil address: ON = cut power, OFF = restore.
    pub coil: u16,
    /// Discrete-input address of the feed status: 1 = powered, 0 = cut.
    pub feed_input: u16,
    /// Delay from the coil going ON to the feed dropping, scenario milliseconds.
    #[serde(default = "default_cut_delay_ms")]
    pub cut_delay_ms: u64,
    /// Delay from the coil going OFF to the feed returning, scenario milliseconds.
    #[serde(default)]
    pub restore_delay_ms: u64,
    /// A faulty relay: the coil is accepted but the feed never drops.
    #[serde(default)]
    pub faulty: bool,
}

fn default_cut_delay_ms() -> u64 {
    500
}

/// MQTT payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// `{"value":1.23,"ts":1700000000000,"quality":"good"}` (ts in Unix milliseconds).
    #[default]
    Json,
    /// The number alone, e.g. `1.23`.
    Plain,
}

/// Sensors published over MQTT.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSpec {
    /// Topic template; `{device}` and `{point}` are replaced.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Payload encoding.
    #[serde(default)]
    pub payload: PayloadFormat,
    /// QoS 0 or 1.
    #[serde(default)]
    pub qos: u8,
    /// Publish the retained flag.
    #[serde(default)]
    pub retain: bool,
    /// Real milliseconds between two publish rounds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// The published sensors.
    #[serde(default)]
    pub sensors: Vec<MqttSensor>,
}

fn default_topic() -> String {
    "site/{device}/{point}".to_owned()
}

fn default_interval_ms() -> u64 {
    1000
}

/// One published sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSensor {
    /// `{device}` in the topic.
    pub device: String,
    /// `{point}` in the topic.
    pub point: String,
    /// Signal that drives the value.
    pub signal: String,
    /// Digits after the decimal point in the payload.
    #[serde(default = "default_decimals")]
    pub decimals: u8,
    /// Windows of scenario time during which the sensor publishes nothing.
    #[serde(default)]
    pub offline: Vec<SilentWindow>,
}

fn default_decimals() -> u8 {
    3
}

/// A window of scenario time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilentWindow {
    /// Start, scenario seconds.
    pub from_s: f64,
    /// End, scenario seconds (absent: forever).
    #[serde(default)]
    pub to_s: Option<f64>,
}

/// Whether `t` lies in `[from, to)`.
pub fn in_window(t: f64, from_s: f64, to_s: Option<f64>) -> bool {
    t >= from_s && to_s.is_none_or(|to| t < to)
}

/// One problem in a scenario file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioIssue {
    /// Key path, e.g. `devices[1].points[0].type` (empty for syntax errors).
    pub path: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// 1-based column, where known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Errors of loading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid scenario; every issue found is listed.
    #[error("invalid scenario ({} error(s)):\n{}", .0.len(), join_issues(.0))]
    Invalid(Vec<ScenarioIssue>),
}

fn join_issues(issues: &[ScenarioIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Scenario {
    /// Read and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text)
    }

    /// Validate a scenario built in code (the same checks as loading a file; places
    /// are key paths and lines of the scenario rendered as TOML).
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let text = toml::to_string(self).map_err(|e| {
            ScenarioError::Invalid(vec![ScenarioIssue {
                path: String::new(),
                line: None,
                column: None,
                message: format!("cannot be written as TOML: {e}"),
            }])
        })?;
        Scenario::parse(&text).map(|_| ())
    }

    /// Parse and validate scenario text, collecting every issue.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let mut p = Parser {
            text,
            issues: Vec::new(),
            spans: Vec::new(),
            removed: Vec::new(),
        };
        let (root, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            for e in syntax {
                p.toml_issue(String::new(), &e);
            }
            return Err(ScenarioError::Invalid(p.issues));
        }
        let root_span = root.span();
        let mut root = root.into_inner();
        let signals_v = remove_key(&mut root, "signals");
        let devices_v = remove_key(&mut root, "devices");
        let mqtt_v = remove_key(&mut root, "mqtt");

        let header: Option<Header> =
            p.deserialize("", Spanned::new(root_span, DeValue::Table(root)));
        let (signal_idx, signals) = p.array::<SignalSpec>("signals", signals_v);
        let (device_idx, devices) = p.array::<DeviceSpec>("devices", devices_v);
        if let Some(v) = &mqtt_v {
            p.record_spans("mqtt", v);
        }
        let mqtt: Option<MqttSpec> = mqtt_v.and_then(|v| p.deserialize("mqtt", v));

        // Semantic checks run on whatever deserialized, so one report lists both
        // kinds of errors.
        let header_ok = header.is_some();
        let h = header.unwrap_or(Header {
            name: String::new(),
            description: String::new(),
            seed: 0,
            start_s: 0.0,
        });
        let scenario = Scenario {
            name: h.name,
            description: h.description,
            seed: h.seed,
            start_s: h.start_s,
            signals,
            devices,
            mqtt,
        };
        p.check(&scenario, &signal_idx, &device_idx);
        if header_ok && p.issues.is_empty() {
            Ok(scenario)
        } else {
            p.issues
                .sort_by_key(|i| (i.line.unwrap_or(usize::MAX), i.column));
            Err(ScenarioError::Invalid(p.issues))
        }
    }
}

fn remove_key<'i>(table: &mut DeTable<'i>, key: &str) -> Option<Spanned<DeValue<'i>>> {
    let k = table.keys().find(|k| k.get_ref().as_ref() == key)?.clone();
    table.remove(&k)
}

/// Remove the key named by the last map segment of `segments` (array indexes in
/// between are followed). Returns false if nothing could be removed.
fn remove_path(value: &mut Spanned<DeValue<'_>>, segments: &[String]) -> bool {
    let Some(last_key) = segments
        .iter()
        .rposition(|s| !s.starts_with('[') && !s.is_empty())
    else {
        return false;
    };
    let mut cur = value;
    for seg in &segments[..last_key] {
        let next = match cur.get_mut() {
            DeValue::Table(t) => t
                .iter_mut()
                .find(|(k, _)| k.get_ref().as_ref() == seg.as_str())
                .map(|(_, v)| v),
            DeValue::Array(a) => seg
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match cur.get_mut() {
        DeValue::Table(t) => remove_key(t, &segments[last_key]).is_some(),
        _ => false,
    }
}

struct Parser<'t> {
    text: &'t str,
    issues: Vec<ScenarioIssue>,
    /// Key path → span of entries and their nested arrays, for semantic errors.
    spans: Vec<(String, Range<usize>)>,
    /// Key paths removed after a deserialization error.
    removed: Vec<String>,
}

impl Parser<'_> {
    /// Remember where `path` and everything inside it are.
    fn record_spans(&mut self, path: &str, value: &Spanned<DeValue<'_>>) {
        self.spans.push((path.to_owned(), value.span()));
        match value.get_ref() {
            DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    self.record_spans(&format!("{path}.{}", k.get_ref()), v);
                }
            }
            DeValue::Array(items) => {
                for (j, item) in items.iter().enumerate() {
                    self.record_spans(&format!("{path}[{j}]"), item);
                }
            }
            _ => {}
        }
    }

    /// An issue found by the semantic checks: placed at the longest recorded path
    /// that is a prefix of `path`.
    fn push_at(&mut self, path: String, message: String) {
        let is_prefix = |p: &str, of: &str| {
            of.starts_with(p)
                && matches!(of.as_bytes().get(p.len()), None | Some(b'.') | Some(b'['))
        };
        let follows_removal = self.removed.iter().any(|r| {
            is_prefix(r, &path) || r.rsplit_once('.').is_some_and(|(parent, _)| parent == path)
        });
        if follows_removal {
            return;
        }
        let span = self
            .spans
            .iter()
            .filter(|(p, _)| {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'.') | Some(b'['))
            })
            .max_by_key(|(p, _)| p.len())
            .map(|(_, s)| s.clone());
        self.push(path, span, message);
    }
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before
            .rfind('\n')
            .map_or(before.len(), |i| before.len() - i - 1)
            + 1;
        (line, col)
    }

    fn push(&mut self, path: String, span: Option<Range<usize>>, message: String) {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = self.line_col(s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        self.issues.push(ScenarioIssue {
            path,
            line,
            column,
            message,
        });
    }

    fn toml_issue(&mut self, path: String, e: &toml::de::Error) {
        self.push(path, e.span(), e.message().trim().to_owned());
    }

    /// Deserialize `value`, reporting every error: after an error at a key, the key
    /// is removed and deserialization retried, until it succeeds or an error cannot
    /// be pinned on a key (a missing field). The value without the removed keys is
    /// returned so the semantic checks still look at the rest of the entry; they stay
    /// quiet about removed keys and their direct parents.
    fn deserialize<T: DeserializeOwned>(
        &mut self,
        prefix: &str,
        value: Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let span = value.span();
        let mut work = value;
        let mut removed_here: Vec<String> = Vec::new();
        for _ in 0..64 {
            let de = ValueDeserializer::from(work.clone());
            match serde_path_to_error::deserialize::<_, T>(de) {
                Ok(v) => return Some(v),
                Err(e) => {
                    let segments: Vec<String> = e
                        .path()
                        .iter()
                        .map(|seg| match seg {
                            serde_path_to_error::Segment::Map { key } => key.clone(),
                            serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
                            _ => String::new(),
                        })
                        .collect();
                    let inner = e.path().to_string();
                    let path = match (prefix.is_empty(), inner == ".") {
                        (true, true) => String::new(),
                        (true, false) => inner,
                        (false, true) => prefix.to_owned(),
                        (false, false) => format!("{prefix}.{inner}"),
                    };
                    let err = e.into_inner();
                    let message = err.message().trim().to_owned();
                    // A required key removed after its own error is not news.
                    if removed_here
                        .iter()
                        .any(|k| message.contains(&format!("missing field `{k}`")))
                    {
                        return None;
                    }
                    let at = err.span().or(Some(span.clone()));
                    self.push(path.clone(), at, message);
                    if !remove_path(&mut work, &segments) {
                        return None;
                    }
                    self.removed.push(path);
                    removed_here.extend(segments.last().cloned());
                }
            }
        }
        None
    }

    fn array<T: DeserializeOwned>(
        &mut self,
        key: &str,
        value: Option<Spanned<DeValue<'_>>>,
    ) -> (Vec<usize>, Vec<T>) {
        let mut out = Vec::new();
        let mut index = Vec::new();
        let Some(value) = value else {
            return (index, out);
        };
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                for (i, item) in items.into_iter().enumerate() {
                    let path = format!("{key}[{i}]");
                    self.record_spans(&path, &item);
                    if let Some(v) = self.deserialize(&path, item) {
                        out.push(v);
                        index.push(i);
                    }
                }
            }
            other => self.push(
                key.to_owned(),
                Some(span),
                format!(
                    "expected an array of tables ([[{key}]]), found {}",
                    other.type_str()
                ),
            ),
        }
        (index, out)
    }

    /// Semantic checks across the whole scenario.
    fn check(&mut self, s: &Scenario, signal_idx: &[usize], device_idx: &[usize]) {
        let mut signal_ids = HashSet::new();
        for (i, sig) in s.signals.iter().enumerate() {
            let at = format!("signals[{}]", signal_idx.get(i).copied().unwrap_or(i));
            if !signal_ids.insert(sig.id.as_str()) {
                self.push_at(at.clone(), "duplicate signal id".into());
            }
            if sig.keyframes.is_empty() {
                self.push_at(
                    format!("{at}.keyframes"),
                    "at least one keyframe is needed".into(),
                );
            }
            if sig.keyframes.iter().flatten().any(|v| !v.is_finite()) {
                self.push_at(
                    format!("{at}.keyframes"),
                    "keyframes must be finite numbers".into(),
                );
            }
            if sig.keyframes.windows(2).any(|w| w[1][0] <= w[0][0]) {
                self.push_at(
                    format!("{at}.keyframes"),
                    "keyframe times must be strictly increasing".into(),
                );
            }
            if sig.looped && sig.keyframes.last().is_none_or(|k| k[0] <= 0.0) {
                self.push_at(
                    format!("{at}.loop"),
                    "a looping profile needs a last keyframe time > 0".into(),
                );
            }
            if !(sig.noise_std >= 0.0 && sig.noise_std.is_finite()) {
                self.push_at(
                    format!("{at}.noise_std"),
                    "must be a finite number >= 0".into(),
                );
            }
            if sig.noise_period_ms == 0 {
                self.push_at(format!("{at}.noise_period_ms"), "must be > 0".into());
            }
            if let (Some(lo), Some(hi)) = (sig.range_min, sig.range_max) {
                if lo >= hi {
                    self.push_at(
                        format!("{at}.range_min"),
                        "range_min must be below range_max".into(),
                    );
                }
            }
        }

        let mut device_ids = HashSet::new();
        // endpoint -> (framing, port, unit ids)
        let mut endpoints: BTreeMap<&str, (Framing, u16, HashSet<u8>)> = BTreeMap::new();
        for (i, dev) in s.devices.iter().enumerate() {
            let at = format!("devices[{}]", device_idx.get(i).copied().unwrap_or(i));
            if !device_ids.insert(dev.id.as_str()) {
                self.push_at(at.clone(), "duplicate device id".into());
            }
            if dev.framing == Framing::RtuOverTcp && !(1..=247).contains(&dev.unit_id) {
                self.push_at(
                    format!("{at}.unit_id"),
                    "an RTU unit id must be 1..=247".into(),
                );
            }
            match endpoints.get_mut(dev.endpoint_name()) {
                None => {
                    endpoints.insert(
                        dev.endpoint_name(),
                        (dev.framing, dev.port, HashSet::from([dev.unit_id])),
                    );
                }
                Some((framing, port, units)) => {
                    if *framing != dev.framing {
                        self.push_at(
                            format!("{at}.framing"),
                            format!(
                                "endpoint `{}` mixes framings; all its devices must agree",
                                dev.endpoint_name()
                            ),
                        );
                    }
                    if *port != dev.port {
                        self.push_at(
                            format!("{at}.port"),
                            format!(
                                "endpoint `{}` has port {} on another device",
                                dev.endpoint_name(),
                                port
                            ),
                        );
                    }
                    if !units.insert(dev.unit_id) {
                        self.push_at(
                            format!("{at}.unit_id"),
                            format!(
                                "unit id {} is used twice on endpoint `{}`",
                                dev.unit_id,
                                dev.endpoint_name()
                            ),
                        );
                    }
                }
            }
            for (k, w) in dev.offline.iter().enumerate() {
                if w.to_s.is_some_and(|to| to <= w.from_s) {
                    self.push_at(
                        format!("{at}.offline[{k}].to_s"),
                        "to_s must be after from_s".into(),
                    );
                }
            }
            for (k, r) in dev.exceptions.iter().enumerate() {
                if !matches!(r.code, 1..=6 | 10 | 11) {
                    self.push_at(
                        format!("{at}.exceptions[{k}].code"),
                        format!("{} is not a Modbus exception code (1-6, 10, 11)", r.code),
                    );
                }
                if r.count == 0 || u32::from(r.start) + r.count > 65536 {
                    self.push_at(
                        format!("{at}.exceptions[{k}].count"),
                        "the range must hold 1..=65536 addresses and end by 65535".into(),
                    );
                }
            }
            // (table, address) -> owner, to catch overlaps.
            let mut used: HashMap<(Table, u16), String> = HashMap::new();
            let mut point_ids = HashSet::new();
            for (k, pt) in dev.points.iter().enumerate() {
                let pat = format!("{at}.points[{k}]");
                if !point_ids.insert(pt.id.as_str()) {
                    self.push_at(pat.clone(), format!("duplicate point id `{}`", pt.id));
                }
                let t = pt.data_type();
                if pt.table.is_bits() && t != DataType::Bool {
                    self.push_at(
                        format!("{pat}.type"),
                        format!("a {} point must be bool", pt.table.name()),
                    );
                }
                if !(pt.scale.is_finite() && pt.scale != 0.0) {
                    self.push_at(
                        format!("{pat}.scale"),
                        "must be a finite non-zero number".into(),
                    );
                }
                match (&pt.signal, pt.value) {
                    (Some(sig), None) => {
                        if !signal_ids.contains(sig.as_str()) {
                            self.push_at(
                                format!("{pat}.signal"),
                                format!("unknown signal `{sig}`"),
                            );
                        }
                    }
                    (None, Some(_)) => {}
                    _ => self.push_at(
                        pat.clone(),
                        "give exactly one of `signal` and `value`".into(),
                    ),
                }
                let words = if pt.table.is_bits() {
                    1
                } else {
                    u32::from(t.register_count())
                };
                if u32::from(pt.address) + words > 65536 {
                    self.push_at(
                        format!("{pat}.address"),
                        "the value runs past address 65535".into(),
                    );
                    continue;
                }
                for a in 0..words {
                    let addr = pt.address + a as u16;
                    if let Some(other) = used.insert((pt.table, addr), pt.id.clone()) {
                        self.push_at(
                            format!("{pat}.address"),
                            format!(
                                "{} address {addr} is already used by `{other}`",
                                pt.table.name()
                            ),
                        );
                        break;
                    }
                }
            }
            for (k, r) in dev.relays.iter().enumerate() {
                let rat = format!("{at}.relays[{k}]");
                for (table, addr, key) in [
                    (Table::Coils, r.coil, "coil"),
                    (Table::DiscreteInputs, r.feed_input, "feed_input"),
                ] {
                    if let Some(other) = used.insert((table, addr), r.id.clone()) {
                        self.push_at(
                            format!("{rat}.{key}"),
                            format!(
                                "{} address {addr} is already used by `{other}`",
                                table.name()
                            ),
                        );
                    }
                }
            }
        }

        if let Some(m) = &s.mqtt {
            if m.qos > 1 {
                self.push_at("mqtt.qos".into(), "QoS must be 0 or 1".into());
            }
            if m.interval_ms == 0 {
                self.push_at("mqtt.interval_ms".into(), "must be > 0".into());
            }
            for (k, sensor) in m.sensors.iter().enumerate() {
                if !signal_ids.contains(sensor.signal.as_str()) {
                    self.push_at(
                        format!("mqtt.sensors[{k}].signal"),
                        format!("unknown signal `{}`", sensor.signal),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_scenario_parses_with_defaults() {
        let s = Scenario::parse(
            r#"
name = "t"
[[signals]]
id = "a"
keyframes = [[0, 1.0]]
[[devices]]
id = "d"
[[devices.points]]
id = "p"
table = "holding"
address = 0
signal = "a"
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.devices[0].unit_id, 1);
        assert_eq!(s.devices[0].points[0].data_type(), DataType::U16);
        assert_eq!(s.signals[0].noise_period_ms, 1000);
    }
}
