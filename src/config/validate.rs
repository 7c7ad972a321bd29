//! Semantic checks on a configuration that parsed: references, uniqueness, grade
//! order, the power-cut rules, coal-mine polling, Modbus limits and address overlaps,
//! and the values of the later sections. Every problem is collected; none stops the
//! others.

use super::error::{Diagnostic, KeyPath, Problem};
use super::*;
use std::collections::{HashMap, HashSet};

/// Where the parsed elements came from, so diagnostics name the element as written
/// even when an earlier one failed to parse.
pub(crate) struct Origins {
    /// Original index of each parsed hazard source.
    pub hazard_sources: Vec<usize>,
    /// Original index of each parsed device.
    pub devices: Vec<usize>,
    /// Original index of each parsed point.
    pub points: Vec<usize>,
    /// Ids of hazard sources that failed to parse.
    pub broken_hazard_sources: HashSet<String>,
    /// Ids of devices that failed to parse.
    pub broken_devices: HashSet<String>,
    /// Ids of points that failed to parse.
    pub broken_points: HashSet<String>,
    /// Original index of each parsed safety action.
    pub actions: Vec<usize>,
    /// Original index of each parsed linkage.
    pub linkage: Vec<usize>,
    /// Whether `[site]` parsed; site-dependent checks are skipped otherwise.
    pub site_known: bool,
}

impl Origins {
    /// Elements are where they are (a configuration built in code).
    pub(crate) fn identity(config: &Config) -> Origins {
        Origins {
            hazard_sources: (0..config.hazard_sources.len()).collect(),
            devices: (0..config.devices.len()).collect(),
            points: (0..config.points.len()).collect(),
            broken_hazard_sources: HashSet::new(),
            broken_devices: HashSet::new(),
            broken_points: HashSet::new(),
            actions: (0..config.actions.len()).collect(),
            linkage: (0..config.linkage.len()).collect(),
            site_known: true,
        }
    }

    fn hazard_source(&self, i: usize) -> KeyPath {
        KeyPath::root()
            .key("hazard_sources")
            .index(self.hazard_sources.get(i).copied().unwrap_or(i))
    }
    fn device(&self, i: usize) -> KeyPath {
        KeyPath::root()
            .key("devices")
            .index(self.devices.get(i).copied().unwrap_or(i))
    }
    fn point(&self, i: usize) -> KeyPath {
        KeyPath::root()
            .key("points")
            .index(self.points.get(i).copied().unwrap_or(i))
    }
    fn linkage(&self, i: usize) -> KeyPath {
        KeyPath::root()
            .key("linkage")
            .index(self.linkage.get(i).copied().unwrap_or(i))
    }
    fn action(&self, i: usize) -> KeyPath {
        KeyPath::root()
            .key("actions")
            .index(self.actions.get(i).copied().unwrap_or(i))
    }
}

struct Checker<'a> {
    config: &'a Config,
    origins: &'a Origins,
    out: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn report(&mut self, problem: Problem, path: KeyPath, message: impl Into<String>) {
        self.out.push(Diagnostic::new(problem, path, message));
    }

    fn non_empty(&mut self, value: &str, path: KeyPath) {
        if value.trim().is_empty() {
            self.report(Problem::Value, path, "must not be empty");
        }
    }

    fn positive(&mut self, value: u64, path: KeyPath) {
        if value == 0 {
            self.report(Problem::Value, path, "must be greater than 0");
        }
    }

    /// A client certificate and its key come together.
    fn cert_and_key(&mut self, cert: &Option<String>, key: &Option<String>, path: &KeyPath) {
        match (cert, key) {
            (Some(_), None) => self.report(
                Problem::Missing,
                path.key("client_key_file"),
                "`client_cert_file` needs `client_key_file`",
            ),
            (None, Some(_)) => self.report(
                Problem::Missing,
                path.key("client_cert_file"),
                "`client_key_file` needs `client_cert_file`",
            ),
            _ => {}
        }
    }

    /// An MQTT topic prefix messages are published under.
    fn topic_prefix(&mut self, prefix: &str, path: KeyPath) {
        if prefix.trim().is_empty() || prefix.contains(['+', '#']) {
            self.report(
                Problem::Value,
                path,
                format!(
                    "`{prefix}` is not a topic prefix: it must be non-empty, without `+` or `#`"
                ),
            );
        }
    }

    fn finite(&mut self, value: f64, path: KeyPath) -> bool {
        if value.is_finite() {
            true
        } else {
            self.report(
                Problem::Value,
                path,
                format!("must be a finite number, not {value}"),
            );
            false
        }
    }
}

/// Runs every semantic check and returns all problems found.
pub(crate) fn validate(config: &Config, origins: &Origins) -> Vec<Diagnostic> {
    let mut c = Checker {
        config,
        origins,
        out: Vec::new(),
    };
    check_site(&mut c);
    check_hazard_sources(&mut c);
    check_devices(&mut c);
    for i in 0..config.points.len() {
        check_point(&mut c, i);
    }
    check_duplicates(&mut c);
    check_overlaps(&mut c);
    check_storage(&mut c);
    check_sinks(&mut c);
    check_uplink(&mut c);
    check_api(&mut c);
    check_alarm_rate(&mut c);
    check_actions(&mut c);
    check_linkage(&mut c);
    c.out
}

fn check_site(c: &mut Checker) {
    if !c.origins.site_known {
        return;
    }
    let site = KeyPath::root().key("site");
    c.non_empty(&c.config.site.id.clone(), site.key("id"));
    c.non_empty(&c.config.site.name.clone(), site.key("name"));
    c.non_empty(
        &c.config.site.rule_profile.clone(),
        site.key("rule_profile"),
    );
}

fn check_duplicates(c: &mut Checker) {
    let config = c.config;
    let sources = config.hazard_sources.iter().map(|h| h.id.as_str());
    duplicate_ids(c, "hazard source", sources, Origins::hazard_source);
    let devices = config.devices.iter().map(|d| d.id.as_str());
    duplicate_ids(c, "device", devices, Origins::device);
    let points = config.points.iter().map(|p| p.id.as_str());
    duplicate_ids(c, "point", points, Origins::point);
    let actions = config.actions.iter().map(|a| a.id.as_str());
    duplicate_ids(c, "safety action", actions, Origins::action);
    let linkage = config.linkage.iter().map(|l| l.id.as_str());
    duplicate_ids(c, "linkage", linkage, Origins::linkage);
}

/// Report every id that repeats an earlier one, at the repeat, naming the first place.
fn duplicate_ids<'a>(
    c: &mut Checker,
    what: &str,
    ids: impl Iterator<Item = &'a str>,
    place: fn(&Origins, usize) -> KeyPath,
) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids.enumerate() {
        if let Some(first) = seen.insert(id, i) {
            let first = place(c.origins, first);
            c.report(
                Problem::Duplicate,
                place(c.origins, i).key("id"),
                format!("duplicate {what} id `{id}` (first used at {first})"),
            );
        }
    }
}

fn check_hazard_sources(c: &mut Checker) {
    for (i, source) in c.config.hazard_sources.iter().enumerate() {
        let path = c.origins.hazard_source(i);
        c.non_empty(&source.id, path.key("id"));
        if !(1..=4).contains(&source.grade) {
            c.report(
                Problem::Value,
                path.key("grade"),
                format!(
                    "grade {} is not a GB 18218 grade: expected 1 (一级) to 4 (四级)",
                    source.grade
                ),
            );
        }
        if let Some(interval) = source.poll_interval_ms {
            c.positive(interval, path.key("poll_interval_ms"));
        }
        for (j, rule) in source.rules.iter().enumerate() {
            let rule_path = path.key("rules").index(j);
            if rule.min_points == 0 {
                c.report(
                    Problem::Value,
                    rule_path.key("min_points"),
                    "must be at least 1",
                );
            }
            if rule.colour < rule.min_colour {
                c.report(
                    Problem::Value,
                    rule_path.key("colour"),
                    format!(
                        "colour `{}` is below min_colour `{}`: a rule can only escalate the source's colour",
                        rule.colour, rule.min_colour
                    ),
                );
            }
        }
    }
}

fn check_devices(c: &mut Checker) {
    for (i, device) in c.config.devices.iter().enumerate() {
        let path = c.origins.device(i);
        c.non_empty(&device.id, path.key("id"));
        let protocol = device.protocol;
        let not_for = |c: &mut Checker, present: bool, key: &str| {
            if present {
                c.report(
                    Problem::Binding,
                    path.key(key),
                    format!("`{key}` does not apply to protocol `{}`", protocol.as_str()),
                );
            }
        };
        let tcp = protocol.is_tcp();
        let rtu = protocol == Protocol::ModbusRtu;
        let mqtt = protocol == Protocol::Mqtt;
        not_for(c, !tcp && device.host.is_some(), "host");
        not_for(c, !tcp && device.port.is_some(), "port");
        not_for(c, mqtt && device.unit_id.is_some(), "unit_id");
        not_for(c, !rtu && device.serial_port.is_some(), "serial_port");
        not_for(c, !rtu && device.baud_rate.is_some(), "baud_rate");
        not_for(c, !rtu && device.data_bits.is_some(), "data_bits");
        not_for(c, !rtu && device.parity.is_some(), "parity");
        not_for(c, !rtu && device.stop_bits.is_some(), "stop_bits");
        not_for(c, mqtt && !device.blocks.is_empty(), "blocks");
        not_for(
            c,
            mqtt && device.fast_poll_interval_ms.is_some(),
            "fast_poll_interval_ms",
        );
        not_for(
            c,
            mqtt && device.offline_retry_ms.is_some(),
            "offline_retry_ms",
        );
        not_for(c, !mqtt && device.broker.is_some(), "broker");
        not_for(c, !mqtt && device.topic_prefix.is_some(), "topic_prefix");
        not_for(c, !mqtt && device.client_id.is_some(), "client_id");
        not_for(c, !mqtt && device.username.is_some(), "username");
        not_for(c, !mqtt && device.password.is_some(), "password");
        not_for(c, !mqtt && device.mqtt_version.is_some(), "mqtt_version");
        not_for(c, !mqtt && device.ca_file.is_some(), "ca_file");
        not_for(
            c,
            !mqtt && device.client_cert_file.is_some(),
            "client_cert_file",
        );
        not_for(
            c,
            !mqtt && device.client_key_file.is_some(),
            "client_key_file",
        );
        not_for(c, !mqtt && device.point_topic.is_some(), "point_topic");
        not_for(
            c,
            !mqtt && device.offline_after_ms.is_some(),
            "offline_after_ms",
        );
        not_for(
            c,
            !mqtt && device.max_payload_bytes.is_some(),
            "max_payload_bytes",
        );
        not_for(
            c,
            !mqtt && device.max_json_depth.is_some(),
            "max_json_depth",
        );

        if tcp {
            match &device.host {
                None => c.report(
                    Problem::Missing,
                    path.key("host"),
                    format!("protocol `{}` needs `host`", protocol.as_str()),
                ),
                Some(host) => c.non_empty(host, path.key("host")),
            }
            if device.port == Some(0) {
                c.report(
                    Problem::Value,
                    path.key("port"),
                    "port 0 is not a valid TCP port",
                );
            }
        }
        if rtu {
            match &device.serial_port {
                None => c.report(
                    Problem::Missing,
                    path.key("serial_port"),
                    "protocol `modbus_rtu` needs `serial_port`",
                ),
                Some(port) => c.non_empty(port, path.key("serial_port")),
            }
            if device.baud_rate == Some(0) {
                c.report(
                    Problem::Value,
                    path.key("baud_rate"),
                    "must be greater than 0",
                );
            }
            if !matches!(device.data_bits(), 7 | 8) {
                c.report(Problem::Value, path.key("data_bits"), "expected 7 or 8");
            }
            if !matches!(device.stop_bits(), 1 | 2) {
                c.report(Problem::Value, path.key("stop_bits"), "expected 1 or 2");
            }
        }
        if mqtt {
            match &device.broker {
                None => c.report(
                    Problem::Missing,
                    path.key("broker"),
                    "protocol `mqtt` needs `broker`",
                ),
                Some(url) => {
                    if let Err(message) = check_url(url, &["mqtt", "mqtts"]) {
                        c.report(Problem::Value, path.key("broker"), message);
                    }
                }
            }
            check_mqtt_device(c, device, &path);
        } else {
            if device.unit_id() > 247 {
                c.report(
                    Problem::Value,
                    path.key("unit_id"),
                    format!("unit id {} is above 247", device.unit_id()),
                );
            }
            if device.max_block_registers == 0 || device.max_block_registers > MODBUS_MAX_REGISTERS
            {
                c.report(
                    Problem::ModbusBlock,
                    path.key("max_block_registers"),
                    format!(
                        "{} registers per read is outside 1..={MODBUS_MAX_REGISTERS} (the Modbus limit for 0x03/0x04)",
                        device.max_block_registers
                    ),
                );
            }
            if device.max_block_bits == 0 || device.max_block_bits > MODBUS_MAX_BITS {
                c.report(
                    Problem::ModbusBlock,
                    path.key("max_block_bits"),
                    format!(
                        "{} bits per read is outside 1..={MODBUS_MAX_BITS} (the Modbus limit for 0x01/0x02)",
                        device.max_block_bits
                    ),
                );
            }
            for (j, block) in device.blocks.iter().enumerate() {
                let block_path = path.key("blocks").index(j);
                let (limit, what) = if block.table.is_bits() {
                    (MODBUS_MAX_BITS, "bits")
                } else {
                    (MODBUS_MAX_REGISTERS, "registers")
                };
                if block.count == 0 || block.count > limit {
                    c.report(
                        Problem::ModbusBlock,
                        block_path.key("count"),
                        format!(
                            "a {} block of {} {what} is outside 1..={limit} (the Modbus limit)",
                            block.table.as_str(),
                            block.count
                        ),
                    );
                }
                if u32::from(block.start) + u32::from(block.count) > 65_536 {
                    c.report(
                        Problem::ModbusBlock,
                        block_path.key("count"),
                        format!(
                            "block {}+{} runs past address 65535",
                            block.start, block.count
                        ),
                    );
                }
            }
        }
        if let Some(interval) = device.poll_interval_ms {
            c.positive(interval, path.key("poll_interval_ms"));
        }
        c.positive(device.timeout_ms, path.key("timeout_ms"));
        if let Some(fast) = device.fast_poll_interval_ms {
            c.positive(fast, path.key("fast_poll_interval_ms"));
            let config = c.config;
            let interval = config.device_poll_interval_ms(i);
            if fast > interval {
                c.report(
                    Problem::Value,
                    path.key("fast_poll_interval_ms"),
                    format!("the fast interval ({fast} ms) must not be slower than the poll interval ({interval} ms)"),
                );
            }
            let safety = config.site.kind == SiteKind::CoalMine
                && config
                    .points
                    .iter()
                    .any(|p| p.safety && p.device == device.id);
            if safety && fast > 10_000 {
                c.report(
                    Problem::PollInterval,
                    path.key("fast_poll_interval_ms"),
                    format!("{fast} ms is too slow for an over-limit area of a coal-mine safety device: at most 10000 ms"),
                );
            }
        }
        if !(0.0..=100.0).contains(&device.fast_margin_pct) {
            c.report(
                Problem::Value,
                path.key("fast_margin_pct"),
                format!(
                    "{} is not a percentage of the sensor range (0–100)",
                    device.fast_margin_pct
                ),
            );
        }
        if let Some(retry) = device.offline_retry_ms {
            c.positive(retry, path.key("offline_retry_ms"));
        }
        if device.offline_after_failures == 0 {
            c.report(
                Problem::Value,
                path.key("offline_after_failures"),
                "must be at least 1",
            );
        }
    }
}

fn check_point(c: &mut Checker, i: usize) {
    let config = c.config;
    let point = &config.points[i];
    let path = c.origins.point(i);
    c.non_empty(&point.id, path.key("id"));

    // Sensor range.
    let range_ok = c.finite(point.range_min, path.key("range_min"))
        & c.finite(point.range_max, path.key("range_max"));
    let range_ok = range_ok && {
        if point.range_min >= point.range_max {
            c.report(
                Problem::Range,
                path.key("range_max"),
                format!(
                    "range_max ({}) must be greater than range_min ({})",
                    point.range_max, point.range_min
                ),
            );
            false
        } else {
            true
        }
    };

    // References.
    let device_index = config.devices.iter().position(|d| d.id == point.device);
    if device_index.is_none() && !c.origins.broken_devices.contains(&point.device) {
        c.report(
            Problem::Reference,
            path.key("device"),
            format!("no device with id `{}`", point.device),
        );
    }
    if let Some(source) = &point.hazard_source {
        let known = config.hazard_sources.iter().any(|h| &h.id == source);
        if !known && !c.origins.broken_hazard_sources.contains(source) {
            c.report(
                Problem::Reference,
                path.key("hazard_source"),
                format!("no hazard source with id `{source}`"),
            );
        }
    }

    // Binding against the device's protocol.
    if let Some(device_index) = device_index {
        let device = &config.devices[device_index];
        match (device.protocol.is_modbus(), &point.modbus, &point.mqtt) {
            (true, None, _) => c.report(
                Problem::Binding,
                path.key("modbus"),
                format!(
                    "device `{}` speaks {}: the point needs a [points.modbus] binding",
                    device.id,
                    device.protocol.as_str()
                ),
            ),
            (false, _, None) if device.point_topic.is_none() => c.report(
                Problem::Binding,
                path.key("mqtt"),
                format!(
                    "device `{}` speaks mqtt: the point needs a [points.mqtt] binding",
                    device.id
                ),
            ),
            _ => {}
        }
        if device.protocol.is_modbus() && point.mqtt.is_some() {
            c.report(
                Problem::Binding,
                path.key("mqtt"),
                format!("an MQTT binding on Modbus device `{}`", device.id),
            );
        }
        if !device.protocol.is_modbus() && point.modbus.is_some() {
            c.report(
                Problem::Binding,
                path.key("modbus"),
                format!("a Modbus binding on MQTT device `{}`", device.id),
            );
        }
        // Intervals.
        let device_interval = compile::device_poll_interval_ms(config, device_index);
        if let Some(interval) = point.interval_ms {
            c.positive(interval, path.key("interval_ms"));
            if device.protocol.is_modbus() && interval > 0 && interval < device_interval {
                c.report(
                    Problem::PollInterval,
                    path.key("interval_ms"),
                    format!(
                        "expected interval {interval} ms is shorter than device `{}`'s poll interval {device_interval} ms: the point would go stale between polls",
                        device.id
                    ),
                );
            }
        }
        if c.origins.site_known && config.site.kind == SiteKind::CoalMine && point.safety {
            let effective = point.interval_ms.unwrap_or(device_interval);
            if effective > COAL_MAX_POLL_INTERVAL_MS {
                let (key, from) = match (point.interval_ms, device.poll_interval_ms) {
                    (Some(_), _) => ("interval_ms", "the point's `interval_ms`".to_owned()),
                    (None, Some(_)) => (
                        "device",
                        format!("device `{}`'s `poll_interval_ms`", device.id),
                    ),
                    (None, None) => ("device", format!("device `{}`'s hazard sources", device.id)),
                };
                c.report(
                    Problem::PollInterval,
                    path.key(key),
                    format!(
                        "safety point polled every {effective} ms (from {from}): a coal-mine safety point must be polled at least every {COAL_MAX_POLL_INTERVAL_MS} ms (GB 50581 §3.1.4)"
                    ),
                );
            }
            if point.stale_factor == 0 {
                c.report(
                    Problem::Value,
                    path.key("stale_factor"),
                    "a coal-mine safety point must keep stale detection (stale_factor ≥ 1): an outage is lockout-relevant, not missing data",
                );
            }
        }
    }

    if let Some(binding) = &point.modbus {
        check_modbus_binding(c, binding, &path.key("modbus"));
    }
    if let Some(binding) = &point.mqtt {
        let point_topic = device_index
            .and_then(|d| config.devices[d].point_topic.as_ref())
            .is_some();
        check_mqtt_binding(c, binding, point_topic, &path.key("mqtt"));
    }
    check_thresholds(c, point, &path, range_ok);
    if let Some(rate) = &point.rate {
        let rate_path = path.key("rate");
        if rate.rise_per_h.is_none() && rate.fall_per_h.is_none() {
            c.report(
                Problem::Value,
                rate_path.clone(),
                "a rate rule needs `rise_per_h`, `fall_per_h` or both",
            );
        }
        for (key, value) in [
            ("rise_per_h", rate.rise_per_h),
            ("fall_per_h", rate.fall_per_h),
        ] {
            if let Some(value) = value {
                if c.finite(value, rate_path.key(key)) && value <= 0.0 {
                    c.report(
                        Problem::Value,
                        rate_path.key(key),
                        format!("must be greater than 0, not {value}"),
                    );
                }
            }
        }
        c.positive(rate.window_ms, rate_path.key("window_ms"));
    }
}

/// The MQTT-only device keys: version, TLS files, `point_topic` and limits; and the
/// point keys under a `point_topic`, which must be unique.
fn check_mqtt_device(c: &mut Checker, device: &DeviceConfig, path: &KeyPath) {
    if !matches!(device.mqtt_version(), 3 | 5) {
        c.report(
            Problem::Value,
            path.key("mqtt_version"),
            format!(
                "MQTT version {} is not supported: expected 3 (3.1.1) or 5",
                device.mqtt_version()
            ),
        );
    }
    let tls = device
        .broker
        .as_deref()
        .is_some_and(|b| b.to_ascii_lowercase().starts_with("mqtts://"));
    for (key, value) in [
        ("ca_file", &device.ca_file),
        ("client_cert_file", &device.client_cert_file),
        ("client_key_file", &device.client_key_file),
    ] {
        if let Some(file) = value {
            c.non_empty(file, path.key(key));
            if !tls {
                c.report(
                    Problem::Value,
                    path.key(key),
                    format!("`{key}` needs TLS: write the broker as `mqtts://host:port`"),
                );
            }
        }
    }
    c.cert_and_key(&device.client_cert_file, &device.client_key_file, path);
    if let Some(filter) = &device.point_topic {
        if let Err(message) = crate::sources::mqtt::topic::check_point_topic(filter) {
            c.report(Problem::Value, path.key("point_topic"), message);
        }
        // Keys must be unique among the device's wildcard points.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, point) in c.config.points.iter().enumerate() {
            let binding = point.mqtt.as_ref();
            if point.device != device.id || binding.is_some_and(|b| b.topic.is_some()) {
                continue;
            }
            let key = binding
                .and_then(|b| b.key.as_deref())
                .unwrap_or(point.id.as_str());
            if binding.and_then(|b| b.key.as_ref()).is_none() && point.id.contains(['/', '+', '#'])
            {
                c.report(
                    Problem::Binding,
                    c.origins.point(i).key("id"),
                    format!(
                        "point id `{}` cannot be one level of device `{}`'s `point_topic`: give the point an `mqtt.key`",
                        point.id, device.id
                    ),
                );
            }
            if let Some(first) = seen.insert(key, i) {
                let first = c.origins.point(first);
                c.report(
                    Problem::Duplicate,
                    c.origins.point(i).key("mqtt").key("key"),
                    format!(
                        "`{key}` already names point {first} in device `{}`'s `point_topic`",
                        device.id
                    ),
                );
            }
        }
    }
    if let Some(ms) = device.offline_after_ms {
        c.positive(ms, path.key("offline_after_ms"));
    }
    if let Some(bytes) = device.max_payload_bytes {
        c.positive(u64::from(bytes), path.key("max_payload_bytes"));
    }
    if let Some(depth) = device.max_json_depth {
        if !(1..=128).contains(&depth) {
            c.report(
                Problem::Value,
                path.key("max_json_depth"),
                format!("{depth} is outside 1..=128 (the JSON parser's own limit is 128)"),
            );
        }
    }
}

fn check_modbus_binding(c: &mut Checker, binding: &ModbusBinding, path: &KeyPath) {
    let table = binding.table;
    let data_type = binding.data_type;
    if table.is_bits() != (data_type == DataType::Bool) {
        let expected = if table.is_bits() {
            "only `bool`".to_owned()
        } else {
            "`bit`, `u16`, `i16`, `u32`, `i32`, `u64`, `i64`, `f32` or `f64`".to_owned()
        };
        c.report(
            Problem::ModbusBinding,
            path.key("data_type"),
            format!(
                "data type `{}` cannot be read from the {} table: it holds {expected}",
                data_type.as_str(),
                table.as_str()
            ),
        );
    }
    match (data_type, binding.bit) {
        (DataType::Bit, None) => c.report(
            Problem::ModbusBinding,
            path.key("data_type"),
            "data type `bit` needs `bit` (0–15), the bit number inside the register",
        ),
        (DataType::Bit, Some(bit)) if bit > 15 => c.report(
            Problem::ModbusBinding,
            path.key("bit"),
            format!("bit {bit} does not exist in a 16-bit register: expected 0–15"),
        ),
        (DataType::Bit, Some(_)) => {}
        (_, Some(_)) => c.report(
            Problem::ModbusBinding,
            path.key("bit"),
            format!(
                "`bit` only applies to data type `bit`, not `{}`",
                data_type.as_str()
            ),
        ),
        (_, None) => {}
    }
    if u32::from(binding.address) + u32::from(data_type.width()) > 65_536 {
        c.report(
            Problem::ModbusBinding,
            path.key("address"),
            format!(
                "a {} at address {} runs past address 65535",
                data_type.as_str(),
                binding.address
            ),
        );
    }
    if c.finite(binding.scale, path.key("scale")) && binding.scale == 0.0 {
        c.report(
            Problem::Value,
            path.key("scale"),
            "a scale of 0 would make every reading 0 + offset",
        );
    }
    c.finite(binding.offset, path.key("offset"));
}

fn check_mqtt_binding(
    c: &mut Checker,
    binding: &MqttBinding,
    device_point_topic: bool,
    path: &KeyPath,
) {
    match &binding.topic {
        None if !device_point_topic => c.report(
            Problem::Missing,
            path.key("topic"),
            "needs `topic`, or a `point_topic` on its device",
        ),
        None => {}
        Some(topic) if topic.trim().is_empty() => {
            c.report(Problem::Value, path.key("topic"), "must not be empty")
        }
        Some(topic) if topic.contains(['+', '#']) => c.report(
            Problem::Value,
            path.key("topic"),
            format!("topic `{topic}` contains a wildcard: a point reads one topic"),
        ),
        Some(_) => {}
    }
    if let Some(key) = &binding.key {
        if binding.topic.is_some() {
            c.report(
                Problem::Binding,
                path.key("key"),
                "`key` names the point in its device's `point_topic`; a point with its own `topic` has none",
            );
        } else if !device_point_topic {
            c.report(
                Problem::Binding,
                path.key("key"),
                "`key` needs a `point_topic` on the point's device",
            );
        }
        if key.is_empty() || key.contains(['/', '+', '#']) {
            c.report(
                Problem::Value,
                path.key("key"),
                format!(
                    "`{key}` is not one topic level: it must be non-empty, without `/`, `+` or `#`"
                ),
            );
        }
    }
    let paths = [
        ("value_path", Some(&binding.value_path)),
        ("ts_path", binding.ts_path.as_ref()),
        ("quality_path", binding.quality_path.as_ref()),
    ];
    for (key, value) in paths {
        if let Some(value) = value {
            if value.split('.').any(|part| part.trim().is_empty()) {
                c.report(
                    Problem::Value,
                    path.key(key),
                    format!("`{value}` is not a dotted path like `value` or `data.v`"),
                );
            }
        }
    }
}

fn check_thresholds(c: &mut Checker, point: &PointConfig, path: &KeyPath, range_ok: bool) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    // Last grade seen in each direction: (index, trigger, colour).
    let mut last: [Option<(usize, f64, Colour)>; 2] = [None, None];
    for (j, grade) in point.thresholds.iter().enumerate() {
        let grade_path = path.key("thresholds").index(j);
        if grade.name.trim().is_empty() {
            c.report(Problem::Value, grade_path.key("name"), "must not be empty");
        }
        if let Some(first) = names.insert(&grade.name, j) {
            c.report(
                Problem::Duplicate,
                grade_path.key("name"),
                format!(
                    "duplicate threshold name `{}` in this point (first at thresholds[{first}])",
                    grade.name
                ),
            );
        }
        let trigger_ok = c.finite(grade.trigger, grade_path.key("trigger"));
        let restore_ok = grade
            .restore
            .is_none_or(|r| c.finite(r, grade_path.key("restore")));
        let deadband_ok = grade
            .deadband
            .is_none_or(|d| c.finite(d, grade_path.key("deadband")));
        if let Some(deadband) = grade.deadband {
            if deadband < 0.0 {
                c.report(
                    Problem::Value,
                    grade_path.key("deadband"),
                    format!("must be ≥ 0, not {deadband}"),
                );
            }
        }
        if grade.restore.is_some() && grade.deadband.is_some() {
            c.report(
                Problem::Restore,
                grade_path.key("deadband"),
                "give either `restore` or `deadband`, not both",
            );
        }

        // Power cut: must act within 2 s, restore set by the rule, never by a default.
        if grade.power_cut {
            for (key, delay) in [
                ("on_delay_ms", grade.on_delay_ms),
                ("off_delay_ms", grade.off_delay_ms),
            ] {
                if delay > 0 {
                    c.report(
                        Problem::PowerCut,
                        grade_path.key(key),
                        format!("a power-cut grade cannot have a delay ({delay} ms): the cut must act within 2 s (GB 50581)"),
                    );
                }
            }
            if grade.deadband.is_some() {
                c.report(
                    Problem::PowerCut,
                    grade_path.key("deadband"),
                    "a power-cut grade cannot have a deadband: give its `restore` value from the rule (e.g. cut at 1.5, restore below 1.0)",
                );
            }
            if grade.restore.is_none() {
                c.report(
                    Problem::PowerCut,
                    grade_path.clone(),
                    "a power-cut grade needs an explicit `restore` (the rule sets it per location, e.g. restore below 1.0 %CH4)",
                );
            }
        }

        if !(trigger_ok && restore_ok && deadband_ok) {
            continue;
        }
        let restore = grade.effective_restore();
        let wrong_side = match grade.direction {
            Direction::High => restore > grade.trigger,
            Direction::Low => restore < grade.trigger,
        };
        if wrong_side {
            let (key, side) = match grade.direction {
                Direction::High => ("at or below", "high"),
                Direction::Low => ("at or above", "low"),
            };
            let at = if grade.restore.is_some() {
                "restore"
            } else {
                "deadband"
            };
            c.report(
                Problem::Restore,
                grade_path.key(at),
                format!(
                    "restore {restore} is on the wrong side of trigger {}: a {side} grade restores {key} its trigger",
                    grade.trigger
                ),
            );
        }
        if range_ok {
            for (key, value) in [("trigger", grade.trigger), ("restore", restore)] {
                if value < point.range_min || value > point.range_max {
                    let key = if key == "restore" && grade.restore.is_none() {
                        "deadband"
                    } else {
                        key
                    };
                    c.report(
                        Problem::Range,
                        grade_path.key(key),
                        format!(
                            "{value} is outside the sensor range {}..{} {}",
                            point.range_min, point.range_max, point.unit
                        )
                        .trim_end()
                        .to_owned(),
                    );
                }
            }
        }

        let slot = match grade.direction {
            Direction::High => 0,
            Direction::Low => 1,
        };
        if let Some((previous, previous_trigger, previous_colour)) = last[slot] {
            let previous_name = &point.thresholds[previous].name;
            // Equal triggers are allowed when the later grade is more severe: a
            // return airway alarms and cuts at the same 1.0 % (DOMAIN.md §1.1).
            let more_severe = grade.power_cut || grade.colour > previous_colour;
            let ordered = match grade.direction {
                Direction::High => {
                    grade.trigger > previous_trigger
                        || (grade.trigger == previous_trigger && more_severe)
                }
                Direction::Low => {
                    grade.trigger < previous_trigger
                        || (grade.trigger == previous_trigger && more_severe)
                }
            };
            if !ordered {
                let (word, verb) = match grade.direction {
                    Direction::High => ("above", "rise"),
                    Direction::Low => ("below", "fall"),
                };
                c.report(
                    Problem::GradeOrder,
                    grade_path.key("trigger"),
                    format!(
                        "grade `{}` (trigger {}) must be {word} the previous {} grade `{previous_name}` (trigger {previous_trigger}), or equal to it with a power cut or a more severe colour: list grades least severe first, triggers must {verb}",
                        grade.name,
                        grade.trigger,
                        if slot == 0 { "high" } else { "low" },
                    ),
                );
            }
            if grade.colour < previous_colour {
                c.report(
                    Problem::GradeOrder,
                    grade_path.key("colour"),
                    format!(
                        "colour `{}` is less severe than `{previous_colour}` of the previous grade `{previous_name}`: colours must not drop as grades get more severe",
                        grade.colour
                    ),
                );
            }
        }
        last[slot] = Some((j, grade.trigger, grade.colour));
    }
}

/// One point's claim on a device's address space.
struct Claim {
    point: usize,
    table: RegisterTable,
    start: u32,
    end: u32,
    data_type: DataType,
    byte_order: ByteOrder,
    bit: Option<u8>,
}

fn check_overlaps(c: &mut Checker) {
    let config = c.config;
    let mut by_device: HashMap<&str, Vec<Claim>> = HashMap::new();
    for (i, point) in config.points.iter().enumerate() {
        if let Some(binding) = &point.modbus {
            let start = u32::from(binding.address);
            by_device
                .entry(point.device.as_str())
                .or_default()
                .push(Claim {
                    point: i,
                    table: binding.table,
                    start,
                    end: start + u32::from(binding.data_type.width()),
                    data_type: binding.data_type,
                    byte_order: binding.byte_order,
                    bit: binding.bit,
                });
        }
    }
    let mut devices: Vec<_> = by_device.into_iter().collect();
    devices.sort_by_key(|(device, _)| *device);
    for (device, mut claims) in devices {
        claims.sort_by_key(|claim| (claim.table, claim.start, claim.point));
        for (k, a) in claims.iter().enumerate() {
            for b in claims[k + 1..].iter() {
                if b.table != a.table || b.start >= a.end {
                    break;
                }
                let same_read = a.start == b.start
                    && a.end == b.end
                    && a.data_type == b.data_type
                    && (a.data_type.width() == 1 || a.byte_order == b.byte_order);
                // Two bits of one register, or the same value read twice: fine.
                if same_read
                    || (a.data_type == DataType::Bit
                        && b.data_type == DataType::Bit
                        && a.start == b.start)
                {
                    continue;
                }
                let (first, second) = if a.point < b.point { (a, b) } else { (b, a) };
                let first_point = &config.points[first.point];
                let describe = |claim: &Claim| {
                    let bit = claim
                        .bit
                        .map(|bit| format!(" bit {bit}"))
                        .unwrap_or_default();
                    let order = if claim.data_type.width() > 1 {
                        format!(" {}", claim.byte_order.as_str())
                    } else {
                        String::new()
                    };
                    let last = claim.end - 1;
                    let span = if last == claim.start {
                        format!("{}", claim.start)
                    } else {
                        format!("{}..={last}", claim.start)
                    };
                    format!(
                        "{} {span} as {}{order}{bit}",
                        claim.table.as_str(),
                        claim.data_type.as_str()
                    )
                };
                c.report(
                    Problem::AddressOverlap,
                    c.origins.point(second.point).key("modbus").key("address"),
                    format!(
                        "on device `{device}`, {} overlaps point `{}` ({}) with a different type",
                        describe(second),
                        first_point.id,
                        describe(first),
                    ),
                );
            }
        }
    }
}

fn check_storage(c: &mut Checker) {
    let storage = &c.config.storage;
    let path = KeyPath::root().key("storage");
    c.non_empty(&storage.path, path.key("path"));
    c.positive(storage.heartbeat_s, path.key("heartbeat_s"));
    if let Some(mb) = storage.max_size_mb {
        if mb < 16 {
            c.report(
                Problem::Value,
                path.key("max_size_mb"),
                format!("{mb} MB leaves no room for alarms and audit: at least 16"),
            );
        }
    }
    if !c.origins.site_known {
        return;
    }
    let (raw_min, event_min, why) = match c.config.site.kind {
        SiteKind::CoalMine => (
            7,
            365,
            "AQ 6201-2019: real-time values ≥ 7 days, alarms and cuts ≥ 1 year",
        ),
        SiteKind::ChemicalPlant => (30, 30, "总局令40号: electronic records ≥ 30 days"),
    };
    if storage.raw_retention_days < raw_min {
        c.report(
            Problem::Value,
            path.key("raw_retention_days"),
            format!(
                "{} days is below the minimum {raw_min} ({why})",
                storage.raw_retention_days
            ),
        );
    }
    if storage.event_retention_days < event_min {
        c.report(
            Problem::Value,
            path.key("event_retention_days"),
            format!(
                "{} days is below the minimum {event_min} ({why})",
                storage.event_retention_days
            ),
        );
    }
}

fn check_sinks(c: &mut Checker) {
    let Some(influx) = &c.config.sinks.influxdb else {
        return;
    };
    let path = KeyPath::root().key("sinks").key("influxdb");
    if let Err(message) = check_url(&influx.url, &["http", "https"]) {
        c.report(Problem::Value, path.key("url"), message);
    }
    type Keys<'a> = &'a [(&'a str, &'a Option<String>)];
    let (needed, foreign, api): (Keys, Keys, &str) = match influx.api {
        InfluxApi::V2 => (
            &[("org", &influx.org), ("bucket", &influx.bucket)],
            &[
                ("database", &influx.database),
                ("retention_policy", &influx.retention_policy),
                ("username", &influx.username),
                ("password", &influx.password),
            ],
            "v2",
        ),
        InfluxApi::V1 => (
            &[("database", &influx.database)],
            &[
                ("org", &influx.org),
                ("bucket", &influx.bucket),
                ("token", &influx.token),
            ],
            "v1",
        ),
    };
    for (key, value) in needed {
        match value {
            None => c.report(
                Problem::Missing,
                path.key(key),
                format!("api `{api}` needs `{key}`"),
            ),
            Some(value) => c.non_empty(value, path.key(key)),
        }
    }
    for (key, value) in foreign {
        if value.is_some() {
            c.report(
                Problem::Value,
                path.key(key),
                format!("`{key}` does not apply to api `{api}`"),
            );
        }
    }
    c.positive(u64::from(influx.batch_size), path.key("batch_size"));
    c.positive(influx.flush_interval_ms, path.key("flush_interval_ms"));
}

fn check_uplink(c: &mut Checker) {
    let Some(uplink) = &c.config.uplink else {
        return;
    };
    let path = KeyPath::root().key("uplink");
    let schemes: &[&str] = match uplink.transport {
        UplinkTransport::Mqtt => &["mqtt", "mqtts"],
        UplinkTransport::Https => &["https"],
    };
    if let Err(message) = check_url(&uplink.url, schemes) {
        c.report(Problem::Value, path.key("url"), message);
    }
    if let Some(code) = &uplink.site_code {
        c.non_empty(code, path.key("site_code"));
    }
    c.positive(
        uplink.realtime_interval_ms,
        path.key("realtime_interval_ms"),
    );
    c.positive(
        u64::from(uplink.realtime_batch_max),
        path.key("realtime_batch_max"),
    );
    c.positive(uplink.retry_max_ms, path.key("retry_max_ms"));
    c.positive(uplink.request_timeout_ms, path.key("request_timeout_ms"));
    if !(-720..=840).contains(&uplink.utc_offset_min) {
        c.report(
            Problem::Value,
            path.key("utc_offset_min"),
            format!(
                "{} minutes is not a UTC offset: expected -720 to 840 (480 = Beijing time)",
                uplink.utc_offset_min
            ),
        );
    }
    c.topic_prefix(&uplink.topic_prefix, path.key("topic_prefix"));
    if let Some(id) = &uplink.client_id {
        c.non_empty(id, path.key("client_id"));
    }
    c.cert_and_key(&uplink.client_cert_file, &uplink.client_key_file, &path);
    let sm4 = [
        ("sm4_key_hex", &uplink.sm4_key_hex),
        ("sm4_iv_hex", &uplink.sm4_iv_hex),
    ];
    for (key, value) in sm4 {
        let Some(v) = value else { continue };
        if uplink.transport != UplinkTransport::Https {
            c.report(
                Problem::Value,
                path.key(key),
                "SM4 body encryption applies to `transport = \"https\"` only",
            );
        } else if v.len() != 32 || !v.chars().all(|ch| ch.is_ascii_hexdigit()) {
            c.report(
                Problem::Value,
                path.key(key),
                "must be 32 hex digits (16 bytes), as issued by the platform",
            );
        }
    }
    match (&uplink.sm4_key_hex, &uplink.sm4_iv_hex) {
        (Some(_), None) => c.report(
            Problem::Missing,
            path.key("sm4_iv_hex"),
            "`sm4_key_hex` needs `sm4_iv_hex`",
        ),
        (None, Some(_)) => c.report(
            Problem::Missing,
            path.key("sm4_key_hex"),
            "`sm4_iv_hex` needs `sm4_key_hex`",
        ),
        _ => {}
    }
    if uplink.transport == UplinkTransport::Https {
        for (key, value) in [
            ("username", &uplink.username),
            ("password", &uplink.password),
        ] {
            if value.is_some() {
                c.report(
                    Problem::Value,
                    path.key(key),
                    "applies to `transport = \"mqtt\"` only (HTTPS uses `appid`/`appsecret`)",
                );
            }
        }
    }
}

fn check_api(c: &mut Checker) {
    let api = &c.config.api;
    let path = KeyPath::root().key("api");
    if api.listen.parse::<std::net::SocketAddr>().is_err() {
        c.report(
            Problem::Value,
            path.key("listen"),
            format!(
                "`{}` is not a socket address like 127.0.0.1:8080 or [::1]:8080",
                api.listen
            ),
        );
    }
    let mut readable = true;
    for (key, file) in [("tls_cert", &api.tls_cert), ("tls_key", &api.tls_key)] {
        let Some(file) = file else { continue };
        if file.trim().is_empty() {
            c.non_empty(file, path.key(key));
            readable = false;
        } else if let Err(e) = std::fs::File::open(file) {
            c.report(
                Problem::Value,
                path.key(key),
                format!("cannot read `{file}`: {e}"),
            );
            readable = false;
        }
    }
    match (&api.tls_cert, &api.tls_key) {
        (Some(_), None) => c.report(
            Problem::Missing,
            path.key("tls_key"),
            "`tls_cert` needs `tls_key` (the certificate's private key)",
        ),
        (None, Some(_)) => c.report(
            Problem::Missing,
            path.key("tls_cert"),
            "`tls_key` needs `tls_cert`",
        ),
        (Some(cert), Some(key)) if readable => {
            if let Err(e) = crate::tls::server_config(cert, key) {
                c.report(Problem::Value, path.key("tls_cert"), e.to_string());
            }
        }
        _ => {}
    }
    if !(api.rate_limit_per_s.is_finite() && api.rate_limit_per_s >= 0.0) {
        c.report(
            Problem::Value,
            path.key("rate_limit_per_s"),
            format!(
                "must be a number of requests per second ≥ 0 (0 turns the limit off), found {}",
                api.rate_limit_per_s
            ),
        );
    }
    if api.rate_limit_burst == 0 {
        c.report(
            Problem::Value,
            path.key("rate_limit_burst"),
            "must be at least 1",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut hashes: HashMap<String, usize> = HashMap::new();
    for (i, token) in api.tokens.iter().enumerate() {
        let token_path = path.key("tokens").index(i);
        c.non_empty(&token.name, token_path.key("name"));
        if let Some(first) = names.insert(&token.name, i) {
            c.report(
                Problem::Duplicate,
                token_path.key("name"),
                format!(
                    "duplicate token name `{}` (first at api.tokens[{first}])",
                    token.name
                ),
            );
        }
        if token.sha256.len() != 64 || !token.sha256.chars().all(|ch| ch.is_ascii_hexdigit()) {
            c.report(
                Problem::Value,
                token_path.key("sha256"),
                format!(
                    "expected the SHA-256 of the token as 64 hex digits, found {} characters",
                    token.sha256.chars().count()
                ),
            );
        } else if let Some(first) = hashes.insert(token.sha256.to_ascii_lowercase(), i) {
            c.report(
                Problem::Duplicate,
                token_path.key("sha256"),
                format!("the same token as api.tokens[{first}]"),
            );
        }
    }
}

fn check_alarm_rate(c: &mut Checker) {
    let rate = &c.config.alarm_rate;
    let path = KeyPath::root().key("alarm_rate");
    if rate.flood_start_per_10min == 0 {
        c.report(
            Problem::Value,
            path.key("flood_start_per_10min"),
            "must be at least 1",
        );
    }
    if rate.flood_end_per_10min > rate.flood_start_per_10min {
        c.report(
            Problem::Value,
            path.key("flood_end_per_10min"),
            format!(
                "a flood cannot end above where it starts ({} > {})",
                rate.flood_end_per_10min, rate.flood_start_per_10min
            ),
        );
    }
    if rate.chatter_count == 0 {
        c.report(
            Problem::Value,
            path.key("chatter_count"),
            "must be at least 1",
        );
    }
    c.positive(rate.chatter_window_ms, path.key("chatter_window_ms"));
}

/// A light URL check (no URL library): `scheme://host[:port][/path]` with an allowed
/// scheme and a non-empty host.
/// Safety actions: every reference resolves, every trigger can reach the cut grade,
/// and every relay is a writable address that a point describes.
fn check_actions(c: &mut Checker) {
    let config = c.config;
    // (device, table, address) → the action that drives it first.
    let mut driven: HashMap<(&str, RegisterTable, u16), KeyPath> = HashMap::new();
    for (i, action) in config.actions.iter().enumerate() {
        let path = c.origins.action(i);
        c.non_empty(&action.id, path.key("id"));
        if action.id.contains(char::is_whitespace) {
            c.report(
                Problem::Value,
                path.key("id"),
                "must not contain spaces (it names the points `cut:<id>` and `action:<id>`)",
            );
        }
        if action.triggers.is_empty() && action.hazard_source.is_none() {
            c.report(
                Problem::Missing,
                path.key("triggers"),
                "an action needs `triggers` (point ids) or a `hazard_source`",
            );
        }
        for (j, trigger) in action.triggers.iter().enumerate() {
            let at = path.key("triggers").index(j);
            match config.points.iter().find(|p| &p.id == trigger) {
                Some(point) => check_trigger_grade(c, point, action, at),
                None if c.origins.broken_points.contains(trigger) => {}
                None => c.report(
                    Problem::Reference,
                    at,
                    format!("no point with id `{trigger}`"),
                ),
            }
        }
        if let Some(source) = &action.hazard_source {
            let at = path.key("hazard_source");
            if !config.hazard_sources.iter().any(|h| &h.id == source) {
                if !c.origins.broken_hazard_sources.contains(source) {
                    c.report(
                        Problem::Reference,
                        at,
                        format!("no hazard source with id `{source}`"),
                    );
                }
            } else if !config
                .points
                .iter()
                .any(|p| p.hazard_source.as_ref() == Some(source) && has_cut_grade(p, action))
            {
                c.report(
                    Problem::Action,
                    at,
                    format!(
                        "no point of hazard source `{source}` has {}: the action could never cut",
                        grade_wanted(action)
                    ),
                );
            }
        }
        if action.relays.is_empty() {
            c.report(
                Problem::Missing,
                path.key("relays"),
                "an action needs at least one [[actions.relays]] to write",
            );
        }
        for (k, relay) in action.relays.iter().enumerate() {
            let at = path.key("relays").index(k);
            check_relay(c, relay, &at);
            if let Some(first) =
                driven.insert((&relay.device, relay.table, relay.address), at.clone())
            {
                c.report(
                    Problem::Action,
                    at.key("address"),
                    format!(
                        "{} {} on device `{}` is already driven by {first}: two actions would fight over one switch",
                        relay.table.as_str(),
                        relay.address,
                        relay.device
                    ),
                );
                driven.insert((&relay.device, relay.table, relay.address), first);
            }
        }
    }
}

fn grade_wanted(action: &ActionConfig) -> String {
    match &action.grade {
        Some(name) => format!("grade named `{name}`"),
        None => "power-cut grade (power_cut = true)".to_owned(),
    }
}

/// Whether any of `point`'s thresholds makes `action` cut.
fn has_cut_grade(point: &PointConfig, action: &ActionConfig) -> bool {
    let grades = point
        .thresholds
        .iter()
        .map(|t| (t.name.as_str(), t.direction, t.trigger, t.power_cut));
    !crate::actions::build::cut_grades(grades, action.grade.as_deref()).is_empty()
}

fn check_trigger_grade(c: &mut Checker, point: &PointConfig, action: &ActionConfig, at: KeyPath) {
    if !has_cut_grade(point, action) {
        c.report(
            Problem::Action,
            at,
            format!(
                "point `{}` has no {}: the action could never cut",
                point.id,
                grade_wanted(action)
            ),
        );
    }
}

fn check_relay(c: &mut Checker, relay: &RelayConfig, at: &KeyPath) {
    let config = c.config;
    let device = config.devices.iter().find(|d| d.id == relay.device);
    match device {
        None if c.origins.broken_devices.contains(&relay.device) => {}
        None => c.report(
            Problem::Reference,
            at.key("device"),
            format!("no device with id `{}`", relay.device),
        ),
        Some(d) if !d.protocol.is_modbus() => c.report(
            Problem::Action,
            at.key("device"),
            format!(
                "device `{}` is an MQTT device: a relay must be a Modbus coil or holding register",
                d.id
            ),
        ),
        Some(_) => {}
    }
    let writable = matches!(relay.table, RegisterTable::Coil | RegisterTable::Holding);
    if !writable {
        c.report(
            Problem::Action,
            at.key("table"),
            format!(
                "{} is a read-only area: a relay is written as a `coil` (function code 5) or a `holding` register (function code 6)",
                relay.table.as_str()
            ),
        );
    }
    if relay.table == RegisterTable::Coil {
        for (key, v) in [
            ("cut_value", relay.cut_value),
            ("restore_value", relay.restore_value),
        ] {
            if v > 1 {
                c.report(
                    Problem::Value,
                    at.key(key),
                    format!("a coil is 0 or 1, not {v}"),
                );
            }
        }
    }
    if relay.cut_value == relay.restore_value {
        c.report(
            Problem::Value,
            at.key("restore_value"),
            format!(
                "restore_value equals cut_value ({}): the relay could never be told apart",
                relay.cut_value
            ),
        );
    }
    if let Some(timeout) = relay.feedback_timeout_ms {
        c.positive(timeout, at.key("feedback_timeout_ms"));
    }
    if device.is_some_and(|d| d.protocol.is_modbus()) && writable {
        let described = config.points.iter().any(|p| {
            p.device == relay.device
                && p.modbus.as_ref().is_some_and(|b| {
                    b.table == relay.table
                        && b.address <= relay.address
                        && u32::from(relay.address)
                            < u32::from(b.address) + u32::from(b.data_type.width())
                })
        });
        if !described {
            c.report(
                Problem::Action,
                at.key("address"),
                format!(
                    "no point describes {} {} on device `{}`: add a point that reads it back, so the written address is the one the configuration knows",
                    relay.table.as_str(),
                    relay.address,
                    relay.device
                ),
            );
        }
    }
    if let Some(feedback) = &relay.feedback {
        let known = config.points.iter().any(|p| &p.id == feedback);
        if !known && !c.origins.broken_points.contains(feedback) {
            c.report(
                Problem::Reference,
                at.key("feedback"),
                format!("no point with id `{feedback}`"),
            );
        }
    }
}

fn check_linkage(c: &mut Checker) {
    let config = c.config;
    for (i, l) in config.linkage.iter().enumerate() {
        let path = c.origins.linkage(i);
        c.non_empty(&l.id, path.key("id"));
        if let Err(e) = check_url(&l.url, &["mqtt", "mqtts", "http", "https"]) {
            c.report(Problem::Value, path.key("url"), e);
        }
        if l.on.is_empty() {
            c.report(
                Problem::Value,
                path.key("on"),
                "must name at least one of `over_limit`, `cut`, `feed_fault`",
            );
        }
        for (j, p) in l.points.iter().enumerate() {
            let known = config.points.iter().any(|x| &x.id == p);
            if !known && !c.origins.broken_points.contains(p) {
                c.report(
                    Problem::Reference,
                    path.key("points").index(j),
                    format!("no point with id `{p}`"),
                );
            }
        }
        c.topic_prefix(&l.topic_prefix, path.key("topic_prefix"));
        c.positive(l.request_timeout_ms, path.key("request_timeout_ms"));
    }
}

fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{url}` is not a URL: expected {}://host…",
            schemes.join("://, ")
        ));
    };
    if !schemes.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "URL scheme `{scheme}` is not allowed here: expected one of {}",
            schemes.join(", ")
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, after)) => (host, after.strip_prefix(':')),
            None => return Err(format!("`{url}` has an unclosed `[`")),
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(format!("`{port}` in `{url}` is not a port number"));
        }
    }
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_url;

    #[test]
    fn urls() {
        assert!(check_url("http://localhost:8086", &["http", "https"]).is_ok());
        assert!(check_url("https://influx.example/api", &["http", "https"]).is_ok());
        assert!(check_url("ftp://x", &["http"]).is_err());
        assert!(check_url("http://", &["http"]).is_err());
        assert!(check_url("localhost:8086", &["http"]).is_err());
        assert!(check_url("http://h:99999", &["http"]).is_err());
        assert!(check_url("mqtts://[::1]:8883", &["mqtts"]).is_ok());
    }
}
