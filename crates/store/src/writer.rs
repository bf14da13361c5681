//! [`Writer`]: the store on its own thread, so the peer's event loop never waits on disk.
//!
//! The thread, queue and batching are the SQLite shell's (`service::sqlite::Writer`); this
//! module adds what the peer's database counts besides: operations applied, refused by a
//! bound, contacts evicted and call-history lines pruned ([`WriterStats`]).
//!
//! **Full queue policy: counted drop.** When the queue is full, [`Writer::submit`] drops
//! the operation, counts it in [`WriterStats::dropped_full`] and returns
//! [`SubmitError::Full`]. The node's memory is the live state and the database is its
//! warm-start copy, so losing a cache touch under overload costs a colder restart, while
//! stalling the loop would cost calls. Callers that must not lose an operation (identity at
//! start-up, the record hand-over at leave) use [`Writer::submit_blocking`], which waits
//! for room (backpressure).
//!
//! **Acknowledgement.** [`Writer::flush`] returns once every operation submitted before it
//! is committed (and, with [`crate::Durability::Full`], fsynced). Those writes survive a
//! `kill -9` of the process.

use crate::db::{ApplyReport, Store};
use crate::error::{StoreError, SubmitError, WriterError};
use crate::model::Op;
use service::sqlite::{self, Apply};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use service::sqlite::WriterConfig;

/// Counters of a [`Writer`], read without stopping it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Operations accepted into the queue.
    pub submitted: u64,
    /// Operations dropped because the queue was full.
    pub dropped_full: u64,
    /// Operations committed.
    pub committed: u64,
    /// Operations refused by a bound (see [`ApplyReport::rejected`]).
    pub rejected: u64,
    /// Contacts evicted to stay within the bound.
    pub evicted: u64,
    /// Call-history lines pruned.
    pub pruned_calls: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Transactions that failed (their operations are lost).
    pub failed_batches: u64,
}

/// What the store's batches did, summed.
#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    pruned_calls: AtomicU64,
}

/// The store as the writer thread owns it.
struct Committer {
    store: Store,
    counters: Arc<Counters>,
}

impl Apply for Committer {
    type Op = Op;
    type Error = StoreError;

    fn apply(&mut self, batch: &mut Vec<Op>) -> Result<(), StoreError> {
        let ApplyReport {
            applied,
            rejected,
            evicted,
            pruned_calls,
        } = self.store.apply(batch)?;
        let c = &self.counters;
        c.committed.fetch_add(applied, Ordering::Relaxed);
        c.rejected.fetch_add(rejected, Ordering::Relaxed);
        c.evicted.fetch_add(evicted, Ordering::Relaxed);
        c.pruned_calls.fetch_add(pruned_calls, Ordering::Relaxed);
        if rejected > 0 {
            tracing::debug!(rejected, "peer database: operations over a bound refused");
        }
        Ok(())
    }
}

/// The store on a dedicated thread with a bounded queue (see the module docs).
pub struct Writer {
    inner: sqlite::Writer<Committer>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Move `store` onto a new writer thread.
    pub fn spawn(store: Store, cfg: WriterConfig) -> Result<Writer, WriterError> {
        let counters = Arc::new(Counters::default());
        let committer = Committer {
            store,
            counters: Arc::clone(&counters),
        };
        Ok(Writer {
            inner: sqlite::Writer::spawn("store-writer", committer, cfg)?,
            counters,
        })
    }

    /// Queue `op` without blocking. On a full queue the operation is dropped and counted.
    pub fn submit(&self, op: Op) -> Result<(), SubmitError> {
        self.inner.submit(op)
    }

    /// Queue `op`, waiting for room if the queue is full (backpressure). Not for the
    /// peer's event loop; for start-up, shutdown and `spawn_blocking`.
    pub fn submit_blocking(&self, op: Op) -> Result<(), SubmitError> {
        self.inner.submit_blocking(op)
    }

    /// Commit everything submitted so far and wait for it. `Ok` means every operation
    /// accepted before this call is durable, unless a bound refused it (counted in
    /// [`WriterStats::rejected`]). Blocks: from async code call it in `spawn_blocking`.
    pub fn flush(&self) -> Result<(), WriterError> {
        self.inner.flush()
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        let shell = self.inner.stats();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            submitted: shell.submitted,
            dropped_full: shell.dropped_full,
            committed: get(&c.committed),
            rejected: get(&c.rejected),
            evicted: get(&c.evicted),
            pruned_calls: get(&c.pruned_calls),
            batches: shell.batches,
            failed_batches: shell.failed_batches,
        }
    }

    /// Flush, stop the thread and hand the store back (for a final read, or tests).
    pub fn close(self) -> Result<Store, WriterError> {
        self.inner.close().map(|c| c.store)
    }
}
