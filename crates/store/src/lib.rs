//! The peer's embedded database: one SQLite file, `peer.db`, in the peer's data directory.
//!
//! The paper gives every peer, CSP and CSPG a database. It holds what a restarted peer needs
//! to come back warm: its identity (IDs and certificate fingerprints; the private key stays
//! in its own 0600 file), the contact cache, the overlay records it is responsible for, the
//! requests a CSP holds, and the call history. Everything is bounded like the in-memory
//! structures it mirrors ([`StoreConfig`]).
//!
//! # Design
//! - [`Store`] owns the connection, opened by the services' SQLite shell (`service::sqlite`):
//!   WAL journal, `synchronous=FULL` by default ([`Durability`]), a busy timeout,
//!   `PRAGMA quick_check` at open, a `schema_version` table with forward-only migrations. A
//!   newer schema is refused ([`OpenError::NewerSchema`]); a damaged file is a typed
//!   [`OpenError::Corrupt`], and [`Store::open_or_reset`] moves it aside and starts fresh.
//! - [`Writer`] moves the store onto its own thread (the shell's writer) behind a bounded
//!   queue. The peer's loop calls [`Writer::submit`], which never blocks (full queue: the
//!   operation is dropped and counted); the thread commits batches of [`Op`]s, one
//!   transaction (one fsync) per batch.
//!   [`Writer::flush`] is the acknowledgement: what was submitted before it survives `kill -9`.
//! - [`Store::load_snapshot`] reads everything once at start-up ([`Snapshot`]).
//! - [`RecordMirror`] and [`PendingMirror`] turn `ChordNode::records()` and a CSP's held
//!   requests into the puts and removes that changed.
//!
//! - [`PeerStore`] bundles all of it for a peer driver.
//!
//! Times in the database are Unix milliseconds ([`unix_ms`]); the overlay's clock restarts
//! with the process.
//!
//! # Wiring into a peer
//! 1. Start-up, before joining: [`PeerStore::open`] (data dir, `epoch_unix_ms` = the Unix
//!    time of the driver's `Time::ZERO`, the layer arcs), then [`PeerStore::warm`] with the
//!    node's contact cache and `chord_mut()`; feed each returned request to the node as
//!    `Message::Call` from `req.caller`. [`PeerStore::set_identity`] once.
//! 2. Running: after `SecureNode::call` → [`PeerStore::call_placed`]; every `SecureEvent`
//!    → [`PeerStore::on_event`]; every few seconds → [`PeerStore::sync`] with the cache,
//!    `chord().records()` and the CSP's held requests. None of these block.
//! 3. Shutdown: after the graceful leave handed the records over →
//!    [`PeerStore::records_handed_over`], a last `sync`, then [`PeerStore::shutdown`]
//!    (blocking: `spawn_blocking`).
#![warn(missing_docs, unreachable_pub)]

mod db;
mod error;
mod mirror;
mod model;
mod peer;
mod schema;
mod writer;

pub use db::{
    ApplyReport, DB_FILE, MAX_CALL_ID_LEN, MAX_SIGNATURE_LEN, Opened, Store, StoreConfig,
    StoreCounts,
};
pub use error::{OpenError, StoreError, SubmitError, WriterError};
pub use mirror::{DEFAULT_HASH_BUDGET, PendingMirror, RecordMirror};
pub use model::{
    CallEntry, CallOutcome, ContactEntry, Direction, Identity, Op, PendingRequest, Snapshot,
    StoredRecord, remaining, unix_ms,
};
pub use peer::{Opening, PeerStore, Warmed};
pub use service::sqlite::Durability;
pub use writer::{Writer, WriterConfig, WriterStats};
