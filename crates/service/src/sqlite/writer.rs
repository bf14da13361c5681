//! [`Writer`]: a database on its own thread, so the caller never waits on disk.
//!
//! Callers hand operations to a bounded queue; the writer thread gathers them into one
//! transaction per batch. A batch closes after [`WriterConfig::max_batch_ops`] operations
//! or [`WriterConfig::max_batch_delay`] after its first operation, whichever comes first
//! (a zero delay commits whatever is already queued, as soon as it is taken). One fsync
//! then covers the whole batch. What a batch does is the owner's [`Apply`].
//!
//! **Full queue.** Three ways to queue, for three kinds of caller:
//! - [`Writer::submit`] never blocks: a full queue drops the operation and counts it in
//!   [`WriterStats::dropped_full`] (an event loop whose database is only a warm-start copy).
//! - [`Writer::send`] waits for room without blocking the async runtime (request handlers
//!   whose answer depends on the write: back-pressure).
//! - [`Writer::submit_blocking`] blocks the thread until there is room (start-up,
//!   shutdown, `spawn_blocking`; writes that must not be lost).
//!
//! **Acknowledgement.** [`Writer::flush`] returns once every operation queued before it is
//! committed (and, with [`super::Durability::Full`], fsynced). Those writes survive a
//! `kill -9` of the process.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The state a [`Writer`] thread owns (a connection and whatever goes with it) and how a
/// batch of operations is committed to it.
pub trait Apply: Send + 'static {
    /// One queued operation.
    type Op: Send + 'static;
    /// Why a batch failed.
    type Error: Display;
    /// Apply `batch` in one transaction, all or nothing. Operations may be taken out of
    /// `batch` (the writer clears it afterwards). An error means nothing of the batch was
    /// committed; it is logged, counted and reported at the next [`Writer::flush`].
    fn apply(&mut self, batch: &mut Vec<Self::Op>) -> Result<(), Self::Error>;
}

/// Batching and queue bounds of a [`Writer`].
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Operations the queue holds before it is full.
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
    /// Operations dropped by [`Writer::submit`] because the queue was full.
    pub dropped_full: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Transactions that failed (their operations are lost).
    pub failed_batches: u64,
}

/// Queuing an operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: the operation was dropped and counted
    /// ([`WriterStats::dropped_full`]).
    #[error("database writer queue full; operation dropped")]
    Full,
    /// The writer thread is gone.
    #[error("database writer has stopped")]
    Closed,
}

/// A flush or the writer's shutdown reported a problem.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriterError {
    /// The writer thread is gone (it panicked or was closed).
    #[error("database writer has stopped")]
    Closed,
    /// `failed` batches since the last flush could not be committed; their operations are
    /// lost (the last error is given).
    #[error("{failed} batch(es) failed to commit since the last flush; last error: {last}")]
    Commit {
        /// Batches that failed.
        failed: u64,
        /// The last failure, as text.
        last: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start the database writer thread: {0}")]
    Spawn(String),
}

/// What the caller side and the thread share.
#[derive(Default)]
struct Shared {
    submitted: AtomicU64,
    dropped_full: AtomicU64,
    batches: AtomicU64,
    failed_batches: AtomicU64,
    /// The last batch failed (cleared by the next that commits).
    last_failed: AtomicBool,
    /// Signalled whenever the thread takes a command off the queue (or stops), for
    /// [`Writer::send`] callers waiting for room.
    room: Notify,
}

enum Cmd<O> {
    Op(O),
    Flush(SyncSender<Result<(), WriterError>>),
}

/// Failures since the last flush.
#[derive(Default)]
struct Failures {
    count: u64,
    last: String,
}

/// A database on a dedicated thread with a bounded queue (see the module docs).
pub struct Writer<A: Apply> {
    tx: Option<SyncSender<Cmd<A::Op>>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<A>>,
}

impl<A: Apply> Writer<A> {
    /// Move `state` onto a new thread called `name`.
    pub fn spawn(name: &str, state: A, cfg: WriterConfig) -> Result<Writer<A>, WriterError> {
        let (tx, rx) = mpsc::sync_channel(cfg.queue.max(1));
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let label = name.to_string();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Wakes `send` callers when the thread ends, also by a panic in `apply`.
                let _wake = WakeOnExit(Arc::clone(&s));
                run(state, rx, &cfg, &s, &label)
            })
            .map_err(|e| WriterError::Spawn(e.to_string()))?;
        Ok(Writer {
            tx: Some(tx),
            shared,
            thread: Some(thread),
        })
    }

    fn sender(&self) -> Result<&SyncSender<Cmd<A::Op>>, SubmitError> {
        self.tx.as_ref().ok_or(SubmitError::Closed)
    }

    fn accepted(&self) {
        self.shared.submitted.fetch_add(1, Ordering::Relaxed);
    }

    /// Queue `op` without blocking. On a full queue the operation is dropped and counted.
    pub fn submit(&self, op: A::Op) -> Result<(), SubmitError> {
        match self.sender()?.try_send(Cmd::Op(op)) {
            Ok(()) => {
                self.accepted();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                self.shared.dropped_full.fetch_add(1, Ordering::Relaxed);
                Err(SubmitError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Queue `op`, waiting (asynchronously) for room if the queue is full.
    pub async fn send(&self, op: A::Op) -> Result<(), SubmitError> {
        let tx = self.sender()?;
        let mut cmd = Cmd::Op(op);
        loop {
            // Register for the wake-up before trying, so a slot freed in between is seen.
            let room = self.shared.room.notified();
            let mut room = std::pin::pin!(room);
            room.as_mut().enable();
            match tx.try_send(cmd) {
                Ok(()) => {
                    self.accepted();
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => {
                    cmd = back;
                    room.await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(SubmitError::Closed),
            }
        }
    }

    /// Queue `op`, blocking the thread until there is room. Not for an event loop or
    /// async task; for start-up, shutdown and `spawn_blocking`.
    pub fn submit_blocking(&self, op: A::Op) -> Result<(), SubmitError> {
        self.sender()?
            .send(Cmd::Op(op))
            .map_err(|_| SubmitError::Closed)?;
        self.accepted();
        Ok(())
    }

    /// Commit everything queued so far and wait for it. `Ok` means every operation queued
    /// before this call is committed. Blocks: from async code call it in `spawn_blocking`.
    pub fn flush(&self) -> Result<(), WriterError> {
        let tx = self.tx.as_ref().ok_or(WriterError::Closed)?;
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        tx.send(Cmd::Flush(done_tx))
            .map_err(|_| WriterError::Closed)?;
        done_rx.recv().map_err(|_| WriterError::Closed)?
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        let s = &self.shared;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            submitted: get(&s.submitted),
            dropped_full: get(&s.dropped_full),
            batches: get(&s.batches),
            failed_batches: get(&s.failed_batches),
        }
    }

    /// Whether the writer can commit: its thread runs and its last batch (if any) did not
    /// fail. What a service's readiness reports for its database.
    pub fn healthy(&self) -> bool {
        self.tx.is_some()
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
            && !self.shared.last_failed.load(Ordering::Relaxed)
    }

    /// Flush, stop the thread and hand the state back (for a final read, or tests).
    pub fn close(mut self) -> Result<A, WriterError> {
        let flushed = self.flush();
        self.tx = None; // the thread sees the queue close and returns the state
        let state = self
            .thread
            .take()
            .ok_or(WriterError::Closed)?
            .join()
            .map_err(|_| WriterError::Closed)?;
        flushed.map(|()| state)
    }
}

impl<A: Apply> Drop for Writer<A> {
    /// Commit what is queued and stop the thread (errors are logged by the thread).
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct WakeOnExit(Arc<Shared>);

impl Drop for WakeOnExit {
    fn drop(&mut self) {
        self.0.room.notify_waiters();
    }
}

fn run<A: Apply>(
    mut state: A,
    rx: Receiver<Cmd<A::Op>>,
    cfg: &WriterConfig,
    s: &Shared,
    name: &str,
) -> A {
    let mut failures = Failures::default();
    let max_ops = cfg.max_batch_ops.max(1);
    let mut batch: Vec<A::Op> = Vec::with_capacity(max_ops.min(cfg.queue.max(1)));
    // Take one command off the queue, telling a waiting `send` there is room.
    let took = |cmd| {
        s.room.notify_one();
        cmd
    };
    let mut open = true;
    while open {
        // Wait for the first command of a batch.
        let first = match rx.recv() {
            Ok(cmd) => took(cmd),
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
                Ok(cmd) => next = Some(took(cmd)),
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(TryRecvError::Empty) if wait.is_zero() => break,
                Err(TryRecvError::Empty) => match rx.recv_timeout(wait) {
                    Ok(cmd) => next = Some(took(cmd)),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        open = false;
                        break;
                    }
                },
            }
        }
        commit(&mut state, &mut batch, s, &mut failures, name);
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
    commit(&mut state, &mut batch, s, &mut failures, name);
    state
}

fn commit<A: Apply>(
    state: &mut A,
    batch: &mut Vec<A::Op>,
    s: &Shared,
    f: &mut Failures,
    name: &str,
) {
    if batch.is_empty() {
        return;
    }
    let ops = batch.len();
    match state.apply(batch) {
        Ok(()) => {
            s.batches.fetch_add(1, Ordering::Relaxed);
            s.last_failed.store(false, Ordering::Relaxed);
        }
        Err(e) => {
            s.failed_batches.fetch_add(1, Ordering::Relaxed);
            s.last_failed.store(true, Ordering::Relaxed);
            tracing::error!(writer = name, ops, error = %e, "database batch failed; rolled back");
            f.count += 1;
            f.last = e.to_string();
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{OpenOptions, Schema, Unversioned, open};
    use rusqlite::Connection;

    const SCHEMA: Schema = Schema {
        name: "test database",
        migrations: &["CREATE TABLE t (v INTEGER NOT NULL);"],
        unversioned: Unversioned::Refuse,
    };

    /// Inserts each value; a negative value fails the whole batch.
    struct Inserter(Connection);

    impl Apply for Inserter {
        type Op = i64;
        type Error = String;
        fn apply(&mut self, batch: &mut Vec<i64>) -> Result<(), String> {
            let tx = self.0.transaction().map_err(|e| e.to_string())?;
            for v in batch.iter() {
                if *v < 0 {
                    return Err(format!("negative {v}"));
                }
                tx.execute("INSERT INTO t (v) VALUES (?1)", [v])
                    .map_err(|e| e.to_string())?;
            }
            tx.commit().map_err(|e| e.to_string())
        }
    }

    fn rows(w: Writer<Inserter>) -> i64 {
        let state = w.close().unwrap();
        state
            .0
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    fn writer(cfg: WriterConfig) -> (tempfile::TempDir, Writer<Inserter>) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db"), &SCHEMA, &OpenOptions::default()).unwrap();
        let w = Writer::spawn("test-writer", Inserter(conn), cfg).unwrap();
        (dir, w)
    }

    #[test]
    fn a_failed_batch_is_reported_at_the_next_flush_only() {
        let (_dir, w) = writer(WriterConfig::default());
        w.submit(1).unwrap();
        w.submit(-1).unwrap();
        let e = w.flush().unwrap_err();
        assert!(matches!(e, WriterError::Commit { failed: 1, .. }), "{e}");
        assert!(!w.healthy(), "the last batch failed");
        w.submit(2).unwrap();
        w.flush().unwrap();
        assert!(w.healthy(), "the next batch committed");
        let st = w.stats();
        assert_eq!((st.submitted, st.batches, st.failed_batches), (3, 1, 1));
        assert_eq!(rows(w), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn send_waits_for_room_instead_of_dropping() {
        let (_dir, w) = writer(WriterConfig {
            queue: 2,
            max_batch_ops: 1,
            max_batch_delay: Duration::ZERO,
        });
        for v in 0..500 {
            w.send(v).await.unwrap();
        }
        let st = w.stats();
        assert_eq!((st.submitted, st.dropped_full), (500, 0));
        assert_eq!(rows(w), 500);
    }

    #[test]
    fn max_batch_ops_bounds_a_transaction() {
        let (_dir, w) = writer(WriterConfig {
            queue: 1000,
            max_batch_ops: 10,
            max_batch_delay: Duration::from_secs(60),
        });
        for v in 0..100 {
            w.submit(v).unwrap();
        }
        w.flush().unwrap();
        assert!(w.stats().batches >= 10, "{:?}", w.stats());
        assert_eq!(rows(w), 100);
    }
}
