//! Modbus data types and byte orders: turning registers and bits into values.
//!
//! Registers are 16-bit words as they arrive on the wire. Multi-register values are
//! described by two independent choices, named after where the bytes `A B C D` (most
//! significant first) of a 32-bit value end up:
//!
//! | order | word order | byte order in a word | registers for 0xAABBCCDD |
//! |-------|------------|----------------------|--------------------------|
//! | ABCD  | high first | high first           | `AABB CCDD`              |
//! | CDAB  | low first  | high first           | `CCDD AABB`              |
//! | BADC  | high first | low first            | `BBAA DDCC`              |
//! | DCBA  | low first  | low first            | `DDCC BBAA`              |
//!
//! 64-bit values follow the same two rules over four registers; 16-bit values use
//! only the byte rule (ABCD = CDAB, BADC = DCBA).
//!
//! After decoding, `value = raw × scale + offset`. Decoding never invents a value: a
//! short buffer or a non-finite float is a [`DecodeError`], which the poller turns
//! into a reading with quality `bad_data`.

use serde::{Deserialize, Serialize};

/// A Modbus data table (address space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Coils, read with 0x01 (bits, read/write).
    Coil,
    /// Discrete inputs, read with 0x02 (bits, read-only).
    DiscreteInput,
    /// Holding registers, read with 0x03 (16-bit words).
    Holding,
    /// Input registers, read with 0x04 (16-bit words).
    Input,
}

impl Table {
    /// Whether the table holds single bits rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// Name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }

    /// The largest quantity one read request may ask for (Modbus application
    /// protocol v1.1b3: 2000 bits, 125 registers).
    pub fn max_per_read(self) -> u16 {
        if self.is_bits() {
            2000
        } else {
            125
        }
    }

    /// The function code that reads this table.
    pub fn read_function(self) -> u8 {
        match self {
            Table::Coil => 1,
            Table::DiscreteInput => 2,
            Table::Holding => 3,
            Table::Input => 4,
        }
    }
}

/// How a value is encoded in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One coil or discrete input.
    Bool,
    /// One bit (`bit` = 0–15) of a holding or input register.
    Bit,
    /// Unsigned 16-bit, one register.
    U16,
    /// Signed 16-bit, one register.
    I16,
    /// Unsigned 32-bit, two registers.
    U32,
    /// Signed 32-bit, two registers.
    I32,
    /// Unsigned 64-bit, four registers.
    U64,
    /// Signed 64-bit, four registers.
    I64,
    /// IEEE 754 single, two registers.
    F32,
    /// IEEE 754 double, four registers.
    F64,
}

impl DataType {
    /// How many registers (or bits, for `bool`) the value occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::Bit | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// Name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::Bit => "bit",
            DataType::U16 => "u16",
            DataType::I16 => "i16",
            DataType::U32 => "u32",
            DataType::I32 => "i32",
            DataType::U64 => "u64",
            DataType::I64 => "i64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        }
    }
}

/// Order of the bytes of a multi-register value, `A` being the most significant byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
pub enum ByteOrder {
    /// Big-endian words, big-endian bytes (the Modbus convention).
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Word-swapped (common on PLCs).
    #[serde(rename = "CDAB")]
    Cdab,
    /// Byte-swapped within each word.
    #[serde(rename = "BADC")]
    Badc,
    /// Fully little-endian.
    #[serde(rename = "DCBA")]
    Dcba,
}

impl ByteOrder {
    /// Name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ByteOrder::Abcd => "ABCD",
            ByteOrder::Cdab => "CDAB",
            ByteOrder::Badc => "BADC",
            ByteOrder::Dcba => "DCBA",
        }
    }
}

impl ByteOrder {
    fn words_low_first(self) -> bool {
        matches!(self, ByteOrder::Cdab | ByteOrder::Dcba)
    }

    fn bytes_swapped(self) -> bool {
        matches!(self, ByteOrder::Badc | ByteOrder::Dcba)
    }
}

/// Where one value sits and how to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    pub data_type: DataType,
    pub order: ByteOrder,
    /// Bit index for `DataType::Bit` (0–15).
    pub bit: u8,
    pub scale: f64,
    pub offset: f64,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            data_type: DataType::U16,
            order: ByteOrder::Abcd,
            bit: 0,
            scale: 1.0,
            offset: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("needs {needed} registers, {got} available")]
    Short { needed: usize, got: usize },
    #[error("decoded float is not finite")]
    NotFinite,
}

/// Assemble `n` registers into a big-endian integer of `n * 16` bits per `order`.
fn assemble(regs: &[u16], order: ByteOrder) -> u64 {
    let mut acc = 0u64;
    let n = regs.len();
    for i in 0..n {
        let w = if order.words_low_first() {
            regs[n - 1 - i]
        } else {
            regs[i]
        };
        let w = if order.bytes_swapped() {
            w.swap_bytes()
        } else {
            w
        };
        acc = (acc << 16) | u64::from(w);
    }
    acc
}

/// Split a big-endian integer of `n * 16` bits into `n` registers per `order`
/// (the inverse of decoding; used by writes and by tests).
pub fn disassemble(raw: u64, n: usize, order: ByteOrder) -> Vec<u16> {
    let mut words: Vec<u16> = (0..n)
        .map(|i| (raw >> (16 * (n - 1 - i))) as u16)
        .map(|w| {
            if order.bytes_swapped() {
                w.swap_bytes()
            } else {
                w
            }
        })
        .collect();
    if order.words_low_first() {
        words.reverse();
    }
    words
}

/// Decode the raw (unscaled) value from registers.
pub fn decode_registers(regs: &[u16], layout: &Layout) -> Result<f64, DecodeError> {
    let width = layout.data_type.width() as usize;
    if regs.len() < width {
        return Err(DecodeError::Short {
            needed: width,
            got: regs.len(),
        });
    }
    let regs = &regs[..width];
    let raw = assemble(regs, layout.order);
    let v = match layout.data_type {
        DataType::Bool => f64::from(u8::from(regs[0] != 0)),
        DataType::Bit => f64::from(u8::from(regs[0] >> (layout.bit & 15) & 1 == 1)),
        DataType::U16 => raw as u16 as f64,
        DataType::I16 => raw as u16 as i16 as f64,
        DataType::U32 => raw as u32 as f64,
        DataType::I32 => raw as u32 as i32 as f64,
        DataType::U64 => raw as f64,
        DataType::I64 => raw as i64 as f64,
        DataType::F32 => f64::from(f32::from_bits(raw as u32)),
        DataType::F64 => f64::from_bits(raw),
    };
    if !v.is_finite() {
        return Err(DecodeError::NotFinite);
    }
    Ok(v * layout.scale + layout.offset)
}

/// Decode a coil or discrete input.
pub fn decode_bit(bit: bool, layout: &Layout) -> f64 {
    f64::from(u8::from(bit)) * layout.scale + layout.offset
}

/// Encode an engineering value into registers (for writes): the inverse of
/// [`decode_registers`], `raw = (value - offset) / scale`, rounded for integers.
pub fn encode_registers(value: f64, layout: &Layout) -> Vec<u16> {
    let raw = if layout.scale == 0.0 {
        0.0
    } else {
        (value - layout.offset) / layout.scale
    };
    let width = layout.data_type.width() as usize;
    let bits: u64 = match layout.data_type {
        DataType::Bool | DataType::Bit => u64::from(raw != 0.0),
        DataType::U16 => raw.round().clamp(0.0, f64::from(u16::MAX)) as u64,
        DataType::I16 => {
            raw.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16 as u16 as u64
        }
        DataType::U32 => raw.round().clamp(0.0, f64::from(u32::MAX)) as u64,
        DataType::I32 => {
            raw.round().clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32 as u32 as u64
        }
        DataType::U64 => raw.round().max(0.0) as u64,
        DataType::I64 => raw.round() as i64 as u64,
        DataType::F32 => u64::from((raw as f32).to_bits()),
        DataType::F64 => raw.to_bits(),
    };
    disassemble(bits, width, layout.order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(data_type: DataType, order: ByteOrder) -> Layout {
        Layout {
            data_type,
            order,
            ..Layout::default()
        }
    }

    #[test]
    fn the_module_table_holds() {
        let raw = 0xAABB_CCDDu64;
        assert_eq!(disassemble(raw, 2, ByteOrder::Abcd), vec![0xAABB, 0xCCDD]);
        assert_eq!(disassemble(raw, 2, ByteOrder::Cdab), vec![0xCCDD, 0xAABB]);
        assert_eq!(disassemble(raw, 2, ByteOrder::Badc), vec![0xBBAA, 0xDDCC]);
        assert_eq!(disassemble(raw, 2, ByteOrder::Dcba), vec![0xDDCC, 0xBBAA]);
    }

    #[test]
    fn known_values() {
        // 1.5 as f32 is 0x3FC00000.
        let l = layout(DataType::F32, ByteOrder::Abcd);
        assert_eq!(decode_registers(&[0x3FC0, 0x0000], &l), Ok(1.5));
        let l = layout(DataType::F32, ByteOrder::Cdab);
        assert_eq!(decode_registers(&[0x0000, 0x3FC0], &l), Ok(1.5));
        let l = layout(DataType::I16, ByteOrder::Abcd);
        assert_eq!(decode_registers(&[0xFFFE], &l), Ok(-2.0));
        let l = Layout {
            scale: 0.01,
            ..layout(DataType::U16, ByteOrder::Abcd)
        };
        assert_eq!(decode_registers(&[150], &l), Ok(1.5));
        let l = Layout {
            bit: 3,
            ..layout(DataType::Bit, ByteOrder::Abcd)
        };
        assert_eq!(decode_registers(&[0b1000], &l), Ok(1.0));
        assert_eq!(decode_registers(&[0b0111], &l), Ok(0.0));
    }

    #[test]
    fn short_buffers_and_nan_are_errors() {
        let l = layout(DataType::F64, ByteOrder::Abcd);
        assert_eq!(
            decode_registers(&[1, 2, 3], &l),
            Err(DecodeError::Short { needed: 4, got: 3 })
        );
        let l = layout(DataType::F32, ByteOrder::Abcd);
        assert_eq!(
            decode_registers(&[0x7FC0, 0], &l),
            Err(DecodeError::NotFinite)
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_round_trips(
            v in -1.0e6f64..1.0e6,
            t in prop::sample::select(vec![DataType::I32, DataType::I64, DataType::F64, DataType::F32]),
            o in prop::sample::select(vec![ByteOrder::Abcd, ByteOrder::Cdab, ByteOrder::Badc, ByteOrder::Dcba]),
        ) {
            let l = layout(t, o);
            let regs = encode_registers(v, &l);
            prop_assert_eq!(regs.len(), t.width() as usize);
            let back = decode_registers(&regs, &l).unwrap();
            let want = match t {
                DataType::F32 => f64::from(v as f32),
                DataType::F64 => v,
                _ => v.round(),
            };
            prop_assert_eq!(back, want);
        }
    }
}
