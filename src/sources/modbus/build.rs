//! A valid configuration → the links the poller runs.
//!
//! Devices that share a transport (the same `host:port`, or the same serial port)
//! become one link, polled in turn. Each Modbus device gets a status point
//! `device:<id>` (1 online, 0 offline) with a low grade `设备离线` at 0, so a dead
//! device raises one parent alarm through the ordinary alarm life; a link shared by
//! several devices also gets `link:<transport>` for the whole bus or serial server.
//! These points are appended after the configured ones, so configured indices do not
//! move.

use super::decode::Layout;
use super::plan::{plan, Forced, Item, Limits};
use super::poller::{DeviceSpec, FastZone, LinkSpec, SerialSpec, Transport};
use crate::config::{Config, Parity, Protocol};
use crate::engine::EngineSpec;
use crate::model::{Direction, PointId};
use crate::sources::push_status_point;

/// Build the poller's links from `config`, appending status points to `spec`
/// (which must be `config.engine_spec()`).
pub fn links(config: &Config, spec: &mut EngineSpec) -> Vec<LinkSpec> {
    let mut links: Vec<LinkSpec> = Vec::new();
    for (d, dev) in config.devices.iter().enumerate() {
        let transport = match dev.protocol {
            Protocol::ModbusTcp => Transport::Tcp(host_port(dev.host.as_deref(), dev.port())),
            Protocol::ModbusRtuOverTcp => {
                Transport::RtuOverTcp(host_port(dev.host.as_deref(), dev.port()))
            }
            Protocol::ModbusRtu => Transport::Rtu(SerialSpec {
                path: dev.serial_port.clone().unwrap_or_default(),
                baud_rate: dev.baud_rate(),
                data_bits: dev.data_bits(),
                parity: match dev.parity() {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                },
                stop_bits: dev.stop_bits(),
            }),
            Protocol::Mqtt => continue,
        };
        let mut items = Vec::new();
        let mut fast_zones = Vec::new();
        let margin_frac = dev.fast_margin_pct / 100.0;
        for (i, p) in config.points.iter().enumerate() {
            let Some(b) = p.modbus.as_ref().filter(|_| p.device == dev.id) else {
                continue;
            };
            let point = PointId(i as u32);
            items.push(Item {
                point,
                table: b.table,
                address: b.address,
                layout: Layout {
                    data_type: b.data_type,
                    order: b.byte_order,
                    bit: b.bit.unwrap_or(0),
                    scale: b.scale,
                    offset: b.offset,
                },
            });
            let margin = margin_frac * (p.range_max - p.range_min);
            let grades = &spec.points[i].grades;
            let first = |dir: Direction| grades.iter().find(|g| g.direction == dir);
            let above = first(Direction::High).map(|g| g.trigger - margin);
            let below = first(Direction::Low).map(|g| g.trigger + margin);
            if above.is_some() || below.is_some() {
                fast_zones.push(FastZone {
                    point,
                    above,
                    below,
                });
            }
        }
        let limits = Limits {
            max_registers: dev.max_block_registers,
            max_bits: dev.max_block_bits,
            max_gap_registers: dev.max_gap_registers,
            max_gap_bits: dev.max_gap_registers.saturating_mul(16),
        };
        let forced: Vec<Forced> = dev
            .blocks
            .iter()
            .map(|b| Forced {
                table: b.table,
                start: b.start,
                count: b.count,
            })
            .collect();
        let interval_ms = config.device_poll_interval_ms(d);
        let status_point = push_status_point(spec, format!("device:{}", dev.id), "设备离线");
        let device = DeviceSpec {
            id: dev.id.clone(),
            unit_id: dev.unit_id(),
            timeout_ms: dev.timeout_ms,
            retries: dev.retries,
            offline_after_failures: dev.offline_after_failures,
            interval_ms,
            fast_interval_ms: dev.fast_poll_interval_ms.unwrap_or(interval_ms.min(10_000)),
            offline_retry_ms: dev
                .offline_retry_ms
                .unwrap_or((interval_ms.saturating_mul(5)).clamp(5_000, 60_000)),
            blocks: plan(&items, limits, &forced),
            fast_zones,
            status_point: Some(status_point),
        };
        match links.iter_mut().find(|l| l.transport == transport) {
            Some(link) => link.devices.push(device),
            None => links.push(LinkSpec {
                id: transport_name(&transport),
                transport,
                status_point: None,
                devices: vec![device],
            }),
        }
    }
    for link in &mut links {
        if link.devices.len() > 1 {
            link.status_point = Some(push_status_point(
                spec,
                format!("link:{}", link.id),
                "链路中断",
            ));
        }
    }
    links
}

fn host_port(host: Option<&str>, port: u16) -> String {
    let host = host.unwrap_or("");
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn transport_name(t: &Transport) -> String {
    match t {
        Transport::Tcp(a) => format!("tcp://{a}"),
        Transport::RtuOverTcp(a) => format!("rtu+tcp://{a}"),
        Transport::Rtu(s) => format!("rtu://{}", s.path),
    }
}
