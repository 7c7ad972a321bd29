//! SM4-CBC with PKCS#7 padding (GB/T 32907-2016; "SM4/CBC/PKCS5Padding" in Java
//! terms), as the emergency-management data feeds encrypt request bodies, and the
//! base64 that carries the ciphertext inside JSON.
//!
//! Pure functions: key and IV are 16 bytes each, given as 32 hex digits in the
//! config (the platform issues both).

use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};

type Enc = cbc::Encryptor<sm4::Sm4>;
type Dec = cbc::Decryptor<sm4::Sm4>;

/// Errors of the SM4 layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Sm4Error {
    #[error("{what} must be 32 hex digits (16 bytes)")]
    BadKey { what: &'static str },
    #[error("ciphertext is not a whole number of blocks or its padding is wrong")]
    BadCiphertext,
    #[error("not base64")]
    BadBase64,
}

/// An SM4-CBC key and IV.
#[derive(Clone, PartialEq, Eq)]
pub struct Sm4Key {
    key: [u8; 16],
    iv: [u8; 16],
}

impl std::fmt::Debug for Sm4Key {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sm4Key(..)")
    }
}

fn hex16(s: &str, what: &'static str) -> Result<[u8; 16], Sm4Error> {
    let s = s.trim();
    if s.len() != 32 || !s.is_ascii() {
        return Err(Sm4Error::BadKey { what });
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| Sm4Error::BadKey { what })?;
    }
    Ok(out)
}

impl Sm4Key {
    pub fn new(key: [u8; 16], iv: [u8; 16]) -> Sm4Key {
        Sm4Key { key, iv }
    }

    /// From 32 hex digits each.
    pub fn from_hex(key: &str, iv: &str) -> Result<Sm4Key, Sm4Error> {
        Ok(Sm4Key {
            key: hex16(key, "sm4_key_hex")?,
            iv: hex16(iv, "sm4_iv_hex")?,
        })
    }

    /// Encrypt with PKCS#7 padding (always adds 1–16 bytes).
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        Enc::new(&self.key.into(), &self.iv.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
    }

    /// Decrypt and strip PKCS#7 padding.
    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, Sm4Error> {
        Dec::new(&self.key.into(), &self.iv.into())
            .decrypt_padded_vec_mut::<Pkcs7>(cipher)
            .map_err(|_| Sm4Error::BadCiphertext)
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard base64 (padding required, no whitespace).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, Sm4Error> {
    let s = s.as_bytes();
    if s.len() % 4 != 0 {
        return Err(Sm4Error::BadBase64);
    }
    let val = |c: u8| -> Result<u32, Sm4Error> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(Sm4Error::BadBase64),
        }
        .into())
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for (i, q) in s.chunks(4).enumerate() {
        let last = i + 1 == s.len() / 4;
        let pad = q.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(Sm4Error::BadBase64);
        }
        let mut n = 0u32;
        for &c in &q[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cbc::cipher::{BlockEncrypt, KeyInit};

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// GB/T 32907-2016 Appendix A, example 1: one block.
    #[test]
    fn gbt_32907_single_block_vector() {
        let key = hex("0123456789abcdeffedcba9876543210");
        let cipher = sm4::Sm4::new_from_slice(&key).unwrap();
        let mut block = sm4::cipher::generic_array::GenericArray::clone_from_slice(&key);
        cipher.encrypt_block(&mut block);
        assert_eq!(block.as_slice(), hex("681edf34d206965e86b3e94f536e4246"));
    }

    /// CBC with a zero IV over one block equals the raw block cipher, so the first
    /// ciphertext block is the published vector; the second is the padding block.
    #[test]
    fn cbc_first_block_is_the_published_vector_and_padding_is_a_full_block() {
        let k = Sm4Key::from_hex(
            "0123456789abcdeffedcba9876543210",
            "00000000000000000000000000000000",
        )
        .unwrap();
        let plain = hex("0123456789abcdeffedcba9876543210");
        let c = k.encrypt(&plain);
        assert_eq!(c.len(), 32);
        assert_eq!(&c[..16], hex("681edf34d206965e86b3e94f536e4246"));
        assert_eq!(k.decrypt(&c).unwrap(), plain);
    }

    #[test]
    fn round_trip_all_lengths_and_bad_input() {
        let k = Sm4Key::from_hex(
            "0123456789abcdeffedcba9876543210",
            "fedcba98765432100123456789abcdef",
        )
        .unwrap();
        for n in 0..70 {
            let plain: Vec<u8> = (0..n as u8).collect();
            let c = k.encrypt(&plain);
            assert_eq!(c.len(), (n / 16 + 1) * 16);
            assert_eq!(k.decrypt(&c).unwrap(), plain);
            assert_eq!(base64_decode(&base64_encode(&c)).unwrap(), c);
        }
        assert_eq!(k.decrypt(&[0u8; 15]), Err(Sm4Error::BadCiphertext));
        assert!(Sm4Key::from_hex("00", "00").is_err());
        assert!(Sm4Key::from_hex(&"zz".repeat(16), &"00".repeat(16)).is_err());
    }

    #[test]
    fn base64_rfc4648_vectors() {
        for (p, e) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(p.as_bytes()), e);
            assert_eq!(base64_decode(e).unwrap(), p.as_bytes());
        }
        assert!(base64_decode("Zg=").is_err());
        assert!(base64_decode("Z===").is_err());
        assert!(base64_decode("Zg==Zg==").is_err());
    }
}
