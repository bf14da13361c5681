//! [`Writer`]: the store on its own thread, so the peer's event loop never waits on disk.
//!
//! The loop hands [`Op`]s to a bounded channel with [`Writer::submit`], which never blocks.
//! The writer thread gathers them into one transaction per batch: a batch closes after
//! [`WriterConfig::max_batch_ops`] operations or [`WriterConfig::max_batch_delay`] after its
//! first operation, whichever comes first. One fsync then covers the whole batch.
//!
//! **Full queue policy: counted drop.** When the queue is full, `submit` drops the
//! operation, counts it in [`WriterStats::dropped_full`] and returns [`SubmitError::Full`].
//! The node's memory is the live state and the database is its warm-start copy, so losing a
//! cache touch under overload costs a colder restart, while stalling the loop would cost
//! calls. Callers that must not lose an operation (identity at start-up, the record hand-over
//! at leave) use [`Writer::submit_blocking`], which waits for room (backpressure).
//!
//! **Acknowledgement.** [`Writer::flush`] returns once every operation submitted before it
//! is committed (and, with [`crate::Durability::Full`], fsynced). Those writes survive a
//! `kill -9` of the process.

use crate::db::{ApplyReport, Store};
use crate::error::{SubmitError, WriterError};
use crate::model::Op;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Batching and queue bounds of a [`Writer`].
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Operations the queue holds before `submit` drops.
    pub queue: usize,
    /// Most operations in one transaction.
    pub max_batch_ops: usize,
    /// Longest an operation waits for its batch to commit (absent a flush).
    pub max_batch_delay: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            queue: 8192,
            max_batch_ops: 1024,
            max_batch_delay: Duration::from_millis(20),
        }
    }
}

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

#[derive(Default)]
struct Counters {
    submitted: AtomicU64,
    dropped_full: AtomicU64,
    committed: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    pruned_calls: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
}

enum Cmd {
    Op(Op),
    Flush(SyncSender<Result<(), WriterError>>),
}

/// Failures since the last flush.
#[derive(Default)]
struct Failures {
    count: u64,
    last: String,
}

/// The store on a dedicated thread with a bounded queue (see the module docs).
pub struct Writer {
    tx: Option<SyncSender<Cmd>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<Store>>,
}

impl Writer {
    /// Move `store` onto a new writer thread.
    pub fn spawn(store: Store, cfg: WriterConfig) -> Result<Writer, WriterError> {
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx, cfg, &c))
            .map_err(|e| WriterError::Spawn(e.to_string()))?;
        Ok(Writer {
            tx: Some(tx),
            counters,
            thread: Some(thread),
        })
    }

    /// Queue `op` without blocking. On a full queue the operation is dropped and counted.
    pub fn submit(&self, op: Op) -> Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Closed)?;
        match tx.try_send(Cmd::Op(op)) {
            Ok(()) => {
                self.counters.submitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.counters.dropped_full.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Queue `op`, waiting for room if the queue is full (backpressure). Not for the
    /// peer's event loop; for start-up, shutdown and `spawn_blocking`.
    pub fn submit_blocking(&self, op: Op) -> Result<(), SubmitError> {
        let tx = self.tx.as_ref().ok_or(SubmitError::Closed)?;
        tx.send(Cmd::Op(op)).map_err(|_| SubmitError::Closed)?;
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Commit everything submitted so far and wait for it. `Ok` means every operation
    /// accepted before this call is durable, unless a bound refused it (counted in
    /// [`WriterStats::rejected`]). Blocks: from async code call it in `spawn_blocking`.
    pub fn flush(&self) -> Result<(), WriterError> {
        let tx = self.tx.as_ref().ok_or(WriterError::Closed)?;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send(Cmd::Flush(done_tx))
            .map_err(|_| WriterError::Closed)?;
        done_rx.recv().map_err(|_| WriterError::Closed)?
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            submitted: get(&c.submitted),
            dropped_full: get(&c.dropped_full),
            committed: get(&c.committed),
            rejected: get(&c.rejected),
            evicted: get(&c.evicted),
            pruned_calls: get(&c.pruned_calls),
            batches: get(&c.batches),
            failed_batches: get(&c.failed_batches),
        }
    }

    /// Flush, stop the thread and hand the store back (for a final read, or tests).
    pub fn close(mut self) -> Result<Store, WriterError> {
        let flushed = self.flush();
        self.tx = None; // the thread sees the channel close and returns the store
        let store = self
            .thread
            .take()
            .ok_or(WriterError::Closed)?
            .join()
            .map_err(|_| WriterError::Closed)?;
        flushed.map(|()| store)
    }
}

impl Drop for Writer {
    /// Commit what is queued and stop the thread (errors are logged by the thread).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut store: Store, rx: Receiver<Cmd>, cfg: WriterConfig, c: &Counters) -> Store {
    let mut failures = Failures::default();
    let max_ops = cfg.max_batch_ops.max(1);
    let mut batch: Vec<Op> = Vec::with_capacity(max_ops);
    let mut open = true;
    while open {
        // Wait for the first command of a batch.
        let first = match rx.recv() {
            Ok(cmd) => cmd,
            Err(_) => break,
        };
        let deadline = Instant::now() + cfg.max_batch_delay;
        // A flush ends the batch, so a batch has at most one waiter.
        let mut flush_waiter = None;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Cmd::Op(op)) => batch.push(op),
                Some(Cmd::Flush(w)) => {
                    flush_waiter = Some(w);
                    break; // commit now
                }
                None => {}
            }
            if batch.len() >= max_ops {
                break;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            // Take what is already queued without sleeping; sleep only for the remainder.
            match rx.try_recv() {
                Ok(cmd) => next = Some(cmd),
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(mpsc::TryRecvError::Empty) if wait.is_zero() => break,
                Err(mpsc::TryRecvError::Empty) => match rx.recv_timeout(wait) {
                    Ok(cmd) => next = Some(cmd),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                },
            }
        }
        commit(&mut store, &mut batch, c, &mut failures);
        if let Some(w) = flush_waiter {
            let f = &mut failures;
            let result = if f.count == 0 {
                Ok(())
            } else {
                Err(WriterError::Commit {
                    failed: f.count,
                    last: std::mem::take(&mut f.last),
                })
            };
            f.count = 0;
            let _ = w.send(result);
        }
    }
    commit(&mut store, &mut batch, c, &mut failures);
    store
}

fn commit(store: &mut Store, batch: &mut Vec<Op>, c: &Counters, f: &mut Failures) {
    if batch.is_empty() {
        return;
    }
    match store.apply(batch) {
        Ok(ApplyReport {
            applied,
            rejected,
            evicted,
            pruned_calls,
        }) => {
            c.committed.fetch_add(applied, Ordering::Relaxed);
            c.rejected.fetch_add(rejected, Ordering::Relaxed);
            c.evicted.fetch_add(evicted, Ordering::Relaxed);
            c.pruned_calls.fetch_add(pruned_calls, Ordering::Relaxed);
            c.batches.fetch_add(1, Ordering::Relaxed);
            if rejected > 0 {
                tracing::debug!(rejected, "peer database: operations over a bound refused");
            }
        }
        Err(e) => {
            c.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::error!(ops = batch.len(), error = %e, "peer database: batch lost");
            f.count += 1;
            f.last = e.to_string();
        }
    }
    batch.clear();
}
