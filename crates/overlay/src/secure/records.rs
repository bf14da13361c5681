//! Records in the overlay (for SIP: who is registered under an address of record): a peer
//! stores a record at the peer responsible for its key, which checks it with a pluggable
//! [`RecordValidator`] (the overlay does not know what a registration is, or whose it is) and
//! copies it to its successors; anyone can fetch it from there.

use crate::{NodeId, Time};

/// What the responsible peer does with a record that passed its validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordAction {
    /// Keep it (replacing the old one).
    Store,
    /// Remove the record under the key (e.g. an unregister).
    Remove,
    /// Keep this value instead of the offered one: the validator merged the offered record
    /// into what the peer holds (e.g. registrations of several AoRs whose hashes share a key).
    Replace(Vec<u8>),
}

/// Decides whether a record may replace what a peer holds under its key. Implemented by the
/// application (the SIP front-end checks a registration's signature, owner and expiry).
pub trait RecordValidator: Send + Sync {
    /// `old` is what this peer holds now; `now_unix_ms` is wall-clock time.
    fn validate(&self, key: NodeId, old: Option<&[u8]>, new: &[u8], now_unix_ms: u64) -> Verdict;
}

/// A validator's answer: what to do with an offered record, or why it is refused.
pub type Verdict = Result<RecordAction, String>;

/// A store or fetch waiting for its lookup or its answer.
#[derive(Clone, Debug)]
pub(super) struct RecordOp {
    pub(super) query: u64,
    pub(super) lookup: Option<u64>,
    pub(super) key: NodeId,
    /// `Some` for a store.
    pub(super) value: Option<Vec<u8>>,
    pub(super) deadline: Time,
}
