//! Modbus protocol data units (the part of a frame after the unit id), IO-free.
//!
//! Requests are parsed into [`Request`]; anything the parser rejects maps to the
//! exception the specification asks for: an unknown function is 01, a quantity
//! outside 1..=2000 bits / 1..=125 registers (123 for writes) or a byte count that
//! disagrees with the data is 03, a range that runs past 65535 is 02.

use serde::{Deserialize, Serialize};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Table {
    /// Read/write bits (function codes 1, 5, 15).
    #[serde(rename = "coil")]
    Coils,
    /// Read-only bits (function code 2).
    #[serde(rename = "discrete")]
    DiscreteInputs,
    /// Read/write registers (function codes 3, 6, 16).
    #[serde(rename = "holding")]
    HoldingRegisters,
    /// Read-only registers (function code 4).
    #[serde(rename = "input")]
    InputRegisters,
}

impl Table {
    /// Whether the table holds bits.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coils | Table::DiscreteInputs)
    }

    /// Name as written in scenario files.
    pub fn name(self) -> &'static str {
        match self {
            Table::Coils => "coil",
            Table::DiscreteInputs => "discrete",
            Table::HoldingRegisters => "holding",
            Table::InputRegisters => "input",
        }
    }
}

/// Modbus exception codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExceptionCode {
    /// 01: the function is not supported.
    IllegalFunction = 0x01,
    /// 02: the address range is not served.
    IllegalDataAddress = 0x02,
    /// 03: a value in the request is not allowed (quantity, byte count, coil value).
    IllegalDataValue = 0x03,
    /// 04: unrecoverable error in the device.
    ServerDeviceFailure = 0x04,
    /// 05: request accepted, processing takes long.
    Acknowledge = 0x05,
    /// 06: the device is busy.
    ServerDeviceBusy = 0x06,
    /// 0A: gateway path unavailable.
    GatewayPathUnavailable = 0x0A,
    /// 0B: gateway target device failed to respond.
    GatewayTargetFailedToRespond = 0x0B,
}

impl ExceptionCode {
    /// From the code byte; `None` for codes the simulator does not produce.
    pub fn from_u8(code: u8) -> Option<ExceptionCode> {
        Some(match code {
            0x01 => ExceptionCode::IllegalFunction,
            0x02 => ExceptionCode::IllegalDataAddress,
            0x03 => ExceptionCode::IllegalDataValue,
            0x04 => ExceptionCode::ServerDeviceFailure,
            0x05 => ExceptionCode::Acknowledge,
            0x06 => ExceptionCode::ServerDeviceBusy,
            0x0A => ExceptionCode::GatewayPathUnavailable,
            0x0B => ExceptionCode::GatewayTargetFailedToRespond,
            _ => return None,
        })
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// FC 1 / 2.
    ReadBits {
        /// Coils or discrete inputs.
        table: Table,
        /// First address.
        address: u16,
        /// Number of bits.
        quantity: u16,
    },
    /// FC 3 / 4.
    ReadRegisters {
        /// Holding or input registers.
        table: Table,
        /// First address.
        address: u16,
        /// Number of registers.
        quantity: u16,
    },
    /// FC 5.
    WriteSingleCoil {
        /// Address.
        address: u16,
        /// ON or OFF.
        value: bool,
    },
    /// FC 6.
    WriteSingleRegister {
        /// Address.
        address: u16,
        /// Value.
        value: u16,
    },
    /// FC 15.
    WriteMultipleCoils {
        /// First address.
        address: u16,
        /// Values.
        values: Vec<bool>,
    },
    /// FC 16.
    WriteMultipleRegisters {
        /// First address.
        address: u16,
        /// Values.
        values: Vec<u16>,
    },
}

impl Request {
    /// The table and address range the request touches.
    pub fn range(&self) -> (Table, u16, u16) {
        match self {
            Request::ReadBits {
                table,
                address,
                quantity,
            }
            | Request::ReadRegisters {
                table,
                address,
                quantity,
            } => (*table, *address, *quantity),
            Request::WriteSingleCoil { address, .. } => (Table::Coils, *address, 1),
            Request::WriteSingleRegister { address, .. } => (Table::HoldingRegisters, *address, 1),
            Request::WriteMultipleCoils { address, values } => {
                (Table::Coils, *address, values.len() as u16)
            }
            Request::WriteMultipleRegisters { address, values } => {
                (Table::HoldingRegisters, *address, values.len() as u16)
            }
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn check_range(address: u16, quantity: u16) -> Result<(), ExceptionCode> {
    if u32::from(address) + u32::from(quantity) > 65536 {
        Err(ExceptionCode::IllegalDataAddress)
    } else {
        Ok(())
    }
}

/// Parse a request PDU (function code first).
pub fn parse_request(pdu: &[u8]) -> Result<Request, ExceptionCode> {
    let Some(&fc) = pdu.first() else {
        return Err(ExceptionCode::IllegalFunction);
    };
    let data = &pdu[1..];
    match fc {
        1..=4 => {
            if data.len() != 4 {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let address = be16(data, 0);
            let quantity = be16(data, 2);
            let max = if fc <= 2 { 2000 } else { 125 };
            if quantity == 0 || quantity > max {
                return Err(ExceptionCode::IllegalDataValue);
            }
            check_range(address, quantity)?;
            let table = match fc {
                1 => Table::Coils,
                2 => Table::DiscreteInputs,
                3 => Table::HoldingRegisters,
                _ => Table::InputRegisters,
            };
            Ok(if fc <= 2 {
                Request::ReadBits {
                    table,
                    address,
                    quantity,
                }
            } else {
                Request::ReadRegisters {
                    table,
                    address,
                    quantity,
                }
            })
        }
        5 => {
            if data.len() != 4 {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let value = match be16(data, 2) {
                0xFF00 => true,
                0x0000 => false,
                _ => return Err(ExceptionCode::IllegalDataValue),
            };
            Ok(Request::WriteSingleCoil {
                address: be16(data, 0),
                value,
            })
        }
        6 => {
            if data.len() != 4 {
                return Err(ExceptionCode::IllegalDataValue);
            }
            Ok(Request::WriteSingleRegister {
                address: be16(data, 0),
                value: be16(data, 2),
            })
        }
        15 | 16 => {
            if data.len() < 5 {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let address = be16(data, 0);
            let quantity = be16(data, 2);
            let byte_count = usize::from(data[4]);
            let payload = &data[5..];
            let (max, need) = if fc == 15 {
                (1968, usize::from(quantity).div_ceil(8))
            } else {
                (123, usize::from(quantity) * 2)
            };
            if quantity == 0 || quantity > max || byte_count != need || payload.len() != need {
                return Err(ExceptionCode::IllegalDataValue);
            }
            check_range(address, quantity)?;
            if fc == 15 {
                let values = (0..usize::from(quantity))
                    .map(|i| payload[i / 8] & (1 << (i % 8)) != 0)
                    .collect();
                Ok(Request::WriteMultipleCoils { address, values })
            } else {
                let values = (0..usize::from(quantity))
                    .map(|i| be16(payload, i * 2))
                    .collect();
                Ok(Request::WriteMultipleRegisters { address, values })
            }
        }
        _ => Err(ExceptionCode::IllegalFunction),
    }
}

/// Append an exception response PDU for function `fc`.
pub fn write_exception(out: &mut Vec<u8>, fc: u8, code: ExceptionCode) {
    out.push(fc | 0x80);
    out.push(code as u8);
}

/// Append a read-bits response PDU.
pub fn write_bits(out: &mut Vec<u8>, fc: u8, bits: impl ExactSizeIterator<Item = bool>) {
    let n = bits.len().div_ceil(8);
    out.push(fc);
    out.push(n as u8);
    let start = out.len();
    out.resize(start + n, 0);
    for (i, b) in bits.enumerate() {
        if b {
            out[start + i / 8] |= 1 << (i % 8);
        }
    }
}

/// Append a read-registers response PDU.
pub fn write_registers(out: &mut Vec<u8>, fc: u8, regs: &[u16]) {
    out.push(fc);
    out.push((regs.len() * 2) as u8);
    for r in regs {
        out.extend_from_slice(&r.to_be_bytes());
    }
}

/// Append the echo a write request gets (FC 5, 6: the request; FC 15, 16: address
/// and quantity).
pub fn write_write_ack(out: &mut Vec<u8>, request_pdu: &[u8]) {
    let n = request_pdu.len().min(5);
    out.extend_from_slice(&request_pdu[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_functions() {
        assert_eq!(
            parse_request(&[3, 0, 0, 0, 126]),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            parse_request(&[3, 0, 0, 0, 0]),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            parse_request(&[1, 0, 0, 0x07, 0xD1]),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            parse_request(&[3, 0xFF, 0xFF, 0, 2]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            parse_request(&[0x2B, 0x0E, 1, 0]),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            parse_request(&[5, 0, 1, 0x12, 0x34]),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            parse_request(&[3, 0, 0, 0]),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            parse_request(&[15, 0, 2, 0, 10, 2, 0b0000_0101, 0b10]),
            Ok(Request::WriteMultipleCoils {
                address: 2,
                values: vec![true, false, true, false, false, false, false, false, false, true]
            })
        );
        assert_eq!(
            parse_request(&[16, 0, 2, 0, 2, 3, 0, 1, 0]),
            Err(ExceptionCode::IllegalDataValue)
        );
    }

    #[test]
    fn bit_packing() {
        let mut out = Vec::new();
        write_bits(
            &mut out,
            1,
            [true, false, true, true, false, false, false, false, true].into_iter(),
        );
        assert_eq!(out, vec![1, 2, 0b0000_1101, 0b1]);
    }
}
