//! The opinion database: SQLite on disk, a read-mostly copy in memory, one writer thread.
//!
//! Reads (opinion queries, route ranking) never touch SQLite: they take a read lock on an
//! in-memory map that mirrors the `admin_opinions` and `evidence` tables. All writes go
//! through one thread that owns the connection (the SQLite shell's `service::sqlite::Writer`).
//! It drains whatever is queued (up to [`MAX_BATCH`] operations), applies them in one
//! transaction, commits, and only then updates the in-memory map and answers the callers —
//! so an acknowledged write is on disk, and readers never see a write that could still roll
//! back (group commit keeps `synchronous=FULL` affordable under load).
//!
//! Replay protection lives here too: `reports` has a unique (reporter, nonce) index and
//! inserts use `INSERT OR IGNORE`, so a nonce is refused while its report is retained, also
//! across restarts. Rows older than the retention period (which the server keeps at more
//! than twice the timestamp window, so an expired nonce cannot pass the window check
//! either) are pruned, which bounds the table.

use crate::api::ReportCounts;
use crate::{PeerId, ReportBody};
use rusqlite::{Connection, OptionalExtension, params};
use service::sqlite::{self, Apply, OpenOptions, Schema, Unversioned, WriterConfig};
use service::sync::{read, write};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use trust::{Discounting, Evidence, Opinion, Referred, TrustPolicy};

/// Most operations committed in one transaction.
pub(crate) const MAX_BATCH: usize = 512;
/// How often old report rows are pruned.
const PRUNE_EVERY_MS: u64 = 60_000;

/// SQLite `synchronous` setting for the WAL: the shell's durability under the name the
/// SOS configuration has always used.
pub use service::sqlite::Durability as Synchronous;

/// The SOS database. Files from before the version table are adopted: the first migration
/// is the schema they were created with (`IF NOT EXISTS` throughout).
const SCHEMA: Schema = Schema {
    name: "SOS database",
    migrations: &[
        "CREATE TABLE IF NOT EXISTS admin_opinions(
            peer TEXT PRIMARY KEY, b REAL NOT NULL, d REAL NOT NULL, u REAL NOT NULL,
            a REAL NOT NULL, set_ms INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS evidence(
            peer TEXT PRIMARY KEY, r REAL NOT NULL, s REAL NOT NULL, at_ms INTEGER NOT NULL,
            positive INTEGER NOT NULL, negative INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS reports(
            id INTEGER PRIMARY KEY, reporter TEXT NOT NULL, subject TEXT NOT NULL,
            outcome TEXT NOT NULL, route TEXT NOT NULL, timestamp_ms INTEGER NOT NULL,
            nonce BLOB NOT NULL, received_ms INTEGER NOT NULL,
            UNIQUE(reporter, nonce));
         CREATE INDEX IF NOT EXISTS reports_received ON reports(received_ms);",
        // What CSPs proved about each peer, and each peer's record as a reporter.
        "ALTER TABLE evidence ADD COLUMN proven_r REAL NOT NULL DEFAULT 0;
         ALTER TABLE evidence ADD COLUMN proven_s REAL NOT NULL DEFAULT 0;
         ALTER TABLE evidence ADD COLUMN proven_at_ms INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE evidence ADD COLUMN referral_r REAL NOT NULL DEFAULT 0;
         ALTER TABLE evidence ADD COLUMN referral_s REAL NOT NULL DEFAULT 0;
         ALTER TABLE evidence ADD COLUMN referral_at_ms INTEGER NOT NULL DEFAULT 0;",
    ],
    unversioned: Unversioned::Adopt,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (damaged, newer schema, not WAL, I/O).
    #[error(transparent)]
    Open(#[from] sqlite::OpenError),
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row does not decode (the file was edited or is corrupt).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The writer thread could not be started.
    #[error("cannot start writer thread: {0}")]
    Thread(String),
    /// PostgreSQL refused to connect, migrate or load.
    #[error(transparent)]
    Postgres(#[from] service::postgres::PgError),
}

/// Why a single write was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WriteError {
    /// (reporter, nonce) was already accepted.
    #[error("nonce already used by this reporter")]
    Replay,
    /// The peer table is full.
    #[error("peer table is full")]
    TooManyPeers,
    /// The database failed; nothing of this batch was applied.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The writer is gone (shutting down).
    #[error("store is shutting down")]
    Closed,
}

/// What the SOS knows about one peer (the rules live in `trust`).
pub(crate) type PeerRecord = trust::PeerTrust;

/// The in-memory mirror readers use.
pub(crate) type PeerMap = BTreeMap<PeerId, PeerRecord>;

pub(crate) enum WriteOp {
    Report {
        report: ReportBody,
        /// The reporter is a CSP or CSPG: its evidence is proof.
        proof: bool,
        received_ms: u64,
        reply: oneshot::Sender<Result<(i64, ReportCounts), WriteError>>,
    },
    PutAdmin {
        peer: PeerId,
        opinion: Opinion,
        now_ms: u64,
        reply: oneshot::Sender<Result<(), WriteError>>,
    },
    DeleteAdmin {
        peer: PeerId,
        reply: oneshot::Sender<Result<bool, WriteError>>,
    },
}

impl WriteOp {
    /// The operation apart from its reply channel: both backends apply the [`Op`]s of a
    /// batch and answer each [`Reply`] once, after the commit or with the failure (the
    /// PostgreSQL backend may apply the same ops more than once).
    pub(crate) fn split(self) -> (Op, Reply) {
        match self {
            WriteOp::Report {
                report,
                proof,
                received_ms,
                reply,
            } => (
                Op::Report {
                    report,
                    proof,
                    received_ms,
                },
                Reply::Report(reply),
            ),
            WriteOp::PutAdmin {
                peer,
                opinion,
                now_ms,
                reply,
            } => (
                Op::PutAdmin {
                    peer,
                    opinion,
                    now_ms,
                },
                Reply::Put(reply),
            ),
            WriteOp::DeleteAdmin { peer, reply } => {
                (Op::DeleteAdmin { peer }, Reply::Delete(reply))
            }
        }
    }
}

/// A write operation without its reply channel.
pub(crate) enum Op {
    Report {
        report: ReportBody,
        /// The reporter is a CSP or CSPG: its evidence is proof.
        proof: bool,
        received_ms: u64,
    },
    PutAdmin {
        peer: PeerId,
        opinion: Opinion,
        now_ms: u64,
    },
    DeleteAdmin {
        peer: PeerId,
    },
}

/// An operation's answer, before it is sent.
pub(crate) enum Answer {
    Report(Result<(i64, ReportCounts), WriteError>),
    Put(Result<(), WriteError>),
    Delete(Result<bool, WriteError>),
}

/// Where an operation's answer goes.
pub(crate) enum Reply {
    Report(oneshot::Sender<Result<(i64, ReportCounts), WriteError>>),
    Put(oneshot::Sender<Result<(), WriteError>>),
    Delete(oneshot::Sender<Result<bool, WriteError>>),
}

impl Reply {
    /// The answer, ready to send.
    pub(crate) fn done(self, answer: Answer) -> Done {
        match (self, answer) {
            (Reply::Report(tx), Answer::Report(r)) => Done::Report(tx, r),
            (Reply::Put(tx), Answer::Put(r)) => Done::Put(tx, r),
            (Reply::Delete(tx), Answer::Delete(r)) => Done::Delete(tx, r),
            // Answers are made from their own op, in order; a mismatch cannot happen, but
            // would be answered as a failure rather than a wrong result.
            (reply, _) => reply.failed(),
        }
    }

    /// The operation was not applied (the batch failed before it, or the writer stops).
    pub(crate) fn failed(self) -> Done {
        match self {
            Reply::Report(tx) => Done::Report(tx, Err(WriteError::Closed)),
            Reply::Put(tx) => Done::Put(tx, Err(WriteError::Closed)),
            Reply::Delete(tx) => Done::Delete(tx, Err(WriteError::Closed)),
        }
    }
}

/// Handle to the store: the shared map and the writer's queue.
#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) peers: Arc<RwLock<PeerMap>>,
    writer: Backend,
}

/// Where the writer commits: the embedded SQLite file, or PostgreSQL shared with other
/// SOS instances (whose writes reach this instance's map through the reloader).
#[derive(Clone)]
enum Backend {
    Sqlite(Arc<sqlite::Writer<Committer>>),
    Postgres {
        writer: Arc<sqlite::Writer<crate::store_pg::PgCommitter>>,
        /// Kept for its lifetime: the reloader stops when the last handle goes.
        _reloader: Arc<crate::store_pg::Reloader>,
        counters: Arc<crate::store_pg::PgCounters>,
    },
}

/// Settings the writer needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreConfig {
    pub(crate) synchronous: Synchronous,
    /// Base rate and ageing, for judging reports.
    pub(crate) policy: TrustPolicy,
    /// Hold ordinary peers' reports against the proven view and weigh them by their
    /// reporter's referral record; off: every report counts fully.
    pub(crate) check_reports: bool,
    pub(crate) max_peers: usize,
    pub(crate) retention_ms: u64,
    pub(crate) queue: usize,
    /// PostgreSQL only: how often the map is reloaded with other instances' writes.
    pub(crate) refresh: Duration,
}

/// How the writer thread batches: commit whatever is queued as soon as it is taken
/// (callers are waiting), at most [`MAX_BATCH`] operations at a time.
pub(crate) fn writer_config(cfg: &StoreConfig) -> WriterConfig {
    WriterConfig {
        queue: cfg.queue,
        max_batch_ops: MAX_BATCH,
        max_batch_delay: Duration::ZERO,
    }
}

impl Store {
    /// Open (or create) the database, load it into memory and start the writer.
    pub(crate) fn open(path: &Path, cfg: StoreConfig) -> Result<Self, StoreError> {
        let conn = sqlite::open(
            path,
            &SCHEMA,
            &OpenOptions {
                durability: cfg.synchronous,
                busy_timeout: Duration::from_secs(5),
                integrity_check: false,
                owner_only: false,
            },
        )?;
        let peers = load(&conn)?;
        let peers = Arc::new(RwLock::new(peers));
        let committer = Committer {
            conn,
            cfg,
            peers: Arc::clone(&peers),
            last_prune_ms: 0,
        };
        let writer = sqlite::Writer::spawn("sos-writer", committer, writer_config(&cfg))
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Self {
            peers,
            writer: Backend::Sqlite(Arc::new(writer)),
        })
    }

    /// Connect to PostgreSQL (migrating it), load it into memory, start the writer and the
    /// reloader that brings in other instances' writes every `cfg.refresh`.
    pub(crate) fn open_postgres(
        opts: service::postgres::PgOptions,
        cfg: StoreConfig,
    ) -> Result<Self, StoreError> {
        let crate::store_pg::Opened {
            peers,
            writer,
            reloader,
            counters,
        } = crate::store_pg::open(opts, cfg)?;
        Ok(Self {
            peers,
            writer: Backend::Postgres {
                writer,
                _reloader: reloader,
                counters,
            },
        })
    }

    /// The store's counters, and whether it is reachable: its writer can commit (its
    /// thread runs, its last batch did not fail) and, on PostgreSQL, its last reload of
    /// other instances' writes succeeded (it runs every `refresh`, so an unreachable
    /// database shows within that time even when nobody writes).
    pub(crate) fn stats(&self) -> crate::metrics::StoreStats {
        match &self.writer {
            Backend::Sqlite(w) => crate::metrics::StoreStats {
                writer: w.stats(),
                postgres: Default::default(),
                reachable: w.healthy(),
            },
            Backend::Postgres {
                writer, counters, ..
            } => {
                let (postgres, reloaded) = counters.snapshot();
                crate::metrics::StoreStats {
                    writer: writer.stats(),
                    postgres,
                    reachable: writer.healthy() && reloaded,
                }
            }
        }
    }

    /// Queue a write; waits for room when the queue is full (back-pressure).
    pub(crate) async fn submit(&self, op: WriteOp) -> Result<(), WriteError> {
        let sent = match &self.writer {
            Backend::Sqlite(w) => w.send(op).await,
            Backend::Postgres { writer, .. } => writer.send(op).await,
        };
        sent.map_err(|_| WriteError::Closed)
    }

    /// Queue the write `op` makes around its reply channel and wait for the writer's
    /// answer (committed, or why not).
    pub(crate) async fn write<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, WriteError>>) -> WriteOp,
    ) -> Result<T, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.submit(op(tx)).await?;
        rx.await.unwrap_or(Err(WriteError::Closed))
    }
}

pub(crate) fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

fn load(conn: &Connection) -> Result<PeerMap, StoreError> {
    let mut map = PeerMap::new();
    let mut stmt = conn.prepare(&format!("SELECT {EVIDENCE_COLUMNS} FROM evidence"))?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            [r.get::<_, f64>(1)?, r.get::<_, f64>(2)?],
            [
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
            ],
            [
                r.get::<_, f64>(6)?,
                r.get::<_, f64>(7)?,
                r.get::<_, f64>(9)?,
                r.get::<_, f64>(10)?,
            ],
            [r.get::<_, i64>(8)?, r.get::<_, i64>(11)?],
        ))
    })?;
    for row in rows {
        let (peer, rs, counts, extra, extra_at) = row?;
        let (peer, rec) = evidence_row(&peer, EvidenceColumns::new(rs, counts, extra, extra_at))?;
        map.insert(peer, rec);
    }
    let mut stmt = conn.prepare("SELECT peer, b, d, u, a FROM admin_opinions")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, f64>(1)?,
            r.get::<_, f64>(2)?,
            r.get::<_, f64>(3)?,
            r.get::<_, f64>(4)?,
        ))
    })?;
    for row in rows {
        let (peer, b, d, u, a) = row?;
        let (peer, op) = admin_row(&peer, b, d, u, a)?;
        map.entry(peer).or_default().admin = Some(op);
    }
    Ok(map)
}

/// The `evidence` columns both backends read, in this order.
pub(crate) const EVIDENCE_COLUMNS: &str = "peer, r, s, at_ms, positive, negative, \
     proven_r, proven_s, proven_at_ms, referral_r, referral_s, referral_at_ms";

/// One `evidence` row's numbers as stored, before they are checked.
pub(crate) struct EvidenceColumns {
    /// (r, s, at_ms) of the peer's evidence, of what was proven, of its referral record.
    parts: [(f64, f64, i64); 3],
    positive: i64,
    negative: i64,
}

impl EvidenceColumns {
    /// From [`EVIDENCE_COLUMNS`]: `rs` = (r, s), `counts` = (at_ms, positive, negative),
    /// `extra` = (proven_r, proven_s, referral_r, referral_s), `extra_at` = their times.
    pub(crate) fn new(rs: [f64; 2], counts: [i64; 3], extra: [f64; 4], extra_at: [i64; 2]) -> Self {
        Self {
            parts: [
                (rs[0], rs[1], counts[0]),
                (extra[0], extra[1], extra_at[0]),
                (extra[2], extra[3], extra_at[1]),
            ],
            positive: counts[1],
            negative: counts[2],
        }
    }
}

/// A peer's evidence as stored (both backends store the same columns).
pub(crate) fn evidence_row(
    peer: &str,
    cols: EvidenceColumns,
) -> Result<(PeerId, PeerRecord), StoreError> {
    let peer: PeerId = peer.parse().map_err(|e| corrupt("evidence", e))?;
    let evidence = |(r, s, at): (f64, f64, i64)| -> Result<Evidence, StoreError> {
        let at = u64::try_from(at).map_err(|e| corrupt("evidence", e))?;
        Evidence::from_parts(r, s, at).map_err(|e| corrupt("evidence", e))
    };
    let rec = PeerRecord {
        evidence: evidence(cols.parts[0])?,
        positive: u64::try_from(cols.positive).map_err(|e| corrupt("evidence", e))?,
        negative: u64::try_from(cols.negative).map_err(|e| corrupt("evidence", e))?,
        admin: None,
        proven: evidence(cols.parts[1])?,
        referral: evidence(cols.parts[2])?,
    };
    Ok((peer, rec))
}

/// What one accepted report does to the SOS's records, decided by the `trust` crate's
/// rules (the same the simulator's `OpinionBook` applies).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Effect {
    /// A CSP's or CSPG's evidence: proof about the subject.
    Proven,
    /// Counted fully without checks (report checks are off).
    Counted,
    /// An ordinary peer's report, judged against the proven view of its subject.
    Referred(Referred),
}

impl Effect {
    /// Decide on the whole records of the subject and the reporter.
    pub(crate) fn judge(
        cfg: &StoreConfig,
        report: &ReportBody,
        proof: bool,
        subject: &PeerRecord,
        reporter: &PeerRecord,
    ) -> Self {
        if proof {
            Effect::Proven
        } else if !cfg.check_reports {
            Effect::Counted
        } else {
            Effect::Referred(trust::judge_report(
                subject,
                reporter,
                report.outcome.is_positive(),
                report.timestamp_ms,
                &cfg.policy,
                Discounting::Classic,
            ))
        }
    }

    /// Whether the reporter's record changes (its row must be written).
    pub(crate) fn touches_reporter(&self) -> bool {
        matches!(self, Effect::Referred(r) if r.checked())
    }

    /// Whether the subject's record changes.
    pub(crate) fn touches_subject(&self) -> bool {
        !matches!(self, Effect::Referred(r) if !r.counts())
    }

    /// Apply the decision to the records (or to this instance's shares of them).
    pub(crate) fn apply(
        &self,
        cfg: &StoreConfig,
        report: &ReportBody,
        subject: &mut PeerRecord,
        reporter: Option<&mut PeerRecord>,
    ) {
        let (positive, at) = (report.outcome.is_positive(), report.timestamp_ms);
        match self {
            Effect::Proven => subject.record_proven(positive, at, cfg.policy.ageing()),
            Effect::Counted => subject.record(positive, at, cfg.policy.ageing()),
            Effect::Referred(r) => {
                if let Some(rep) = reporter {
                    r.apply_to_reporter(rep, at, cfg.policy.ageing());
                }
                r.apply_to_subject(subject, positive, at, cfg.policy.ageing());
            }
        }
    }
}

/// An administrator's opinion as stored.
pub(crate) fn admin_row(
    peer: &str,
    b: f64,
    d: f64,
    u: f64,
    a: f64,
) -> Result<(PeerId, Opinion), StoreError> {
    let peer: PeerId = peer.parse().map_err(|e| corrupt("admin_opinions", e))?;
    let op = Opinion::new(b, d, u, a).map_err(|e| corrupt("admin_opinions", e))?;
    Ok((peer, op))
}

/// The connection and the in-memory map, owned by the writer thread.
struct Committer {
    conn: Connection,
    cfg: StoreConfig,
    peers: Arc<RwLock<PeerMap>>,
    last_prune_ms: u64,
}

/// The per-operation result, sent after commit.
pub(crate) enum Done {
    Report(
        oneshot::Sender<Result<(i64, ReportCounts), WriteError>>,
        Result<(i64, ReportCounts), WriteError>,
    ),
    Put(
        oneshot::Sender<Result<(), WriteError>>,
        Result<(), WriteError>,
    ),
    Delete(
        oneshot::Sender<Result<bool, WriteError>>,
        Result<bool, WriteError>,
    ),
}

impl Done {
    pub(crate) fn fail(self, e: &WriteError) -> Done {
        match self {
            Done::Report(tx, _) => Done::Report(tx, Err(e.clone())),
            Done::Put(tx, _) => Done::Put(tx, Err(e.clone())),
            Done::Delete(tx, _) => Done::Delete(tx, Err(e.clone())),
        }
    }

    pub(crate) fn send(self) {
        // A caller that went away (client disconnected) no longer needs the answer.
        match self {
            Done::Report(tx, r) => drop(tx.send(r)),
            Done::Put(tx, r) => drop(tx.send(r)),
            Done::Delete(tx, r) => drop(tx.send(r)),
        }
    }
}

impl Apply for Committer {
    type Op = WriteOp;
    type Error = rusqlite::Error;

    /// One transaction for the batch; every caller is answered, after the commit or with
    /// the failure (which the shell logs and counts).
    fn apply(&mut self, batch: &mut Vec<WriteOp>) -> Result<(), rusqlite::Error> {
        let batch = std::mem::take(batch);
        let mut staged: PeerMap = BTreeMap::new();
        let mut done = Vec::with_capacity(batch.len());
        let mut newest_ms = 0;
        let result = self.apply_in_txn(batch, &mut staged, &mut done, &mut newest_ms);
        match result {
            Ok(()) => {
                write(&self.peers).extend(staged);
                // Prune before answering, so a caller that saw its answer also sees the
                // prune (at most once a minute, so the delay is rare).
                if newest_ms.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
                    self.last_prune_ms = newest_ms;
                    self.prune(newest_ms);
                }
                for d in done {
                    d.send();
                }
                Ok(())
            }
            Err(e) => {
                let err = WriteError::Storage(e.to_string());
                for d in done {
                    d.fail(&err).send();
                }
                Err(e)
            }
        }
    }
}

impl Committer {
    fn apply_in_txn(
        &mut self,
        batch: Vec<WriteOp>,
        staged: &mut PeerMap,
        done: &mut Vec<Done>,
        newest_ms: &mut u64,
    ) -> Result<(), rusqlite::Error> {
        let cfg = self.cfg;
        let txn = self.conn.transaction()?;
        let known = read(&self.peers);
        let mut count = known.len();
        // Pull a peer's current record into the staging map; None if the table is full.
        let mut stage = |peer: PeerId, staged: &mut PeerMap| -> bool {
            if staged.contains_key(&peer) {
                return true;
            }
            let rec = match known.get(&peer) {
                Some(r) => *r,
                None if count >= cfg.max_peers => return false,
                None => {
                    count += 1;
                    PeerRecord::default()
                }
            };
            staged.insert(peer, rec);
            true
        };
        // Ops are moved into `done` first so that a failure can still answer every caller.
        let mut failed: Option<rusqlite::Error> = None;
        for op in batch {
            let (op, reply) = op.split();
            if let Op::Report { received_ms, .. } = &op {
                *newest_ms = (*newest_ms).max(*received_ms);
            }
            if failed.is_some() {
                done.push(reply.failed());
                continue;
            }
            let res = match op {
                Op::Report {
                    report,
                    proof,
                    received_ms,
                } => {
                    let res =
                        (|| -> Result<Result<(i64, ReportCounts), WriteError>, rusqlite::Error> {
                            if !stage(report.subject, staged) {
                                return Ok(Err(WriteError::TooManyPeers));
                            }
                            let none = PeerRecord::default();
                            let effect = Effect::judge(
                                &cfg,
                                &report,
                                proof,
                                staged.get(&report.subject).unwrap_or(&none),
                                staged
                                    .get(&report.reporter)
                                    .or_else(|| known.get(&report.reporter))
                                    .unwrap_or(&none),
                            );
                            if effect.touches_reporter() && !stage(report.reporter, staged) {
                                return Ok(Err(WriteError::TooManyPeers));
                            }
                            let route = report
                                .route
                                .iter()
                                .map(|p| p.to_string())
                                .collect::<Vec<_>>()
                                .join(",");
                            let n = txn
                            .prepare_cached(
                                "INSERT OR IGNORE INTO reports(reporter, subject, outcome, route,
                                 timestamp_ms, nonce, received_ms) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                            )?
                            .execute(params![
                                report.reporter.to_string(),
                                report.subject.to_string(),
                                report.outcome.as_str(),
                                route,
                                i64::try_from(report.timestamp_ms).unwrap_or(i64::MAX),
                                &report.nonce[..],
                                i64::try_from(received_ms).unwrap_or(i64::MAX),
                            ])?;
                            if n == 0 {
                                return Ok(Err(WriteError::Replay));
                            }
                            let id = txn.last_insert_rowid();
                            let Some(mut subject) = staged.get(&report.subject).copied() else {
                                return Ok(Err(WriteError::TooManyPeers));
                            };
                            let mut reporter = staged.get(&report.reporter).copied();
                            effect.apply(&cfg, &report, &mut subject, reporter.as_mut());
                            if effect.touches_subject() {
                                upsert_evidence(&txn, report.subject, &subject)?;
                                staged.insert(report.subject, subject);
                            }
                            if effect.touches_reporter()
                                && let Some(reporter) = reporter
                            {
                                upsert_evidence(&txn, report.reporter, &reporter)?;
                                staged.insert(report.reporter, reporter);
                            }
                            Ok(Ok((
                                id,
                                ReportCounts {
                                    positive: subject.positive,
                                    negative: subject.negative,
                                },
                            )))
                        })();
                    res.map(Answer::Report)
                }
                Op::PutAdmin {
                    peer,
                    opinion,
                    now_ms,
                } => {
                    if !stage(peer, staged) {
                        done.push(reply.done(Answer::Put(Err(WriteError::TooManyPeers))));
                        continue;
                    }
                    txn.prepare_cached(
                        "INSERT INTO admin_opinions(peer, b, d, u, a, set_ms)
                         VALUES (?1,?2,?3,?4,?5,?6)
                         ON CONFLICT(peer) DO UPDATE SET b=excluded.b, d=excluded.d,
                         u=excluded.u, a=excluded.a, set_ms=excluded.set_ms",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            peer.to_string(),
                            opinion.belief(),
                            opinion.disbelief(),
                            opinion.uncertainty(),
                            opinion.base_rate(),
                            i64::try_from(now_ms).unwrap_or(i64::MAX),
                        ])
                    })
                    .map(|_| {
                        if let Some(rec) = staged.get_mut(&peer) {
                            rec.admin = Some(opinion);
                        }
                        Answer::Put(Ok(()))
                    })
                }
                Op::DeleteAdmin { peer } => txn
                    .prepare_cached("DELETE FROM admin_opinions WHERE peer = ?1")
                    .and_then(|mut s| s.execute(params![peer.to_string()]))
                    .map(|n| {
                        if n > 0
                            && stage(peer, staged)
                            && let Some(rec) = staged.get_mut(&peer)
                        {
                            rec.admin = None;
                        }
                        Answer::Delete(Ok(n > 0))
                    }),
            };
            match res {
                Ok(answer) => done.push(reply.done(answer)),
                Err(e) => {
                    failed = Some(e);
                    done.push(reply.failed());
                }
            }
        }
        drop(known);
        if let Some(e) = failed {
            return Err(e); // dropping `txn` rolls back
        }
        txn.commit()
    }

    fn prune(&mut self, now_ms: u64) {
        let cutoff = i64::try_from(now_ms.saturating_sub(self.cfg.retention_ms)).unwrap_or(0);
        match self.conn.execute(
            "DELETE FROM reports WHERE received_ms < ?1",
            params![cutoff],
        ) {
            Ok(n) if n > 0 => tracing::info!(rows = n, "pruned old reports"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning old reports failed"),
        }
    }
}

/// Write a peer's whole evidence row.
fn upsert_evidence(
    txn: &rusqlite::Transaction<'_>,
    peer: PeerId,
    rec: &PeerRecord,
) -> Result<(), rusqlite::Error> {
    let at = |e: &Evidence| i64::try_from(e.at_ms()).unwrap_or(i64::MAX);
    txn.prepare_cached(
        "INSERT INTO evidence(peer, r, s, at_ms, positive, negative, proven_r, proven_s,
             proven_at_ms, referral_r, referral_s, referral_at_ms)
         VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)
         ON CONFLICT(peer) DO UPDATE SET r=excluded.r, s=excluded.s, at_ms=excluded.at_ms,
             positive=excluded.positive, negative=excluded.negative,
             proven_r=excluded.proven_r, proven_s=excluded.proven_s,
             proven_at_ms=excluded.proven_at_ms, referral_r=excluded.referral_r,
             referral_s=excluded.referral_s, referral_at_ms=excluded.referral_at_ms",
    )?
    .execute(params![
        peer.to_string(),
        rec.evidence.r(),
        rec.evidence.s(),
        at(&rec.evidence),
        i64::try_from(rec.positive).unwrap_or(i64::MAX),
        i64::try_from(rec.negative).unwrap_or(i64::MAX),
        rec.proven.r(),
        rec.proven.s(),
        at(&rec.proven),
        rec.referral.r(),
        rec.referral.s(),
        at(&rec.referral),
    ])?;
    Ok(())
}

/// Count stored report rows (tests and diagnostics).
pub fn count_reports(path: &Path) -> Result<i64, StoreError> {
    let conn = Connection::open(path)?;
    let n: Option<i64> = conn
        .query_row("SELECT COUNT(*) FROM reports", [], |r| r.get(0))
        .optional()?;
    Ok(n.unwrap_or(0))
}
