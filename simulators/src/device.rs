//! One simulated Modbus device, IO-free: request PDU + scenario time → response PDU.
//!
//! Order of checks for a request: exception rules on demand (time window, function,
//! table, address overlap) → protocol parsing (01 / 02 / 03) → the register map
//! (unmapped → 02 unless the device maps unmapped addresses to zero) → the answer.
//! Written coils and holding registers keep the written raw value until the farm
//! stops. A relay's feed-status input is computed from the time its coil last
//! changed, so the delay needs no timer.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::codec::{encode, DataType, WordOrder};
use crate::pdu::{self, ExceptionCode, Request, Table};
use crate::scenario::{in_window, DeviceSpec, OfflineMode, UnmappedPolicy};
use crate::signal::Signals;

#[derive(Debug, Clone, Copy)]
struct Slot {
    point: usize,
    word: u8,
}

#[derive(Debug, Clone, Copy, Default)]
struct RelayState {
    coil_on: bool,
    /// Scenario time of the last change of the coil; `None` if never written.
    changed_at_s: Option<f64>,
}

/// Request counters of one device.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counters {
    /// Requests addressed to the device.
    pub requests: u64,
    /// Normal answers.
    pub responses: u64,
    /// Exception answers.
    pub exceptions: u64,
    /// Requests not answered because the device was offline (silent).
    pub unanswered: u64,
    /// Write requests accepted.
    pub writes: u64,
}

/// A device: its spec, register map and mutable state.
#[derive(Debug, Clone)]
pub struct Device {
    spec: DeviceSpec,
    maps: [BTreeMap<u16, Slot>; 4],
    point_signal: Vec<Option<usize>>,
    written: HashMap<(Table, u16), u16>,
    relays: Vec<RelayState>,
    relay_coil: HashMap<u16, usize>,
    relay_feed: HashMap<u16, usize>,
    counters: Counters,
}

fn table_index(t: Table) -> usize {
    match t {
        Table::Coils => 0,
        Table::DiscreteInputs => 1,
        Table::HoldingRegisters => 2,
        Table::InputRegisters => 3,
    }
}

/// Live view of one point, for the status surface.
#[derive(Debug, Clone, Serialize)]
pub struct PointStatus {
    /// Point id.
    pub id: String,
    /// Table name.
    pub table: &'static str,
    /// First address.
    pub address: u16,
    /// Data type.
    #[serde(rename = "type")]
    pub data_type: DataType,
    /// Word order.
    pub order: WordOrder,
    /// Engineering value now (written holding registers are not reflected).
    pub value: f64,
    /// Fault overlays active now.
    pub faults: Vec<&'static str>,
}

/// Live view of one relay.
#[derive(Debug, Clone, Serialize)]
pub struct RelayStatus {
    /// Relay id.
    pub id: String,
    /// Coil address.
    pub coil: u16,
    /// Feed-status input address.
    pub feed_input: u16,
    /// Cut command is ON.
    pub coil_on: bool,
    /// Feed present (馈电有电).
    pub feed_on: bool,
    /// The relay ignores its coil.
    pub faulty: bool,
}

/// Live view of one device.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// Device id.
    pub id: String,
    /// Unit id.
    pub unit_id: u8,
    /// Endpoint name.
    pub endpoint: String,
    /// Offline now, and how.
    pub offline: Option<OfflineMode>,
    /// Real milliseconds of delay per answer.
    pub response_delay_ms: u64,
    /// Exception rules active now (indexes into the device's `exceptions`).
    pub exception_rules_active: Vec<usize>,
    /// Counters since start.
    pub counters: Counters,
    /// Points.
    pub points: Vec<PointStatus>,
    /// Relays.
    pub relays: Vec<RelayStatus>,
}

impl Device {
    /// Build a device from a validated spec.
    pub fn new(spec: &DeviceSpec, signals: &Signals) -> Device {
        let mut maps: [BTreeMap<u16, Slot>; 4] = Default::default();
        for (k, pt) in spec.points.iter().enumerate() {
            let words = if pt.table.is_bits() {
                1
            } else {
                pt.data_type().register_count()
            };
            for w in 0..words {
                maps[table_index(pt.table)].insert(
                    pt.address.wrapping_add(w),
                    Slot {
                        point: k,
                        word: w as u8,
                    },
                );
            }
        }
        let point_signal = spec
            .points
            .iter()
            .map(|p| p.signal.as_deref().and_then(|s| signals.index(s)))
            .collect();
        Device {
            spec: spec.clone(),
            maps,
            point_signal,
            written: HashMap::new(),
            relays: vec![RelayState::default(); spec.relays.len()],
            relay_coil: spec
                .relays
                .iter()
                .enumerate()
                .map(|(i, r)| (r.coil, i))
                .collect(),
            relay_feed: spec
                .relays
                .iter()
                .enumerate()
                .map(|(i, r)| (r.feed_input, i))
                .collect(),
            counters: Counters::default(),
        }
    }

    /// The spec.
    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How the device is offline at `t`, if it is.
    pub fn offline_mode(&self, t: f64) -> Option<OfflineMode> {
        self.spec
            .offline
            .iter()
            .find(|w| in_window(t, w.from_s, w.to_s))
            .map(|w| w.mode)
    }

    /// Count a request that is not answered (offline, silent).
    pub fn count_unanswered(&mut self) {
        self.counters.requests += 1;
        self.counters.unanswered += 1;
    }

    /// Engineering value of point `k` at `t`.
    pub fn point_value(&self, k: usize, t: f64, signals: &Signals) -> f64 {
        match (
            self.point_signal.get(k).copied().flatten(),
            self.spec.points.get(k),
        ) {
            (Some(s), _) => signals.value(s, t),
            (None, Some(p)) => p.value.unwrap_or(0.0),
            (None, None) => 0.0,
        }
    }

    fn feed_on(&self, relay: usize, t: f64) -> bool {
        let (Some(spec), Some(state)) = (self.spec.relays.get(relay), self.relays.get(relay))
        else {
            return true;
        };
        match (spec.faulty, state.coil_on, state.changed_at_s) {
            (true, _, _) | (false, false, None) => true,
            // Cut commanded: the feed drops once the delay has passed.
            (false, true, Some(c)) => (t - c) * 1000.0 < spec.cut_delay_ms as f64,
            // Restore commanded: the feed returns after the delay.
            (false, false, Some(c)) => (t - c) * 1000.0 >= spec.restore_delay_ms as f64,
            (false, true, None) => false,
        }
    }

    fn read_bit(&self, table: Table, addr: u16, t: f64, signals: &Signals) -> Option<bool> {
        if table == Table::Coils {
            if let Some(&r) = self.relay_coil.get(&addr) {
                return self.relays.get(r).map(|s| s.coil_on);
            }
        } else if let Some(&r) = self.relay_feed.get(&addr) {
            return Some(self.feed_on(r, t));
        }
        if let Some(v) = self.written.get(&(table, addr)) {
            return Some(*v != 0);
        }
        match self.maps[table_index(table)].get(&addr) {
            Some(slot) => {
                let v = self.point_value(slot.point, t, signals);
                Some(v != 0.0 && !v.is_nan())
            }
            None => match self.spec.unmapped {
                UnmappedPolicy::Zero => Some(false),
                UnmappedPolicy::Exception => None,
            },
        }
    }

    fn read_registers(
        &self,
        table: Table,
        address: u16,
        quantity: u16,
        t: f64,
        signals: &Signals,
        out: &mut Vec<u16>,
    ) -> Result<(), ExceptionCode> {
        let map = &self.maps[table_index(table)];
        // One encode per point per request, even when it spans several registers.
        let mut cache: Option<(usize, [u16; 4])> = None;
        for i in 0..quantity {
            let addr = address.wrapping_add(i);
            if let Some(v) = self.written.get(&(table, addr)) {
                out.push(*v);
                continue;
            }
            match map.get(&addr) {
                Some(slot) => {
                    let regs = match cache {
                        Some((p, regs)) if p == slot.point => regs,
                        _ => {
                            let pt = &self.spec.points[slot.point];
                            let v = self.point_value(slot.point, t, signals);
                            let (regs, _) = encode(v, pt.data_type(), pt.order, pt.scale);
                            cache = Some((slot.point, regs));
                            regs
                        }
                    };
                    out.push(regs[usize::from(slot.word)]);
                }
                None => match self.spec.unmapped {
                    UnmappedPolicy::Zero => out.push(0),
                    UnmappedPolicy::Exception => return Err(ExceptionCode::IllegalDataAddress),
                },
            }
        }
        Ok(())
    }

    fn writable(&self, table: Table, addr: u16) -> bool {
        self.maps[table_index(table)].contains_key(&addr)
            || (table == Table::Coils && self.relay_coil.contains_key(&addr))
            || self.spec.unmapped == UnmappedPolicy::Zero
    }

    fn write_coil(&mut self, addr: u16, value: bool, t: f64) {
        if let Some(&r) = self.relay_coil.get(&addr) {
            if let Some(state) = self.relays.get_mut(r) {
                if state.coil_on != value {
                    state.coil_on = value;
                    state.changed_at_s = Some(t);
                }
            }
        } else {
            self.written.insert((Table::Coils, addr), u16::from(value));
        }
    }

    fn matching_rule(&self, fc: u8, req: Option<&Request>, t: f64) -> Option<ExceptionCode> {
        self.spec.exceptions.iter().find_map(|r| {
            let time_ok =
                t >= r.from_s.unwrap_or(f64::NEG_INFINITY) && r.to_s.is_none_or(|to| t < to);
            let fc_ok = r.function.is_none_or(|f| f == fc);
            let range_ok = match (req.map(Request::range), r.table) {
                (Some((table, start, qty)), rule_table) => {
                    rule_table.is_none_or(|rt| rt == table)
                        && u32::from(start) < u32::from(r.start) + r.count
                        && u32::from(start) + u32::from(qty) > u32::from(r.start)
                }
                // Unparseable request: only rules without a table or range apply.
                (None, rule_table) => rule_table.is_none() && r.start == 0 && r.count >= 65536,
            };
            (time_ok && fc_ok && range_ok)
                .then(|| ExceptionCode::from_u8(r.code))
                .flatten()
        })
    }

    /// Answer one request PDU at scenario time `t`, appending the response PDU to `out`.
    pub fn handle(&mut self, request: &[u8], t: f64, signals: &Signals, out: &mut Vec<u8>) {
        self.counters.requests += 1;
        let fc = request.first().copied().unwrap_or(0);
        let parsed = pdu::parse_request(request);
        if let Some(code) = self.matching_rule(fc, parsed.as_ref().ok(), t) {
            self.counters.exceptions += 1;
            pdu::write_exception(out, fc, code);
            return;
        }
        let result = parsed.and_then(|req| self.execute(&req, request, t, signals, out));
        match result {
            Ok(()) => self.counters.responses += 1,
            Err(code) => {
                self.counters.exceptions += 1;
                pdu::write_exception(out, fc, code);
            }
        }
    }

    fn execute(
        &mut self,
        req: &Request,
        raw: &[u8],
        t: f64,
        signals: &Signals,
        out: &mut Vec<u8>,
    ) -> Result<(), ExceptionCode> {
        let fc = raw[0];
        match req {
            Request::ReadBits {
                table,
                address,
                quantity,
            } => {
                let mut bits = Vec::with_capacity(usize::from(*quantity));
                for i in 0..*quantity {
                    bits.push(
                        self.read_bit(*table, address.wrapping_add(i), t, signals)
                            .ok_or(ExceptionCode::IllegalDataAddress)?,
                    );
                }
                pdu::write_bits(out, fc, bits.into_iter());
            }
            Request::ReadRegisters {
                table,
                address,
                quantity,
            } => {
                let mut regs = Vec::with_capacity(usize::from(*quantity));
                self.read_registers(*table, *address, *quantity, t, signals, &mut regs)?;
                pdu::write_registers(out, fc, &regs);
            }
            Request::WriteSingleCoil { address, value } => {
                if !self.writable(Table::Coils, *address) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                self.write_coil(*address, *value, t);
                self.counters.writes += 1;
                pdu::write_write_ack(out, raw);
            }
            Request::WriteMultipleCoils { address, values } => {
                let n = values.len() as u16;
                if (0..n).any(|i| !self.writable(Table::Coils, address.wrapping_add(i))) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                for (i, v) in values.iter().enumerate() {
                    self.write_coil(address.wrapping_add(i as u16), *v, t);
                }
                self.counters.writes += 1;
                pdu::write_write_ack(out, raw);
            }
            Request::WriteSingleRegister { address, value } => {
                if !self.writable(Table::HoldingRegisters, *address) {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                self.written
                    .insert((Table::HoldingRegisters, *address), *value);
                self.counters.writes += 1;
                pdu::write_write_ack(out, raw);
            }
            Request::WriteMultipleRegisters { address, values } => {
                let n = values.len() as u16;
                if (0..n).any(|i| !self.writable(Table::HoldingRegisters, address.wrapping_add(i)))
                {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                for (i, v) in values.iter().enumerate() {
                    self.written.insert(
                        (Table::HoldingRegisters, address.wrapping_add(i as u16)),
                        *v,
                    );
                }
                self.counters.writes += 1;
                pdu::write_write_ack(out, raw);
            }
        }
        Ok(())
    }

    /// A snapshot for the status surface.
    pub fn status(&self, t: f64, signals: &Signals) -> DeviceStatus {
        let points = self
            .spec
            .points
            .iter()
            .enumerate()
            .map(|(k, p)| PointStatus {
                id: p.id.clone(),
                table: p.table.name(),
                address: p.address,
                data_type: p.data_type(),
                order: p.order,
                value: self.point_value(k, t, signals),
                faults: self.point_signal[k]
                    .map(|s| signals.active_faults(s, t))
                    .unwrap_or_default(),
            })
            .collect();
        let relays = self
            .spec
            .relays
            .iter()
            .enumerate()
            .map(|(i, r)| RelayStatus {
                id: r.id.clone(),
                coil: r.coil,
                feed_input: r.feed_input,
                coil_on: self.relays[i].coil_on,
                feed_on: self.feed_on(i, t),
                faulty: r.faulty,
            })
            .collect();
        let exception_rules_active = self
            .spec
            .exceptions
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                t >= r.from_s.unwrap_or(f64::NEG_INFINITY) && r.to_s.is_none_or(|to| t < to)
            })
            .map(|(i, _)| i)
            .collect();
        DeviceStatus {
            id: self.spec.id.clone(),
            unit_id: self.spec.unit_id,
            endpoint: self.spec.endpoint_name().to_owned(),
            offline: self.offline_mode(t),
            response_delay_ms: self.spec.response_delay_ms,
            exception_rules_active,
            counters: self.counters,
            points,
            relays,
        }
    }
}
