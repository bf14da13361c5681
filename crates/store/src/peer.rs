//! [`PeerStore`]: the database as a peer driver uses it — open and warm up at start-up,
//! turn the node's events and state into operations while running, flush at shutdown.
//!
//! It works on the overlay's public pieces (the contact cache, `ChordNode::records`, a CSP's
//! held requests, `SecureEvent`s), so the driver wires it with a handful of calls; see the
//! crate docs for the sequence.

use crate::db::{Opened, Store, StoreConfig};
use crate::error::{OpenError, StoreError, SubmitError, WriterError};
use crate::mirror::{PendingMirror, RecordMirror};
use crate::model::{
    CallEntry, CallOutcome, ContactEntry, Direction, Identity, Op, PendingRequest, Snapshot,
    unix_ms,
};
use crate::writer::{Writer, WriterConfig, WriterStats};
use overlay::secure::{ContactCache, LayerArcs, SecureEvent};
use overlay::wire::CallRequest;
use overlay::{ChordNode, NodeId, Time};
use service::sqlite::move_aside;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

/// Outgoing calls remembered for their start time and Call-ID (bounded like the node's).
const MAX_PLACED: usize = 4096;

/// What [`PeerStore::open`] found.
pub struct Opening {
    /// The store, writer running.
    pub store: PeerStore,
    /// Everything read from the file (expired rows already dropped).
    pub snapshot: Snapshot,
    /// Where a corrupt file was moved aside, if it was.
    pub moved_aside: Option<PathBuf>,
}

/// What [`PeerStore::warm`] put back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Contacts restored into the cache.
    pub contacts: usize,
    /// Records the node accepted.
    pub records: usize,
    /// Held requests still within their deadline: feed each to the node as
    /// `handle_message(now, req.caller, Message::Call(req))` so the CSP multicasts again.
    pub requests: Vec<CallRequest>,
}

/// The peer's database from the driver's side (see the module docs).
pub struct PeerStore {
    writer: Writer,
    records: RecordMirror,
    pending: PendingMirror,
    contacts_digest: Option<u64>,
    placed: VecDeque<(u64, Time, String)>,
    epoch_unix_ms: u64,
    arcs: LayerArcs,
}

impl PeerStore {
    /// Open `dir/peer.db` (a corrupt file, or one with undecodable rows, is moved aside and
    /// logged, and the peer starts empty), read the snapshot as
    /// of `now_unix_ms`, and start the writer thread. `epoch_unix_ms` is the Unix time of
    /// the driver's `Time::ZERO` (the same offset `SecureNode::new` takes); `arcs` gives
    /// each cached contact its layer.
    pub fn open(
        dir: &Path,
        cfg: StoreConfig,
        writer: WriterConfig,
        epoch_unix_ms: u64,
        now_unix_ms: u64,
        arcs: LayerArcs,
    ) -> Result<Opening, OpenError> {
        let Opened {
            mut store,
            mut moved_aside,
        } = Store::open_or_reset(dir, cfg.clone())?;
        let snapshot = match store.load_snapshot(now_unix_ms) {
            Ok(s) => s,
            Err(e @ (StoreError::BadRow { .. } | StoreError::Corrupt(_))) => {
                // Damaged rows: same treatment as a damaged file.
                let path = store.path().to_path_buf();
                drop(store);
                moved_aside = Some(move_aside(&path, &e.to_string())?);
                store = Store::open(dir, cfg)?;
                Snapshot::default()
            }
            Err(StoreError::Sqlite(source)) => {
                return Err(OpenError::Sqlite {
                    path: store.path().to_path_buf(),
                    source,
                });
            }
        };
        let writer = Writer::spawn(store, writer).map_err(|e| OpenError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Opening {
            store: PeerStore {
                writer,
                records: RecordMirror::from_records(&snapshot.records),
                pending: PendingMirror::from_handles(snapshot.pending.iter().map(|p| p.handle)),
                contacts_digest: None,
                placed: VecDeque::new(),
                epoch_unix_ms,
                arcs,
            },
            snapshot,
            moved_aside,
        })
    }

    /// Put the snapshot back into a fresh node at `now`: contacts into its cache (with
    /// their remaining life), records into its Chord node. Returns the held requests to
    /// re-inject. Records the node refuses (over its bounds) are dropped from the database
    /// at the next [`PeerStore::sync`].
    pub fn warm(
        &mut self,
        snapshot: &Snapshot,
        now: Time,
        cache: &mut ContactCache,
        chord: &mut ChordNode,
    ) -> Warmed {
        let now_ms = self.unix_ms(now);
        let before = cache.len();
        cache.restore(
            now,
            snapshot
                .contacts
                .iter()
                .filter_map(|e| Some((e.contact, e.remaining(now_ms)?))),
        );
        let records = snapshot
            .records
            .iter()
            .filter(|r| chord.put_local(r.key, r.value.clone()))
            .count();
        let requests = snapshot
            .pending
            .iter()
            .filter(|p| p.deadline_unix_ms >= now_ms)
            .map(|p| CallRequest {
                call: p.call,
                caller: p.caller,
                callee: p.callee,
                invite: p.invite.clone(),
                direct: false,
            })
            .collect();
        Warmed {
            contacts: cache.len().saturating_sub(before),
            records,
            requests,
        }
    }

    /// Store the identity (waits for queue room: it must not be dropped).
    pub fn set_identity(&self, identity: Identity) -> Result<(), SubmitError> {
        self.writer.submit_blocking(Op::SetIdentity(identity))
    }

    /// Remember an outgoing call placed at `now` (`SecureNode::call` returned `handle`), so
    /// its history line gets the start time and the INVITE's Call-ID.
    pub fn call_placed(&mut self, now: Time, handle: u64, invite: &[u8]) {
        let id = sip_call_id(invite).unwrap_or_else(|| format!("handle-{handle}"));
        self.call_placed_as(now, handle, id);
    }

    /// [`PeerStore::call_placed`] for a caller that knows the Call-ID already (its own
    /// user agent built the INVITE).
    pub fn call_placed_as(&mut self, now: Time, handle: u64, call_id: String) {
        if self.placed.len() >= MAX_PLACED {
            self.placed.pop_front();
        }
        self.placed.push_back((handle, now, call_id));
    }

    /// Record a call's end in the history: `CallRinging`, `CallFailed` and `IncomingCall`
    /// become lines; other events are ignored. Never blocks (a full queue drops the line).
    pub fn on_event(&mut self, now: Time, event: &SecureEvent) {
        let entry = match event {
            SecureEvent::CallRinging {
                call,
                callee,
                setup,
                ..
            } => {
                let sent = u64::try_from(setup.as_micros()).unwrap_or(u64::MAX);
                let (started, id) = self.take_placed(*call, Time(now.0.saturating_sub(sent)));
                CallEntry {
                    call_id: id,
                    direction: Direction::Outgoing,
                    peer: *callee,
                    started_unix_ms: self.unix_ms(started),
                    setup_ms: Some(u32::try_from(setup.as_millis()).unwrap_or(u32::MAX)),
                    outcome: CallOutcome::Ringing,
                }
            }
            SecureEvent::CallFailed {
                call,
                callee,
                reason,
            } => {
                let (started, id) = self.take_placed(*call, now);
                CallEntry {
                    call_id: id,
                    direction: Direction::Outgoing,
                    peer: *callee,
                    started_unix_ms: self.unix_ms(started),
                    setup_ms: None,
                    outcome: CallOutcome::Failed(*reason),
                }
            }
            SecureEvent::IncomingCall { caller, invite, .. } => CallEntry {
                call_id: sip_call_id(invite)
                    .unwrap_or_else(|| format!("in-{}-{}", caller.id.0, now.0)),
                direction: Direction::Incoming,
                peer: caller.id,
                started_unix_ms: self.unix_ms(now),
                setup_ms: None,
                outcome: CallOutcome::Ringing,
            },
            _ => return,
        };
        let _ = self.writer.submit(Op::AddCall(entry));
    }

    /// Bring the database up to the node's state at `now`: the contact cache (rewritten
    /// only when it changed), records and held requests (only what changed). Call every
    /// few seconds and once more before [`PeerStore::shutdown`]. Never blocks; operations
    /// dropped on a full queue are retried at the next sync. `held` is
    /// `SecureNode::held_requests()` (empty for a peer that is not a CSP).
    pub fn sync<'a>(
        &mut self,
        now: Time,
        cache: &ContactCache,
        records: &BTreeMap<NodeId, Vec<u8>>,
        held: impl IntoIterator<Item = (u64, &'a CallRequest, Time)>,
    ) {
        let now_ms = self.unix_ms(now);
        // Contacts: a digest of (id, addr, expiry) tells whether anything changed.
        let entries: Vec<ContactEntry> = cache
            .entries(now)
            .map(|(c, left)| {
                ContactEntry::from_cache(c, self.arcs.layer_of(c.id), now_ms, left, cache.ttl())
            })
            .collect();
        let mut h = DefaultHasher::new();
        for e in &entries {
            (e.contact, e.expires_unix_ms()).hash(&mut h);
        }
        let digest = h.finish();
        if self.contacts_digest != Some(digest) {
            self.contacts_digest = match self.writer.submit(Op::ReplaceContacts(entries)) {
                Ok(()) => Some(digest),
                Err(_) => None,
            };
        }
        for op in self.records.diff(records) {
            if self.writer.submit(op.clone()).is_err() {
                self.records.retry(&op);
            }
        }
        let held: BTreeMap<u64, (&CallRequest, Time)> =
            held.into_iter().map(|(h, r, d)| (h, (r, d))).collect();
        let epoch = self.epoch_unix_ms;
        let ops = self.pending.diff(held.keys().copied(), |handle| {
            let (r, deadline) = held.get(&handle)?;
            Some(PendingRequest {
                handle,
                call: r.call,
                caller: r.caller,
                callee: r.callee,
                invite: r.invite.clone(),
                deadline_unix_ms: unix_ms(*deadline, epoch),
            })
        });
        for op in ops {
            if self.writer.submit(op.clone()).is_err() {
                self.pending.retry(&op);
            }
        }
    }

    /// The node handed its records to its successor (graceful leave): clear them here too,
    /// so a restart does not resurrect records someone else now owns.
    pub fn records_handed_over(&mut self) -> Result<(), SubmitError> {
        self.records = RecordMirror::new();
        self.writer.submit_blocking(Op::ClearRecords)
    }

    /// Wait until everything submitted is committed. Blocks (use `spawn_blocking`).
    pub fn flush(&self) -> Result<(), WriterError> {
        self.writer.flush()
    }

    /// Writer counters (queue drops, refused operations, batches).
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Flush and stop the writer thread. Blocks (use `spawn_blocking`).
    pub fn shutdown(self) -> Result<(), WriterError> {
        self.writer.close().map(drop)
    }

    fn unix_ms(&self, t: Time) -> u64 {
        unix_ms(t, self.epoch_unix_ms)
    }

    fn take_placed(&mut self, handle: u64, fallback: Time) -> (Time, String) {
        match self.placed.iter().position(|(h, _, _)| *h == handle) {
            Some(i) => self
                .placed
                .remove(i)
                .map_or((fallback, format!("handle-{handle}")), |(_, t, id)| (t, id)),
            None => (fallback, format!("handle-{handle}")),
        }
    }
}

/// The Call-ID header of a SIP request (`Call-ID:` or compact `i:`), if it has a sane one.
fn sip_call_id(invite: &[u8]) -> Option<String> {
    let head = invite.get(..invite.len().min(8192))?;
    let text = String::from_utf8_lossy(head);
    for line in text.split("\r\n").take_while(|l| !l.is_empty()).skip(1) {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            let v = value.trim();
            return (!v.is_empty() && v.len() <= crate::db::MAX_CALL_ID_LEN).then(|| v.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{PeerStore, sip_call_id};

    #[test]
    fn peer_store_can_move_into_the_driver_task() {
        fn send<T: Send + 'static>() {}
        send::<PeerStore>();
    }

    #[test]
    fn call_id_from_invite() {
        let inv = b"INVITE sip:bob@x SIP/2.0\r\nVia: SIP/2.0/TLS a\r\ni: abc@host\r\n\r\nbody";
        assert_eq!(sip_call_id(inv).as_deref(), Some("abc@host"));
        let inv = b"INVITE sip:bob@x SIP/2.0\r\nCALL-ID:  x1 \r\n\r\n";
        assert_eq!(sip_call_id(inv).as_deref(), Some("x1"));
        assert_eq!(sip_call_id(b"INVITE"), None);
        assert_eq!(
            sip_call_id(b"garbage\r\nno colon here\r\nCall-ID: z\r\n"),
            None
        );
        assert_eq!(sip_call_id(&[0xff; 20]), None);
    }
}
