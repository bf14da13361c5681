//! The rows the peer persists, as typed values (no SQL here).
//!
//! Times are Unix milliseconds: the overlay's [`overlay::Time`] is relative to the driver's
//! start and means nothing after a restart. [`unix_ms`] and [`remaining`] convert.

use overlay::secure::{CallFailure, Layer, Role};
use overlay::{Contact, NodeId, Time};
use std::time::Duration;

/// Who this peer is, as enrolled: enough to notice a changed identity at start-up. The
/// private key is not here; it stays in its own file with 0600 permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The Node-ID the E&A server assigned.
    pub node_id: NodeId,
    /// The peer's layer (1, 2 or 3).
    pub layer: Layer,
    /// Peer, CSP or CSPG.
    pub role: Role,
    /// SHA-256 of the peer's certificate (DER).
    pub cert_fingerprint: [u8; 32],
    /// SHA-256 of the CA chain it was issued under (DER, concatenated).
    pub chain_fingerprint: [u8; 32],
}

/// One contact-cache entry (layers 1 and 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContactEntry {
    /// The cached peer and where it listens.
    pub contact: Contact,
    /// Its layer.
    pub layer: Layer,
    /// When it was cached, Unix ms.
    pub last_seen_unix_ms: u64,
    /// How long the entry lives after `last_seen_unix_ms`.
    pub ttl_ms: u64,
}

impl ContactEntry {
    /// An entry from [`overlay::secure::ContactCache::entries`]: `remaining` life as of
    /// `now_unix_ms`, cache lifetime `ttl`.
    pub fn from_cache(
        contact: Contact,
        layer: Layer,
        now_unix_ms: u64,
        remaining: Duration,
        ttl: Duration,
    ) -> Self {
        let ttl_ms = millis(ttl);
        let expires = now_unix_ms.saturating_add(millis(remaining).min(ttl_ms));
        ContactEntry {
            contact,
            layer,
            last_seen_unix_ms: expires.saturating_sub(ttl_ms),
            ttl_ms,
        }
    }

    /// When the entry expires, Unix ms.
    pub fn expires_unix_ms(&self) -> u64 {
        self.last_seen_unix_ms.saturating_add(self.ttl_ms)
    }

    /// Life left as of `now_unix_ms` (for [`overlay::secure::ContactCache::restore`]);
    /// `None` once expired.
    pub fn remaining(&self, now_unix_ms: u64) -> Option<Duration> {
        remaining(self.expires_unix_ms(), now_unix_ms)
    }
}

/// An overlay record this peer is responsible for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record's key on the ring.
    pub key: NodeId,
    /// The payload (at most [`crate::StoreConfig::max_record_len`] bytes).
    pub value: Vec<u8>,
    /// Who stored it, when known.
    pub owner: Option<NodeId>,
    /// The owner's signature over the record, when the record is signed.
    pub signature: Option<Vec<u8>>,
    /// When it lapses, Unix ms; `None` = kept until removed.
    pub expires_unix_ms: Option<u64>,
}

impl StoredRecord {
    /// A plain Chord record (no owner, signature or expiry), as `ChordNode::records` holds.
    pub fn plain(key: NodeId, value: Vec<u8>) -> Self {
        StoredRecord {
            key,
            value,
            owner: None,
            signature: None,
            expires_unix_ms: None,
        }
    }

    /// Bytes it counts against [`crate::StoreConfig::max_record_bytes`].
    pub fn size(&self) -> u64 {
        (self.value.len() + self.signature.as_ref().map_or(0, Vec::len)) as u64
    }
}

/// A call request a CSP holds while its PingRequest copies are out.
///
/// Carries everything to rebuild the `wire::CallRequest` and feed it back into the node
/// after a restart, while `deadline_unix_ms` has not passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRequest {
    /// The CSP's handle for the held request.
    pub handle: u64,
    /// The caller's handle for the call.
    pub call: u64,
    /// Who calls.
    pub caller: Contact,
    /// Who is called.
    pub callee: NodeId,
    /// The original request (a SIP INVITE).
    pub invite: Vec<u8>,
    /// When the CSP gives up on it, Unix ms.
    pub deadline_unix_ms: u64,
}

/// Which way a call went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We placed it.
    Outgoing,
    /// We were called.
    Incoming,
}

/// How a call ended, as far as set-up goes: the history line's outcome. The failures are
/// the overlay's own [`CallFailure`]; the `calls.outcome` column names them as before
/// (`ringing`, `timed_out`, `tampered`, `no_route`, `overloaded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// The callee rang (outgoing) or we rang (incoming).
    Ringing,
    /// The call failed.
    Failed(CallFailure),
}

/// One line of call history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEntry {
    /// The call's identity (SIP Call-ID, or the node's call handle as text).
    pub call_id: String,
    /// Placed or received.
    pub direction: Direction,
    /// The other end.
    pub peer: NodeId,
    /// When it started, Unix ms.
    pub started_unix_ms: u64,
    /// Session request delay (request sent → Ringing), when it rang.
    pub setup_ms: Option<u32>,
    /// How it ended.
    pub outcome: CallOutcome,
}

/// Everything the database holds, read once at start-up to warm the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The identity last stored, if any.
    pub identity: Option<Identity>,
    /// Fresh contact-cache entries, least recently used first (restore in this order).
    pub contacts: Vec<ContactEntry>,
    /// Unexpired records, by key.
    pub records: Vec<StoredRecord>,
    /// CSP requests whose deadline has not passed, by handle.
    pub pending: Vec<PendingRequest>,
    /// Call history, oldest first.
    pub calls: Vec<CallEntry>,
}

/// One change to the database; the writer applies a batch of them in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store (replace) the identity.
    SetIdentity(Identity),
    /// Insert or refresh a contact and mark it most recently used; the least recently
    /// used entry goes when the cache bound is exceeded.
    TouchContact(ContactEntry),
    /// Forget a contact (it failed).
    RemoveContact(NodeId),
    /// Replace the whole cache with these entries (least recently used first).
    ReplaceContacts(Vec<ContactEntry>),
    /// Insert or replace a record; refused (counted) when over a bound.
    PutRecord(StoredRecord),
    /// Drop a record (handed to another peer).
    RemoveRecord(NodeId),
    /// Drop all records (graceful leave handed them to the successor).
    ClearRecords,
    /// Remember a held CSP request; refused (counted) when over the bound.
    PutPending(PendingRequest),
    /// The request was fetched or expired.
    RemovePending(u64),
    /// Append to the call history; the oldest lines go past the bound.
    AddCall(CallEntry),
}

/// Unix milliseconds of driver instant `t`, for a driver whose `Time::ZERO` was at
/// `epoch_unix_ms`.
pub fn unix_ms(t: Time, epoch_unix_ms: u64) -> u64 {
    epoch_unix_ms.saturating_add(t.as_micros() / 1000)
}

/// Time left until `deadline_unix_ms` as of `now_unix_ms`; `None` once it has passed.
pub fn remaining(deadline_unix_ms: u64, now_unix_ms: u64) -> Option<Duration> {
    (deadline_unix_ms >= now_unix_ms).then(|| Duration::from_millis(deadline_unix_ms - now_unix_ms))
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_entry_from_cache_keeps_expiry() {
        let c = Contact::id_only(NodeId(5));
        let e = ContactEntry::from_cache(
            c,
            Layer::ONE,
            10_000,
            Duration::from_secs(4),
            Duration::from_secs(10),
        );
        assert_eq!(e.expires_unix_ms(), 14_000);
        assert_eq!(e.last_seen_unix_ms, 4_000);
        assert_eq!(e.remaining(13_000), Some(Duration::from_secs(1)));
        assert_eq!(e.remaining(14_001), None);
        assert_eq!(unix_ms(Time::from_millis(250), 1_000), 1_250);
    }
}
