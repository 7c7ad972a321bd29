//! The configuration file a plant engineer writes: one TOML file per site.
//!
//! The doc comments on the structures below are the user documentation of every key.
//! Every table rejects unknown keys (a typo is an error, never silently ignored), and
//! every key either has a default (given in its doc) or is marked *required*.
//!
//! ## Loading
//!
//! [`Config::load`] reads the file with the `config` crate and layers environment
//! overrides on top: `HAZGATE__SECTION__KEY` (double underscores between levels, keys
//! case-insensitive) sets `section.key`, e.g. `HAZGATE__API__LISTEN=0.0.0.0:9000`.
//! Overrides reach tables (`[api]`, `[storage]`, `[site]` …), not elements of arrays
//! of tables (`[[points]]`).
//!
//! ## Errors
//!
//! Loading reports every problem at once. Each section and each array element is
//! deserialised on its own, unknown keys are found by a separate walk, a wrong value is
//! reported and set aside so the rest of its table is still checked, and the semantic
//! checks ([`validate`]) run on everything that parsed. Each [`Diagnostic`] carries its
//! key path (`points[3].thresholds[1].restore`) and, when the key is in the file, its
//! line and column; values that came from the environment name their variable.
//!
//! ## Compiling
//!
//! A valid configuration compiles into the engine's [`EngineSpec`](crate::engine::EngineSpec)
//! with [`Config::engine_spec`]: point `i` is `points[i]`, hazard source `j` is
//! `hazard_sources[j]`, and the invariants listed in `engine::spec` hold.

mod compile;
mod error;
mod keys;
mod load;
mod spans;
mod split;
mod validate;

pub use error::{ConfigError, Diagnostic, Diagnostics, KeyPath, Location, Problem, Segment};

use crate::model::{Colour, Direction, PointKind};
use serde::{Deserialize, Serialize};

/// Poll interval used when neither the point, its device nor its hazard source sets
/// one: 10 s, the 2016 upgrade plan's target inside over-limit areas (DOMAIN.md §1.3).
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 10_000;

/// Longest poll interval allowed on a coal-mine safety point: the 30 s maximum polling
/// cycle of GB 50581 §3.1.4 / AQ 6201-2019 (DOMAIN.md §1.3).
pub const COAL_MAX_POLL_INTERVAL_MS: u64 = 30_000;

/// Most registers one Modbus read may ask for (function codes 0x03/0x04).
pub const MODBUS_MAX_REGISTERS: u16 = 125;

/// Most bits one Modbus read may ask for (function codes 0x01/0x02).
pub const MODBUS_MAX_BITS: u16 = 2000;

/// A whole gateway configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site this gateway watches. Required.
    pub site: SiteConfig,
    /// Major hazard sources (重大危险源). Default: none.
    #[serde(default)]
    pub hazard_sources: Vec<HazardSourceConfig>,
    /// Modbus endpoints and MQTT connections. Default: none.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Measuring points (测点). Point `i` in this list is `PointId(i)`. Default: none.
    #[serde(default)]
    pub points: Vec<PointConfig>,
    /// The embedded durable store. Default: see [`StorageConfig`].
    #[serde(default)]
    pub storage: StorageConfig,
    /// Optional downstream sinks. Default: none.
    #[serde(default)]
    pub sinks: SinksConfig,
    /// Optional uplink to the provincial supervision platform. Default: none.
    #[serde(default)]
    pub uplink: Option<UplinkConfig>,
    /// The HTTP API and dashboard. Default: see [`ApiConfig`].
    #[serde(default)]
    pub api: ApiConfig,
    /// Alarm flood and chattering detection. Default: see [`AlarmRateConfig`].
    #[serde(default)]
    pub alarm_rate: AlarmRateConfig,
    /// Safety actions: power cut on over-limit, feedback check, fault lockout.
    /// Default: none.
    #[serde(default)]
    pub actions: Vec<ActionConfig>,
    /// Linkage: notifications to other site systems (broadcast, personnel location)
    /// on over-limit, power cut and feedback faults. Default: none.
    #[serde(default)]
    pub linkage: Vec<LinkageConfig>,
}

/// `[site]`: who and what this gateway watches.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site code (e.g. the mine code used by the provincial platform). Required.
    pub id: String,
    /// Human-readable site name. Required.
    pub name: String,
    /// `coal_mine` or `chemical_plant`; a coal mine enables the safety-monitoring checks
    /// (30 s polling on safety points). Required.
    pub kind: SiteKind,
    /// The versioned rule set the thresholds were taken from (e.g. `coal-2022` for the
    /// 2016 规程 as amended in 2022, `coal-2026` for the 2025 edition). Recorded with
    /// every event; the thresholds themselves live on the points. Required.
    pub rule_profile: String,
}

/// What kind of site this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    /// An underground coal mine (煤矿安全监控).
    CoalMine,
    /// A hazardous-chemical plant or tank farm (危险化学品重大危险源).
    ChemicalPlant,
}

/// `[[hazard_sources]]`: one major hazard source (重大危险源).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HazardSourceConfig {
    /// Unique id, referenced by `points.hazard_source`. Required.
    pub id: String,
    /// Human-readable name. Required.
    pub name: String,
    /// Grade per GB 18218: 1 (一级, most dangerous) to 4 (四级). Required.
    pub grade: u8,
    /// How often its points are polled (ms). Default: by grade — 1: 1000, 2: 2000,
    /// 3: 5000, 4: 10000.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// Escalation rules on top of the default risk colour (the colour of the highest
    /// active grade of any of its points). Default: none.
    #[serde(default)]
    pub rules: Vec<RiskRuleConfig>,
}

/// `[[hazard_sources.rules]]`: "when at least `min_points` points of the source have an
/// active alarm at `min_colour` or above, the source is `colour`".
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RiskRuleConfig {
    /// How many points must be in alarm (≥ 1). Required.
    pub min_points: u32,
    /// The least alarm colour that counts. Required.
    pub min_colour: Colour,
    /// The source's colour when the rule holds; not below `min_colour`. Required.
    pub colour: Colour,
}

/// How a device is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Modbus TCP (MBAP header) to `host:port`.
    ModbusTcp,
    /// Modbus RTU on a local serial port.
    ModbusRtu,
    /// Modbus RTU frames tunnelled through a TCP serial server (串口服务器).
    ModbusRtuOverTcp,
    /// MQTT subscription on a broker.
    Mqtt,
}

impl Protocol {
    /// Whether points on this device are bound with `[points.modbus]`.
    pub fn is_modbus(self) -> bool {
        !matches!(self, Protocol::Mqtt)
    }

    /// Whether the device is reached over TCP with `host` and `port`.
    pub fn is_tcp(self) -> bool {
        matches!(self, Protocol::ModbusTcp | Protocol::ModbusRtuOverTcp)
    }

    /// Name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::ModbusTcp => "modbus_tcp",
            Protocol::ModbusRtu => "modbus_rtu",
            Protocol::ModbusRtuOverTcp => "modbus_rtu_over_tcp",
            Protocol::Mqtt => "mqtt",
        }
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity.
    Even,
    /// Odd parity.
    Odd,
}

/// `[[devices]]`: one Modbus endpoint or one MQTT connection.
///
/// Which keys apply depends on `protocol`; a key that does not apply is an error.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique id, referenced by `points.device`. Required.
    pub id: String,
    /// Human-readable name. Default: empty.
    #[serde(default)]
    pub name: String,
    /// `modbus_tcp`, `modbus_rtu`, `modbus_rtu_over_tcp` or `mqtt`. Required.
    pub protocol: Protocol,
    /// Host name or IP (Modbus TCP and RTU over TCP). Required for those.
    #[serde(default)]
    pub host: Option<String>,
    /// TCP port (Modbus TCP and RTU over TCP). Default: 502.
    #[serde(default)]
    pub port: Option<u16>,
    /// Modbus unit (slave) id, 0–247. Default: 1.
    #[serde(default)]
    pub unit_id: Option<u8>,
    /// Serial device, e.g. `/dev/ttyS1` (Modbus RTU). Required for RTU.
    #[serde(default)]
    pub serial_port: Option<String>,
    /// Serial speed (Modbus RTU). Default: 9600.
    #[serde(default)]
    pub baud_rate: Option<u32>,
    /// Data bits, 7 or 8 (Modbus RTU). Default: 8.
    #[serde(default)]
    pub data_bits: Option<u8>,
    /// `none`, `even` or `odd` (Modbus RTU). Default: `none`.
    #[serde(default)]
    pub parity: Option<Parity>,
    /// Stop bits, 1 or 2 (Modbus RTU). Default: 1.
    #[serde(default)]
    pub stop_bits: Option<u8>,
    /// Poll interval (ms) for Modbus; for MQTT, the interval at which messages are
    /// expected. Default: the shortest interval of the hazard sources of its points,
    /// else 10000.
    #[serde(default)]
    pub poll_interval_ms: Option<u64>,
    /// How long to wait for one answer or connection (ms). Default: 1000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra attempts after a failed request within one poll. Default: 1.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Consecutive failed polls after which the device is reported offline (one
    /// device-offline alarm, not one per point). Its points get `comm_fail` from the
    /// first failed poll. Default: 2, so the alarm comes within two poll cycles.
    #[serde(default = "default_offline_after_failures")]
    pub offline_after_failures: u32,
    /// Most registers merged into one read; at most 125 (the Modbus limit). Default: 125.
    #[serde(default = "default_max_block_registers")]
    pub max_block_registers: u16,
    /// Most coils/discrete inputs merged into one read; at most 2000. Default: 2000.
    #[serde(default = "default_max_block_bits")]
    pub max_block_bits: u16,
    /// Unused registers between two points that may still be read in one block.
    /// Default: 8.
    #[serde(default = "default_max_gap_registers")]
    pub max_gap_registers: u16,
    /// Poll interval (ms) while any point of the device is in alarm or within
    /// `fast_margin_pct` of its first threshold (Modbus). On a coal-mine safety device
    /// at most 10000 (over-limit areas are polled every ≤ 10 s). Default: the poll
    /// interval, capped at 10000.
    #[serde(default)]
    pub fast_poll_interval_ms: Option<u64>,
    /// How near its first threshold a point must come, in percent of its sensor
    /// range, for the device to poll at the fast interval (Modbus). Default: 10.
    #[serde(default = "default_fast_margin_pct")]
    pub fast_margin_pct: f64,
    /// Interval (ms) between attempts to reach the device while it is offline
    /// (Modbus), so a dead device costs its bus little. Default: 5 × the poll interval,
    /// between 5000 and 60000.
    #[serde(default)]
    pub offline_retry_ms: Option<u64>,
    /// Read blocks to use as given instead of the planned ones (for devices that only
    /// answer particular block shapes). Default: none.
    #[serde(default)]
    pub blocks: Vec<BlockConfig>,
    /// Broker URL, `mqtt://host:1883` or `mqtts://host:8883` (MQTT). Required for MQTT.
    #[serde(default)]
    pub broker: Option<String>,
    /// Prefix put in front of every point topic of this device, e.g. `plant/tankfarm/`
    /// (MQTT). Default: none.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// MQTT client id (MQTT). Default: `hazgate-<site id>-<device id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Broker user name (MQTT). Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// Broker password (MQTT); better set through `HAZGATE__…` or a secret file later.
    /// Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// MQTT protocol version: `3` (3.1.1) or `5` (MQTT). Default: 3.
    #[serde(default)]
    pub mqtt_version: Option<u8>,
    /// PEM file with the CA certificate(s) that signed the broker's certificate
    /// (`mqtts://` only). Default: the system's trusted roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// PEM file with the client certificate (chain), for brokers that require one
    /// (`mqtts://` only, together with `client_key_file`). Default: none.
    #[serde(default)]
    pub client_cert_file: Option<String>,
    /// PEM file with the private key of `client_cert_file` (PKCS#8, PKCS#1 or SEC1).
    /// Default: none.
    #[serde(default)]
    pub client_key_file: Option<String>,
    /// One topic filter for all points of the device, after `topic_prefix`: one whole
    /// level is `{point}` and names the point (its `mqtt.key`, else its id); other
    /// levels may be `+`, and the last may be `#`. E.g. `site/+/{point}/data`. Points
    /// with their own `mqtt.topic` keep it; the others need no `[points.mqtt]` table.
    /// Default: none (every point names its topic).
    #[serde(default)]
    pub point_topic: Option<String>,
    /// How long the broker connection may be down (ms) before the device's status
    /// point reads 0 and its points `comm_fail` (MQTT). Default: 2 × the expected
    /// message interval (`poll_interval_ms`).
    #[serde(default)]
    pub offline_after_ms: Option<u64>,
    /// Largest payload accepted (bytes, MQTT); a larger one is counted, rejected and
    /// its points read `bad_data`. Default: 65536.
    #[serde(default)]
    pub max_payload_bytes: Option<u32>,
    /// Deepest nesting of objects and arrays accepted in a JSON payload (MQTT).
    /// Default: 16.
    #[serde(default)]
    pub max_json_depth: Option<u32>,
}

fn default_timeout_ms() -> u64 {
    1000
}
fn default_retries() -> u32 {
    1
}
fn default_offline_after_failures() -> u32 {
    2
}
fn default_fast_margin_pct() -> f64 {
    10.0
}
fn default_max_block_registers() -> u16 {
    MODBUS_MAX_REGISTERS
}
fn default_max_block_bits() -> u16 {
    MODBUS_MAX_BITS
}
fn default_max_gap_registers() -> u16 {
    8
}

impl DeviceConfig {
    /// TCP port, defaulted.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(502)
    }
    /// Modbus unit id, defaulted.
    pub fn unit_id(&self) -> u8 {
        self.unit_id.unwrap_or(1)
    }
    /// Serial speed, defaulted.
    pub fn baud_rate(&self) -> u32 {
        self.baud_rate.unwrap_or(9600)
    }
    /// Serial data bits, defaulted.
    pub fn data_bits(&self) -> u8 {
        self.data_bits.unwrap_or(8)
    }
    /// Serial parity, defaulted.
    pub fn parity(&self) -> Parity {
        self.parity.unwrap_or(Parity::None)
    }
    /// Serial stop bits, defaulted.
    pub fn stop_bits(&self) -> u8 {
        self.stop_bits.unwrap_or(1)
    }
    /// MQTT protocol version (3 or 5), defaulted.
    pub fn mqtt_version(&self) -> u8 {
        self.mqtt_version.unwrap_or(3)
    }
    /// Largest MQTT payload accepted, defaulted.
    pub fn max_payload_bytes(&self) -> u32 {
        self.max_payload_bytes
            .unwrap_or(DEFAULT_MQTT_MAX_PAYLOAD_BYTES)
    }
    /// Deepest JSON nesting accepted, defaulted.
    pub fn max_json_depth(&self) -> u32 {
        self.max_json_depth.unwrap_or(DEFAULT_MQTT_MAX_JSON_DEPTH)
    }
}

/// Largest MQTT payload accepted when `max_payload_bytes` is not set: 64 KiB.
pub const DEFAULT_MQTT_MAX_PAYLOAD_BYTES: u32 = 65_536;

/// Deepest JSON nesting accepted when `max_json_depth` is not set.
pub const DEFAULT_MQTT_MAX_JSON_DEPTH: u32 = 16;

pub use crate::sources::modbus::decode::{ByteOrder, DataType, Table as RegisterTable};

/// `[[devices.blocks]]`: one forced read block.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlockConfig {
    /// The table read. Required.
    pub table: RegisterTable,
    /// First address, 0-based. Required.
    pub start: u16,
    /// Registers (≤ 125) or bits (≤ 2000) read. Required.
    pub count: u16,
}

/// `[[points]]`: one measured quantity (测点).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Unique id, e.g. `CH4-T1-1201`. Required.
    pub id: String,
    /// Human-readable name. Required.
    pub name: String,
    /// What is measured: `ch4`, `co`, `o2`, `co2`, `h2s`, `combustible`, `toxic`,
    /// `water_level`, `tank_level`, `pressure`, `temperature`, `flow`, `wind_speed`,
    /// `dust`, `switch`, `other`. Required.
    pub kind: PointKind,
    /// Engineering unit for display, e.g. `%CH4`, `ppm`, `m/s`. Default: empty.
    #[serde(default)]
    pub unit: String,
    /// Where the sensor is installed. Default: empty.
    #[serde(default)]
    pub location: String,
    /// Id of the hazard source this point belongs to. Default: none.
    #[serde(default)]
    pub hazard_source: Option<String>,
    /// Lower end of the sensor's measuring range, in `unit`. Required.
    pub range_min: f64,
    /// Upper end of the sensor's measuring range, in `unit`; a value outside the range
    /// is a sensor fault, not a process value. Required.
    pub range_max: f64,
    /// A coal-mine safety-monitoring point (安全监控): polled at 30 s or faster and
    /// never without stale detection. Default: false.
    #[serde(default)]
    pub safety: bool,
    /// Id of the device the point is read from. Required.
    pub device: String,
    /// Expected interval between readings (ms). Default: the device's poll interval.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    /// The point is stale after `stale_factor × interval` without a reading; 0 turns
    /// stale detection off (not allowed on safety points). Default: 3.
    #[serde(default = "default_stale_factor")]
    pub stale_factor: u32,
    /// Where the value is on a Modbus device. Required on Modbus devices.
    #[serde(default)]
    pub modbus: Option<ModbusBinding>,
    /// Where the value is on an MQTT device. Required on MQTT devices.
    #[serde(default)]
    pub mqtt: Option<MqttBinding>,
    /// Graded thresholds, least severe first within each direction. Default: none.
    #[serde(default)]
    pub thresholds: Vec<ThresholdConfig>,
    /// Rate-of-change rule. Default: none.
    #[serde(default)]
    pub rate: Option<RateConfig>,
}

fn default_stale_factor() -> u32 {
    3
}

/// `[points.modbus]`: where a point's value lives on a Modbus device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusBinding {
    /// `coil`, `discrete_input`, `holding` or `input`. Required.
    pub table: RegisterTable,
    /// 0-based address of the (first) register or bit, as on the wire (register
    /// 40001 is holding address 0). Required.
    pub address: u16,
    /// `bool` (coils and discrete inputs only), `bit`, `u16`, `i16`, `u32`, `i32`,
    /// `u64`, `i64`, `f32` or `f64`. Required.
    pub data_type: DataType,
    /// `ABCD`, `CDAB`, `BADC` or `DCBA`. Default: `ABCD`.
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Bit number 0–15 inside the register, for `data_type = "bit"` only.
    /// Default: none.
    #[serde(default)]
    pub bit: Option<u8>,
    /// Engineering value = raw × scale + offset. Default: 1.0.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Engineering value = raw × scale + offset. Default: 0.0.
    #[serde(default)]
    pub offset: f64,
}

fn default_scale() -> f64 {
    1.0
}

/// `[points.mqtt]`: where a point's value lives in MQTT messages.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBinding {
    /// Topic after the device's `topic_prefix`; no wildcards. Several points may read
    /// one topic (different `value_path`s). Required unless the device has a
    /// `point_topic`.
    #[serde(default)]
    pub topic: Option<String>,
    /// The point's name in the `{point}` level of its device's `point_topic`, when it
    /// differs from the point id; not with `topic`. Default: the point id.
    #[serde(default)]
    pub key: Option<String>,
    /// Dotted path of the value in a JSON object payload, e.g. `value` or `data.v`
    /// (a number, `true`/`false` as 1/0, or a text holding a number). A payload that
    /// is a bare number (or `true`/`false`) is the value itself. Default: `value`.
    #[serde(default = "default_value_path")]
    pub value_path: String,
    /// Dotted path of the device's timestamp: a number (ms since the epoch when
    /// ≥ 10^11, else seconds, fractions allowed) or an RFC 3339 text
    /// (`2024-05-01T08:00:00.250+08:00`). When the path is not set, or the field is
    /// absent from a message, the reading takes the time of arrival. Default: none.
    #[serde(default)]
    pub ts_path: Option<String>,
    /// Dotted path of a quality flag: good when `true`, `0`, `"good"` or `"ok"`
    /// (any case) or absent; any other value makes the reading `source_bad`.
    /// Default: none.
    #[serde(default)]
    pub quality_path: Option<String>,
}

fn default_value_path() -> String {
    "value".to_owned()
}

/// `[[points.thresholds]]`: one grade (预警, 报警, 断电 …).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// Display name, unique within the point, e.g. `报警` or `断电`. Required.
    pub name: String,
    /// `high` (alarm at or above) or `low` (alarm at or below). Required.
    pub direction: Direction,
    /// Enter the grade when the value reaches this. Required.
    pub trigger: f64,
    /// Leave the grade when the value is strictly past this back toward normal
    /// (`< restore` for high, `> restore` for low). Required on power-cut grades.
    /// Default: `trigger ∓ deadband`, or `trigger` when no deadband is given.
    #[serde(default)]
    pub restore: Option<f64>,
    /// Hysteresis width (≥ 0), used when `restore` is not given; not both.
    /// Not allowed on power-cut grades. Default: none.
    #[serde(default)]
    pub deadband: Option<f64>,
    /// The condition must hold this long before the grade becomes active (ms).
    /// Must be 0 on power-cut grades. Default: 0.
    #[serde(default)]
    pub on_delay_ms: u64,
    /// The condition must be gone this long before the grade clears (ms).
    /// Must be 0 on power-cut grades. Default: 0.
    #[serde(default)]
    pub off_delay_ms: u64,
    /// `blue`, `yellow`, `orange` or `red`; must not drop as grades get more severe.
    /// Required.
    pub colour: Colour,
    /// This grade cuts power (断电): it must act within 2 s, so no delay or deadband,
    /// and it needs an explicit `restore`. Default: false.
    #[serde(default)]
    pub power_cut: bool,
}

impl ThresholdConfig {
    /// The restore value in effect: `restore`, else `trigger ∓ deadband`, else `trigger`.
    pub fn effective_restore(&self) -> f64 {
        match (self.restore, self.deadband) {
            (Some(restore), _) => restore,
            (None, Some(deadband)) => match self.direction {
                Direction::High => self.trigger - deadband,
                Direction::Low => self.trigger + deadband,
            },
            (None, None) => self.trigger,
        }
    }
}

/// `[points.rate]`: rate-of-change alarm, e.g. sump level rising faster than 0.5 m/h.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Alarm when the value rises faster than this (units per hour, > 0). Default: none.
    #[serde(default)]
    pub rise_per_h: Option<f64>,
    /// Alarm when the value falls faster than this (units per hour, > 0). Default: none.
    #[serde(default)]
    pub fall_per_h: Option<f64>,
    /// Window over which the rate is measured (ms, > 0). Default: 600000 (10 min).
    #[serde(default = "default_rate_window_ms")]
    pub window_ms: u64,
    /// Colour of the rate alarm. Default: `yellow`.
    #[serde(default = "default_rate_colour")]
    pub colour: Colour,
}

fn default_rate_window_ms() -> u64 {
    600_000
}
fn default_rate_colour() -> Colour {
    Colour::Yellow
}

/// When the store keeps a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageMode {
    /// Keep a reading when value or quality changed, plus one every `heartbeat_s`.
    #[default]
    OnChange,
    /// Keep every reading.
    Every,
}

/// `[storage]`: the embedded durable store (SQLite, WAL).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Database file. Default: `hazgate.db`.
    #[serde(default = "default_storage_path")]
    pub path: String,
    /// `on_change` or `every`. Default: `on_change`.
    #[serde(default)]
    pub mode: StorageMode,
    /// With `on_change`, keep an unchanged reading at least this often (s, > 0).
    /// Default: 60.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// Days raw readings are kept. Default: 90 (≥ 3 months, DOMAIN.md §1.3; at least
    /// 7 on a coal mine, 30 on a chemical plant).
    #[serde(default = "default_raw_retention_days")]
    pub raw_retention_days: u32,
    /// Days alarms, cuts and audit records are kept. Default: 730 (≥ 2 years; at least
    /// 365 on a coal mine).
    #[serde(default = "default_event_retention_days")]
    pub event_retention_days: u32,
    /// Upper bound on the store's size (MB). When it is reached, readings wait in
    /// memory, alarm transitions make room by deleting the oldest readings (the loss is
    /// counted), and a `system:storage` alarm is raised until space returns. Default:
    /// none (the disk's own size is the limit).
    #[serde(default)]
    pub max_size_mb: Option<u64>,
}

fn default_storage_path() -> String {
    "hazgate.db".to_owned()
}
fn default_heartbeat_s() -> u64 {
    60
}
fn default_raw_retention_days() -> u32 {
    90
}
fn default_event_retention_days() -> u32 {
    730
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: default_storage_path(),
            mode: StorageMode::default(),
            heartbeat_s: default_heartbeat_s(),
            raw_retention_days: default_raw_retention_days(),
            event_retention_days: default_event_retention_days(),
            max_size_mb: None,
        }
    }
}

/// `[sinks]`: downstream consumers of the durable log.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Time-series database. Default: none.
    #[serde(default)]
    pub influxdb: Option<InfluxConfig>,
}

/// InfluxDB write API flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    /// `/api/v2/write` with org and bucket (InfluxDB 2.x/3.x, VictoriaMetrics).
    #[default]
    V2,
    /// `/write` with database and retention policy (InfluxDB 1.x).
    V1,
}

/// `[sinks.influxdb]`: readings as line protocol.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// Base URL, `http://` or `https://`. Required.
    pub url: String,
    /// `v2` or `v1`. Default: `v2`.
    #[serde(default)]
    pub api: InfluxApi,
    /// Organisation (v2). Required for v2.
    #[serde(default)]
    pub org: Option<String>,
    /// Bucket (v2). Required for v2.
    #[serde(default)]
    pub bucket: Option<String>,
    /// API token (v2). Default: none.
    #[serde(default)]
    pub token: Option<String>,
    /// Database (v1). Required for v1.
    #[serde(default)]
    pub database: Option<String>,
    /// Retention policy (v1). Default: the database default.
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// User name (v1). Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (v1). Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// Most lines per write (> 0). Default: 5000.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Longest time a line waits before a write (ms, > 0). Default: 1000.
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
}

fn default_batch_size() -> u32 {
    5000
}
fn default_flush_interval_ms() -> u64 {
    1000
}

/// How the uplink reaches the province.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkTransport {
    /// MQTT, QoS 1.
    Mqtt,
    /// HTTPS POST.
    Https,
}

/// Payload format of the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UplinkFormat {
    /// JSON documents.
    #[default]
    Json,
    /// The legacy KJ text records (`;` fields, `~` records, `‖` batches).
    KjText,
}

/// `[uplink]`: the feed to the provincial supervision platform.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// `mqtt` or `https`. Required.
    pub transport: UplinkTransport,
    /// Broker (`mqtt://`, `mqtts://`) or endpoint (`https://`) URL. Required.
    pub url: String,
    /// Site code the province knows this site by. Default: `site.id`.
    #[serde(default)]
    pub site_code: Option<String>,
    /// `json` or `kj_text`. Default: `json`.
    #[serde(default)]
    pub format: UplinkFormat,
    /// Interval of real-time value uploads (ms, > 0). Default: 30000 (the provincial
    /// figure is still unverified, DOMAIN.md §2).
    #[serde(default = "default_realtime_interval_ms")]
    pub realtime_interval_ms: u64,
    /// Send real-time values at all (alarms and heartbeats always go). Default: true.
    #[serde(default = "default_true_uplink")]
    pub send_realtime: bool,
    /// Most readings in one real-time message (> 0). Default: 1000.
    #[serde(default = "default_realtime_batch_max")]
    pub realtime_batch_max: u32,
    /// Send the 5-minute statistics (min, max, average, count per point and window),
    /// each window once it is over. Default: true.
    #[serde(default = "default_true_uplink")]
    pub send_statistics: bool,
    /// Heartbeat interval (ms); 0 sends none. Default: 60000.
    #[serde(default = "default_uplink_heartbeat_ms")]
    pub heartbeat_interval_ms: u64,
    /// Longest delay between retries after a failed send (ms, > 0). Short, so an alarm
    /// goes out soon after the link is back. Default: 2000.
    #[serde(default = "default_uplink_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Minutes east of UTC for the times in KJ text records (-720 to 840).
    /// Default: 480 (Beijing time).
    #[serde(default = "default_utc_offset_min")]
    pub utc_offset_min: i32,
    /// MQTT: topics are
    /// `<topic_prefix>/<site_code>/<alarm|realtime|stats|heartbeat|status>`;
    /// no `+` or `#`. Default: `hazgate`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// MQTT client id, stable so the broker keeps the session. Default:
    /// `hazgate-<site_code>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT user name. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// MQTT password. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// CA certificates (PEM) for `mqtts://` / `https://`. Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate (PEM); needs `client_key_file`. Default: none.
    #[serde(default)]
    pub client_cert_file: Option<String>,
    /// Client private key (PEM); needs `client_cert_file`. Default: none.
    #[serde(default)]
    pub client_key_file: Option<String>,
    /// HTTPS: the `appid` header (and body field with SM4) the platform issued.
    /// Default: none.
    #[serde(default)]
    pub appid: Option<String>,
    /// HTTPS: the `appsecret` header. Default: none.
    #[serde(default)]
    pub appsecret: Option<String>,
    /// HTTPS: SM4 key, 32 hex digits; with `sm4_iv_hex` the body is sent
    /// SM4-CBC/PKCS#7-encrypted. Default: none (plain body).
    #[serde(default)]
    pub sm4_key_hex: Option<String>,
    /// HTTPS: SM4 IV ("salt"), 32 hex digits; needs `sm4_key_hex`. Default: none.
    #[serde(default)]
    pub sm4_iv_hex: Option<String>,
    /// HTTPS: timeout of one request (ms, > 0). Default: 10000.
    #[serde(default = "default_uplink_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_realtime_interval_ms() -> u64 {
    30_000
}
fn default_true_uplink() -> bool {
    true
}
fn default_realtime_batch_max() -> u32 {
    1_000
}
fn default_uplink_heartbeat_ms() -> u64 {
    60_000
}
fn default_uplink_retry_max_ms() -> u64 {
    2_000
}
fn default_utc_offset_min() -> i32 {
    480
}
fn default_topic_prefix() -> String {
    "hazgate".to_owned()
}
fn default_uplink_request_timeout_ms() -> u64 {
    10_000
}

/// API roles, least privileged first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read-only.
    Viewer,
    /// May acknowledge and shelve alarms.
    Operator,
    /// May change configuration.
    Admin,
}

/// `[api]`: the HTTP API, WebSocket stream and dashboard.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Socket address to listen on. Default: `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Access tokens. Default: none (the API then only serves `/healthz`, `/readyz`
    /// and `/metrics`).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Serve HTTPS (and WSS) with this PEM certificate chain, leaf first; needs
    /// `tls_key`. Default: none (plain HTTP).
    #[serde(default)]
    pub tls_cert: Option<String>,
    /// The PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1). Default: none.
    #[serde(default)]
    pub tls_key: Option<String>,
    /// Requests each client IP address may make per second, on average, to any
    /// route; more get 429 with `Retry-After`. 0 turns the limit off. Default: 50.
    #[serde(default = "default_rate_limit_per_s")]
    pub rate_limit_per_s: f64,
    /// Requests a client may make at once after a quiet spell (the bucket size, ≥ 1).
    /// Default: 100.
    #[serde(default = "default_rate_limit_burst")]
    pub rate_limit_burst: u32,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_rate_limit_per_s() -> f64 {
    50.0
}

fn default_rate_limit_burst() -> u32 {
    100
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            tokens: Vec::new(),
            tls_cert: None,
            tls_key: None,
            rate_limit_per_s: default_rate_limit_per_s(),
            rate_limit_burst: default_rate_limit_burst(),
        }
    }
}

/// `[[api.tokens]]`: one bearer token, stored as its SHA-256.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token; recorded in the audit log. Unique. Required.
    pub name: String,
    /// `viewer`, `operator` or `admin`. Required.
    pub role: Role,
    /// SHA-256 of the token, 64 hex digits (`printf %s TOKEN | sha256sum`). Required.
    pub sha256: String,
}

/// How a safety action comes back once its cause is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreMode {
    /// Restore the power as soon as no trigger is at its cut grade and no fault locks
    /// the action out.
    #[default]
    Auto,
    /// Stay cut until an operator releases the action (admin, through the API).
    Manual,
}

/// `[[actions]]`: one safety action (断电): when a trigger point reaches its cut grade,
/// write the cut to every relay of the cut range, check each relay's feed (馈电), and
/// restore below the restore value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Unique id, e.g. `cut-1201-face`. The action's points are `cut:<id>` (1 while the
    /// power is cut) and `action:<id>` (0 on a feedback fault, 馈电异常). Required.
    pub id: String,
    /// Display name, e.g. `1201 回采工作面断电`. Default: empty.
    #[serde(default)]
    pub name: String,
    /// Points whose cut grade triggers the action. Default: none (then
    /// `hazard_source` is required).
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Every point of this hazard source that has the cut grade triggers the action
    /// too. Default: none.
    #[serde(default)]
    pub hazard_source: Option<String>,
    /// Name of the grade that cuts (it and any more severe grade of the same
    /// direction). Default: the points' power-cut grades (`power_cut = true`).
    #[serde(default)]
    pub grade: Option<String>,
    /// Fault lockout (故障闭锁): a trigger whose sensor faults, goes stale or whose
    /// device (or serial link) goes offline cuts too. Default: true.
    #[serde(default = "default_true_action")]
    pub fault_lockout: bool,
    /// `auto` or `manual` (stay cut until an operator's release). Default: `auto`.
    #[serde(default)]
    pub restore: RestoreMode,
    /// The relays of the cut range (e.g. the face and its return airway). At least
    /// one. Required.
    #[serde(default)]
    pub relays: Vec<RelayConfig>,
}

fn default_true_action() -> bool {
    true
}

/// `[[actions.relays]]`: one controlled switch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Modbus device that drives the switch. Required.
    pub device: String,
    /// `coil` (function code 5) or `holding` (function code 6); the other tables are
    /// read-only. Default: `coil`.
    #[serde(default = "default_relay_table")]
    pub table: RegisterTable,
    /// 0-based address of the coil or register; a point must describe it (read it
    /// back), so the written address is checked against the configuration. Required.
    pub address: u16,
    /// Value written to cut (0/1 for a coil). Default: 1.
    #[serde(default = "default_cut_value")]
    pub cut_value: u16,
    /// Value written to restore (0/1 for a coil). Default: 0.
    #[serde(default)]
    pub restore_value: u16,
    /// Feed-status (馈电) point on the load side: 1 powered, 0 cut. Default: none (no
    /// feedback check; only the write is checked).
    #[serde(default)]
    pub feedback: Option<String>,
    /// The feed must show the commanded state within this time (ms, > 0), or a
    /// 馈电异常 alarm is raised. Default: two poll cycles of the feedback point.
    #[serde(default)]
    pub feedback_timeout_ms: Option<u64>,
}

fn default_relay_table() -> RegisterTable {
    RegisterTable::Coil
}
fn default_cut_value() -> u16 {
    1
}

/// What a linkage is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkageEvent {
    /// A configured point's value alarm (超限): raised, escalated, returned.
    OverLimit,
    /// A safety action cut the power (`cut:<id>` raised) or restored it.
    Cut,
    /// A safety action's feedback fault (馈电异常).
    FeedFault,
}

/// `[[linkage]]`: one site system told about over-limits and power cuts (AQ 1029's
/// automatic linkage to broadcast, communication and personnel-location systems).
/// Messages are the uplink's JSON alarm messages (`docs/uplink.md`), read from the
/// durable log by the linkage's own cursor: at least once, in order, with stable ids,
/// also after an outage of the receiver or a restart.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkageConfig {
    /// Unique id; the cursor is kept as `linkage:<id>`. Required.
    pub id: String,
    /// `mqtt://` / `mqtts://` broker (messages on `<topic_prefix>/<site>/alarm`, QoS 1)
    /// or `http://` / `https://` webhook (one JSON POST per message). Required.
    pub url: String,
    /// `over_limit`, `cut`, `feed_fault`. Default: all three.
    #[serde(default = "default_linkage_on")]
    pub on: Vec<LinkageEvent>,
    /// Only over-limits of these point ids. Default: every point.
    #[serde(default)]
    pub points: Vec<String>,
    /// MQTT topic prefix (no `+` or `#`). Default: `linkage`.
    #[serde(default = "default_linkage_prefix")]
    pub topic_prefix: String,
    /// MQTT client id. Default: `hazgate-<site>-<id>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// MQTT user name. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// MQTT password. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// CA certificates (PEM) for `mqtts://` / `https://`. Default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// HTTP: timeout of one request (ms, > 0). Default: 5000.
    #[serde(default = "default_linkage_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn default_linkage_on() -> Vec<LinkageEvent> {
    vec![
        LinkageEvent::OverLimit,
        LinkageEvent::Cut,
        LinkageEvent::FeedFault,
    ]
}
fn default_linkage_prefix() -> String {
    "linkage".to_owned()
}
fn default_linkage_timeout_ms() -> u64 {
    5_000
}

/// `[alarm_rate]`: alarm flood and chattering detection (EEMUA 191 / ISA-18.2).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRateConfig {
    /// A flood starts above this many alarms in 10 minutes. Default: 10.
    #[serde(default = "default_flood_start")]
    pub flood_start_per_10min: u32,
    /// A flood ends below this many alarms in 10 minutes (≤ the start figure).
    /// Default: 5.
    #[serde(default = "default_flood_end")]
    pub flood_end_per_10min: u32,
    /// A point chatters above this many alarms within `chatter_window_ms` (≥ 1).
    /// Default: 3.
    #[serde(default = "default_chatter_count")]
    pub chatter_count: u32,
    /// Window for chattering (ms, > 0). Default: 60000.
    #[serde(default = "default_chatter_window_ms")]
    pub chatter_window_ms: u64,
}

fn default_flood_start() -> u32 {
    crate::engine::AlarmRateSpec::default().flood_start_per_10min
}
fn default_flood_end() -> u32 {
    crate::engine::AlarmRateSpec::default().flood_end_per_10min
}
fn default_chatter_count() -> u32 {
    crate::engine::AlarmRateSpec::default().chatter_count
}
fn default_chatter_window_ms() -> u64 {
    crate::engine::AlarmRateSpec::default().chatter_window_ms
}

impl Default for AlarmRateConfig {
    fn default() -> Self {
        AlarmRateConfig {
            flood_start_per_10min: default_flood_start(),
            flood_end_per_10min: default_flood_end(),
            chatter_count: default_chatter_count(),
            chatter_window_ms: default_chatter_window_ms(),
        }
    }
}

impl Config {
    /// Reads, overrides from the environment, and validates a configuration file.
    /// Every problem found is returned at once in [`ConfigError::Invalid`].
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Config, ConfigError> {
        load::load_file(path.as_ref(), load::EnvSource::Process)
    }

    /// As [`Config::load`], but environment overrides come from `vars` (name, value)
    /// instead of the process environment. For tests and embedding.
    pub fn load_with_env(
        path: impl AsRef<std::path::Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        load::load_file(
            path.as_ref(),
            load::EnvSource::Given(vars.into_iter().collect()),
        )
    }

    /// Parses and validates TOML text with no environment overrides; `file` only names
    /// the text in diagnostics.
    pub fn from_toml_str(
        text: &str,
        file: impl Into<std::path::PathBuf>,
    ) -> Result<Config, ConfigError> {
        load::load_text(text, file.into(), load::EnvSource::Given(Vec::new()))
    }

    /// Runs the semantic checks on an already-built configuration (no file places).
    pub fn validate(&self) -> Result<(), Vec<Diagnostic>> {
        let diagnostics = validate::validate(self, &validate::Origins::identity(self));
        if diagnostics.is_empty() {
            Ok(())
        } else {
            Err(diagnostics)
        }
    }

    /// The effective poll interval (ms) of device `index`: its own, else the shortest
    /// of the hazard sources of its points, else [`DEFAULT_POLL_INTERVAL_MS`].
    pub fn device_poll_interval_ms(&self, index: usize) -> u64 {
        compile::device_poll_interval_ms(self, index)
    }

    /// The expected interval (ms) between readings of point `index`.
    pub fn point_interval_ms(&self, index: usize) -> u64 {
        compile::point_interval_ms(self, index)
    }
}
