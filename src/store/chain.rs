//! The hash chain over alarm events and audit rows (pure; see the module docs of
//! [`crate::store`] for the definition).

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The hash before the first row of a chain that was never pruned.
pub const GENESIS: Hash = [0u8; 32];

/// Which chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainName {
    AlarmEvents,
    Audit,
}

impl ChainName {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainName::AlarmEvents => "alarm_events",
            ChainName::Audit => "audit",
        }
    }
}

/// The first row where a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub chain: ChainName,
    /// `seq` of the first row that does not verify.
    pub seq: i64,
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} row {}: {}",
            self.chain.as_str(),
            self.seq,
            self.reason
        )
    }
}

/// `SHA-256(prev ‖ len(f₁) f₁ ‖ len(f₂) f₂ ‖ …)` with `len` a u32 big-endian.
pub fn link(prev: &Hash, chain: ChainName, fields: &[&[u8]]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    let mut put = |b: &[u8]| {
        h.update(u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
        h.update(b);
    };
    put(chain.as_str().as_bytes());
    for f in fields {
        put(f);
    }
    h.finalize().into()
}

/// The chained fields of an alarm-event row, in column order.
#[allow(clippy::too_many_arguments)]
pub fn alarm_event_hash(
    prev: &Hash,
    seq: i64,
    alarm_id: i64,
    pid: Option<i64>,
    kind: &str,
    transition: &str,
    grade: Option<i64>,
    ts: i64,
    alarm_json: &str,
) -> Hash {
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    link(
        prev,
        ChainName::AlarmEvents,
        &[
            seq.to_string().as_bytes(),
            alarm_id.to_string().as_bytes(),
            opt(pid).as_bytes(),
            kind.as_bytes(),
            transition.as_bytes(),
            opt(grade).as_bytes(),
            ts.to_string().as_bytes(),
            alarm_json.as_bytes(),
        ],
    )
}

/// The chained fields of an audit row, in column order.
#[allow(clippy::too_many_arguments)]
pub fn audit_hash(
    prev: &Hash,
    seq: i64,
    ts: i64,
    who: &str,
    action: &str,
    target: &str,
    detail: &str,
) -> Hash {
    link(
        prev,
        ChainName::Audit,
        &[
            seq.to_string().as_bytes(),
            ts.to_string().as_bytes(),
            who.as_bytes(),
            action.as_bytes(),
            target.as_bytes(),
            detail.as_bytes(),
        ],
    )
}

/// A stored hash blob as a digest (`None` when its length is wrong).
pub fn from_blob(b: &[u8]) -> Option<Hash> {
    b.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        // "ab" + "c" and "a" + "bc" must not collide.
        let a = link(&GENESIS, ChainName::Audit, &[b"ab", b"c"]);
        let b = link(&GENESIS, ChainName::Audit, &[b"a", b"bc"]);
        assert_ne!(a, b);
        assert_ne!(
            link(&GENESIS, ChainName::Audit, &[b"x"]),
            link(&GENESIS, ChainName::AlarmEvents, &[b"x"])
        );
    }

    #[test]
    fn chain_depends_on_prev() {
        let one = audit_hash(&GENESIS, 1, 5, "op", "ack", "7", "");
        let two = audit_hash(&one, 2, 5, "op", "ack", "7", "");
        assert_ne!(two, audit_hash(&GENESIS, 2, 5, "op", "ack", "7", ""));
    }
}
