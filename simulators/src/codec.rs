//! Value encodings: how one engineering value becomes Modbus registers.
//!
//! Invariants:
//! - A value of `n` bytes occupies `n / 2` consecutive 16-bit registers (a `bool` or
//!   16-bit type occupies one register; `bool` is `0` or `1`).
//! - Byte names follow the usual convention: the value's big-endian bytes are
//!   `A B C D` (32-bit) or `A B C D E F G H` (64-bit). [`WordOrder::Abcd`] is
//!   big-endian words with big-endian bytes; [`WordOrder::Cdab`] reverses the word
//!   order; [`WordOrder::Badc`] swaps the bytes inside each word; [`WordOrder::Dcba`]
//!   does both (fully little-endian). For 16-bit types only the byte swap matters.
//! - Integer types are written as `round(value * scale)`, saturated to the type's
//!   range, so a scaled `i16` with `scale = 100` carries `-12.34` as `-1234`.
//! - Values are `f64`, so 64-bit integers are exact only up to 2^53.

use serde::{Deserialize, Serialize};

/// The data type of a mapped value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// A single bit (coil or discrete input), or `0`/`1` in a register.
    Bool,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// IEEE-754 single precision.
    F32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// IEEE-754 double precision.
    F64,
}

impl DataType {
    /// Number of 16-bit registers the type occupies.
    pub fn register_count(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }

    /// Whether the type is a floating-point type (no scaling or rounding applied).
    pub fn is_float(self) -> bool {
        matches!(self, DataType::F32 | DataType::F64)
    }
}

/// Byte and word order of a multi-byte value (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// Big-endian words, big-endian bytes (Modbus default).
    #[default]
    Abcd,
    /// Little-endian words (word swap), big-endian bytes.
    Cdab,
    /// Big-endian words, bytes swapped inside each word.
    Badc,
    /// Fully little-endian.
    Dcba,
}

impl WordOrder {
    /// All four orders, for tables and tests.
    pub const ALL: [WordOrder; 4] = [
        WordOrder::Abcd,
        WordOrder::Cdab,
        WordOrder::Badc,
        WordOrder::Dcba,
    ];

    fn swaps_words(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }

    fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }
}

fn round_saturate(value: f64, scale: f64, min: f64, max: f64) -> f64 {
    let v = (value * scale).round();
    if v.is_nan() {
        0.0
    } else {
        v.clamp(min, max)
    }
}

/// Big-endian bytes of `value` as `data_type`, before word ordering.
fn big_endian_bytes(value: f64, data_type: DataType, scale: f64) -> ([u8; 8], usize) {
    let mut out = [0u8; 8];
    // `as` casts below are on values already rounded and clamped into range.
    let len = match data_type {
        DataType::Bool => {
            let b: u16 = u16::from(value != 0.0 && !value.is_nan());
            out[..2].copy_from_slice(&b.to_be_bytes());
            2
        }
        DataType::U16 => {
            let v = round_saturate(value, scale, 0.0, f64::from(u16::MAX)) as u16;
            out[..2].copy_from_slice(&v.to_be_bytes());
            2
        }
        DataType::I16 => {
            let v = round_saturate(value, scale, f64::from(i16::MIN), f64::from(i16::MAX)) as i16;
            out[..2].copy_from_slice(&v.to_be_bytes());
            2
        }
        DataType::U32 => {
            let v = round_saturate(value, scale, 0.0, f64::from(u32::MAX)) as u32;
            out[..4].copy_from_slice(&v.to_be_bytes());
            4
        }
        DataType::I32 => {
            let v = round_saturate(value, scale, f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
            out[..4].copy_from_slice(&v.to_be_bytes());
            4
        }
        DataType::F32 => {
            out[..4].copy_from_slice(&((value * scale) as f32).to_be_bytes());
            4
        }
        DataType::U64 => {
            let v = round_saturate(value, scale, 0.0, u64::MAX as f64) as u64;
            out.copy_from_slice(&v.to_be_bytes());
            8
        }
        DataType::I64 => {
            let v = round_saturate(value, scale, i64::MIN as f64, i64::MAX as f64) as i64;
            out.copy_from_slice(&v.to_be_bytes());
            8
        }
        DataType::F64 => {
            out.copy_from_slice(&(value * scale).to_be_bytes());
            8
        }
    };
    (out, len)
}

/// Encode `value` into registers (at most four), in `order`.
///
/// Returns the registers and how many of them are used.
pub fn encode(value: f64, data_type: DataType, order: WordOrder, scale: f64) -> ([u16; 4], usize) {
    let (bytes, len) = big_endian_bytes(value, data_type, scale);
    let words = len / 2;
    let mut regs = [0u16; 4];
    for (i, reg) in regs.iter_mut().enumerate().take(words) {
        let src = if order.swaps_words() {
            words - 1 - i
        } else {
            i
        };
        let (hi, lo) = (bytes[src * 2], bytes[src * 2 + 1]);
        *reg = if order.swaps_bytes() {
            u16::from_be_bytes([lo, hi])
        } else {
            u16::from_be_bytes([hi, lo])
        };
    }
    (regs, words)
}

/// Decode registers back into a value (the inverse of [`encode`]), for tests and checks.
///
/// Returns `None` if `regs` is shorter than the type needs.
pub fn decode(regs: &[u16], data_type: DataType, order: WordOrder, scale: f64) -> Option<f64> {
    let words = usize::from(data_type.register_count());
    if regs.len() < words {
        return None;
    }
    let mut bytes = [0u8; 8];
    for i in 0..words {
        let src = if order.swaps_words() {
            words - 1 - i
        } else {
            i
        };
        let [hi, lo] = regs[src].to_be_bytes();
        let (a, b) = if order.swaps_bytes() {
            (lo, hi)
        } else {
            (hi, lo)
        };
        bytes[i * 2] = a;
        bytes[i * 2 + 1] = b;
    }
    let b2 = [bytes[0], bytes[1]];
    let b4 = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let raw = match data_type {
        DataType::Bool => f64::from(u8::from(u16::from_be_bytes(b2) != 0)),
        DataType::U16 => f64::from(u16::from_be_bytes(b2)),
        DataType::I16 => f64::from(i16::from_be_bytes(b2)),
        DataType::U32 => f64::from(u32::from_be_bytes(b4)),
        DataType::I32 => f64::from(i32::from_be_bytes(b4)),
        DataType::F32 => f64::from(f32::from_be_bytes(b4)),
        DataType::U64 => u64::from_be_bytes(bytes) as f64,
        DataType::I64 => i64::from_be_bytes(bytes) as f64,
        DataType::F64 => f64::from_be_bytes(bytes),
    };
    Some(if data_type == DataType::Bool {
        raw
    } else {
        raw / scale
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_in_all_orders() {
        // 123.456f32 = 0x42F6E979
        let cases = [
            (WordOrder::Abcd, [0x42F6, 0xE979]),
            (WordOrder::Cdab, [0xE979, 0x42F6]),
            (WordOrder::Badc, [0xF642, 0x79E9]),
            (WordOrder::Dcba, [0x79E9, 0xF642]),
        ];
        for (order, want) in cases {
            let (regs, n) = encode(123.456, DataType::F32, order, 1.0);
            assert_eq!(n, 2);
            assert_eq!(&regs[..2], &want, "{order:?}");
        }
    }

    #[test]
    fn u32_and_u16_orders() {
        let (r, _) = encode(0x1122_3344 as f64, DataType::U32, WordOrder::Dcba, 1.0);
        assert_eq!(&r[..2], &[0x4433, 0x2211]);
        let (r, _) = encode(0x1122 as f64, DataType::U16, WordOrder::Cdab, 1.0);
        assert_eq!(r[0], 0x1122);
        let (r, _) = encode(0x1122 as f64, DataType::U16, WordOrder::Badc, 1.0);
        assert_eq!(r[0], 0x2211);
    }

    #[test]
    fn u64_orders() {
        let v = 0x0002_0304_0506_0708u64 as f64;
        let (r, n) = encode(v, DataType::U64, WordOrder::Cdab, 1.0);
        assert_eq!(n, 4);
        assert_eq!(r, [0x0708, 0x0506, 0x0304, 0x0002]);
        let (r, _) = encode(v, DataType::U64, WordOrder::Badc, 1.0);
        assert_eq!(r, [0x0200, 0x0403, 0x0605, 0x0807]);
    }

    #[test]
    fn scaled_i16_rounds_and_saturates() {
        let (r, _) = encode(-12.34, DataType::I16, WordOrder::Abcd, 100.0);
        assert_eq!(r[0] as i16, -1234);
        let (r, _) = encode(1e9, DataType::I16, WordOrder::Abcd, 1.0);
        assert_eq!(r[0] as i16, i16::MAX);
        assert_eq!(
            decode(&[(-1234i16) as u16], DataType::I16, WordOrder::Abcd, 100.0),
            Some(-12.34)
        );
    }

    #[test]
    fn roundtrip_every_type_and_order() {
        let types = [
            (DataType::U16, 4660.0),
            (DataType::I16, -1234.0),
            (DataType::U32, 305_419_896.0),
            (DataType::I32, -123_456_789.0),
            (DataType::F32, -3.5),
            (DataType::U64, 1_234_567_890_123.0),
            (DataType::I64, -1_234_567_890_123.0),
            (DataType::F64, 1_234.567_890_123),
        ];
        for (t, v) in types {
            for order in WordOrder::ALL {
                let (regs, n) = encode(v, t, order, 1.0);
                assert_eq!(
                    decode(&regs[..n], t, order, 1.0),
                    Some(v),
                    "{t:?} {order:?}"
                );
            }
        }
    }
}
