//! Framing on a byte stream, IO-free: Modbus TCP (MBAP) and RTU over TCP.
//!
//! MBAP: transaction id (2), protocol id (2, must be 0), length (2, counts the unit
//! id and the PDU: 2..=254), unit id (1), PDU. A header that breaks these rules
//! means the stream cannot be trusted any more: the caller closes the connection.
//!
//! RTU over TCP: unit id (1), PDU, CRC-16/MODBUS (2, low byte first). The frame
//! length is known from the function code for the supported requests; for other
//! function codes the frame is everything buffered (serial servers forward one frame
//! per silence gap, so one TCP segment holds one frame). A frame with a bad CRC is
//! dropped without an answer, as on a serial line.

/// The maximum PDU length.
pub const MAX_PDU: usize = 253;

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// One frame found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not enough bytes yet.
    Incomplete,
    /// A request: header fields, where the PDU is, and the frame's total length.
    Frame {
        /// MBAP transaction id (0 for RTU).
        transaction: u16,
        /// Unit id.
        unit: u8,
        /// PDU byte range in the buffer.
        pdu: std::ops::Range<usize>,
        /// Bytes to consume.
        len: usize,
    },
    /// RTU frame with a bad CRC: consume `len` bytes, answer nothing.
    BadCrc {
        /// Bytes to consume.
        len: usize,
    },
    /// The stream is broken (bad MBAP header): close the connection.
    Broken,
}

/// Find the next MBAP frame at the start of `buf`.
pub fn parse_tcp(buf: &[u8]) -> Parsed {
    if buf.len() < 7 {
        return Parsed::Incomplete;
    }
    let transaction = u16::from_be_bytes([buf[0], buf[1]]);
    let protocol = u16::from_be_bytes([buf[2], buf[3]]);
    let length = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
    if protocol != 0 || !(2..=MAX_PDU + 1).contains(&length) {
        return Parsed::Broken;
    }
    let total = 6 + length;
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    Parsed::Frame {
        transaction,
        unit: buf[6],
        pdu: 7..total,
        len: total,
    }
}

/// Find the next RTU request frame at the start of `buf`.
pub fn parse_rtu(buf: &[u8]) -> Parsed {
    if buf.len() < 2 {
        return Parsed::Incomplete;
    }
    let total = match buf[1] {
        1..=6 => 8,
        15 | 16 => {
            if buf.len() < 7 {
                return Parsed::Incomplete;
            }
            9 + usize::from(buf[6])
        }
        // Unknown function: the frame is what arrived together.
        _ => {
            if buf.len() < 4 {
                return Parsed::Incomplete;
            }
            buf.len().min(MAX_PDU + 3)
        }
    };
    if buf.len() < total {
        return Parsed::Incomplete;
    }
    let body = &buf[..total - 2];
    let crc = u16::from_le_bytes([buf[total - 2], buf[total - 1]]);
    if crc16(body) != crc {
        return Parsed::BadCrc { len: total };
    }
    Parsed::Frame {
        transaction: 0,
        unit: buf[0],
        pdu: 1..total - 2,
        len: total,
    }
}

/// Start a TCP response in `out`: returns where the header is, to be finished by
/// [`finish_tcp`] once the PDU has been appended.
pub fn begin_tcp(out: &mut Vec<u8>, transaction: u16, unit: u8) -> usize {
    let at = out.len();
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, unit]);
    at
}

/// Fill in the MBAP length of the response started at `at`.
pub fn finish_tcp(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 6) as u16;
    out[at + 4..at + 6].copy_from_slice(&len.to_be_bytes());
}

/// Start an RTU response in `out`.
pub fn begin_rtu(out: &mut Vec<u8>, unit: u8) -> usize {
    let at = out.len();
    out.push(unit);
    at
}

/// Append the CRC of the RTU response started at `at`.
pub fn finish_rtu(out: &mut Vec<u8>, at: usize) {
    let crc = crc16(&out[at..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_known_vector() {
        // Read holding registers, unit 1, address 0, quantity 10: CRC C5 CD.
        let f = [0x01, 0x03, 0x00, 0x00, 0x00, 0x0A];
        assert_eq!(crc16(&f).to_le_bytes(), [0xC5, 0xCD]);
    }

    #[test]
    fn rtu_frames() {
        let mut f = vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0A, 0xC5, 0xCD];
        assert_eq!(parse_rtu(&f[..5]), Parsed::Incomplete);
        assert!(matches!(
            parse_rtu(&f),
            Parsed::Frame {
                unit: 1,
                len: 8,
                ..
            }
        ));
        f[7] ^= 1;
        assert_eq!(parse_rtu(&f), Parsed::BadCrc { len: 8 });
    }

    #[test]
    fn mbap_rules() {
        assert_eq!(parse_tcp(&[0, 1, 0, 0, 0, 6, 1, 3]), Parsed::Incomplete);
        assert_eq!(parse_tcp(&[0, 1, 0, 1, 0, 6, 1, 3]), Parsed::Broken);
        assert_eq!(parse_tcp(&[0, 1, 0, 0, 0, 1, 1, 3]), Parsed::Broken);
        assert_eq!(parse_tcp(&[0, 1, 0, 0, 1, 0, 1, 3]), Parsed::Broken);
        assert!(matches!(
            parse_tcp(&[0, 1, 0, 0, 0, 6, 9, 3, 0, 0, 0, 1]),
            Parsed::Frame {
                transaction: 1,
                unit: 9,
                len: 12,
                ..
            }
        ));
    }
}
