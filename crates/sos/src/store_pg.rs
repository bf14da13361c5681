//! The opinion database on PostgreSQL, shared by several SOS instances.
//!
//! Same tables and the same rule as the SQLite store: a write is answered only after its
//! transaction committed. What changes with several writers:
//!
//! - **Evidence is sharded by instance and read-modify-written under a row lock.** Each
//!   instance claims a shard number at start (a session advisory lock on the first free
//!   one) and keeps its share of a peer's evidence in the row (peer, shard). A batch makes
//!   sure its subjects have rows in its shard (`INSERT … ON CONFLICT DO NOTHING`, in peer
//!   order), locks them (`SELECT … ORDER BY peer FOR UPDATE`) and folds its reports into
//!   what it read. Instances therefore do not queue on a popular peer's row, and should two
//!   ever write one shard (a connection lost its advisory lock and another instance took
//!   the number) the row lock still keeps either from losing the other's evidence. A
//!   peer's evidence is the sum of its shards aged to the newest one (ageing is linear, so
//!   the sum is what one writer would have recorded).
//! - **Replay protection is the database's**: the unique (reporter, nonce) index holds
//!   for every instance.
//! - **Retries are idempotent by report ID.** A batch that fails on a lost connection or a
//!   restarting server is retried on a new connection for up to [`PATIENCE`]. If the lost
//!   attempt had in fact committed, its reports are found by (reporter, nonce) and
//!   answered with their stored IDs, without counting their evidence twice.
//! - **Reads stay in memory, with bounded staleness.** The writer folds its own commits
//!   into the map at once; a reloader thread re-reads both tables every
//!   `StoreConfig::refresh`, so a ranking on any instance reflects every instance's
//!   acknowledged reports within that interval (plus the reload's own time). A peer's
//!   evidence from the reload replaces the map's unless the map already holds more
//!   reports for it (a commit of this instance that the reload's snapshot predates).
//! - **Bounds.** The peer cap is checked against the row count of the last reload, so
//!   instances together may overshoot it by what they accept within one refresh.

use crate::api::ReportCounts;
use crate::store::{
    Answer, EVIDENCE_COLUMNS, Effect, EvidenceColumns, Op, PeerMap, PeerRecord, Reply, StoreConfig,
    StoreError, WriteError, WriteOp, admin_row, evidence_row, writer_config,
};
use crate::{PeerId, ReportBody};
use postgres::Client;
use service::postgres::{Migrations, PgError, PgOptions, Session, is_conflict};
use service::sqlite::{Apply, Writer};
use service::sync::{read, write};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use trust::Opinion;

/// How long a batch keeps retrying a lost or restarting database before its callers are
/// told the storage is unavailable (their clients then retry elsewhere or later).
const PATIENCE: Duration = Duration::from_secs(8);
/// How often old report rows are pruned.
const PRUNE_EVERY_MS: u64 = 60_000;

const MIGRATIONS: Migrations = Migrations {
    name: "SOS database",
    lock_key: 0x5053_4f53, // "PSOS"
    migrations: &[
        "CREATE TABLE admin_opinions(
            peer TEXT PRIMARY KEY, b DOUBLE PRECISION NOT NULL, d DOUBLE PRECISION NOT NULL,
            u DOUBLE PRECISION NOT NULL, a DOUBLE PRECISION NOT NULL, set_ms BIGINT NOT NULL);
         CREATE TABLE evidence(
            peer TEXT NOT NULL, shard INTEGER NOT NULL,
            r DOUBLE PRECISION NOT NULL, s DOUBLE PRECISION NOT NULL,
            at_ms BIGINT NOT NULL, positive BIGINT NOT NULL, negative BIGINT NOT NULL,
            PRIMARY KEY (peer, shard));
         CREATE TABLE reports(
            id BIGSERIAL PRIMARY KEY, reporter TEXT NOT NULL, subject TEXT NOT NULL,
            outcome TEXT NOT NULL, route TEXT NOT NULL, timestamp_ms BIGINT NOT NULL,
            nonce BYTEA NOT NULL, received_ms BIGINT NOT NULL,
            UNIQUE(reporter, nonce));
         CREATE INDEX reports_received ON reports(received_ms);",
        // What CSPs proved about each peer, and each peer's record as a reporter.
        "ALTER TABLE evidence
            ADD COLUMN proven_r DOUBLE PRECISION NOT NULL DEFAULT 0,
            ADD COLUMN proven_s DOUBLE PRECISION NOT NULL DEFAULT 0,
            ADD COLUMN proven_at_ms BIGINT NOT NULL DEFAULT 0,
            ADD COLUMN referral_r DOUBLE PRECISION NOT NULL DEFAULT 0,
            ADD COLUMN referral_s DOUBLE PRECISION NOT NULL DEFAULT 0,
            ADD COLUMN referral_at_ms BIGINT NOT NULL DEFAULT 0;",
    ],
};

/// First advisory-lock key of the shard claims (the second is the shard number).
const SHARD_LOCK: i32 = 0x534f_5353; // "SOSS"
/// Shard numbers tried at start; past them an instance shares the last one.
const SHARDS: i32 = 1024;

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What [`open`] starts: the map readers use, the writer, the reloader, and their counters.
pub(crate) struct Opened {
    pub(crate) peers: Arc<RwLock<PeerMap>>,
    pub(crate) writer: Arc<Writer<PgCommitter>>,
    pub(crate) reloader: Arc<Reloader>,
    pub(crate) counters: Arc<PgCounters>,
}

/// What the writer and the reloader count for the metrics and the readiness probe.
#[derive(Debug)]
pub(crate) struct PgCounters {
    /// Batches tried again after a conflict or a lost connection.
    pub(crate) retries: AtomicU64,
    /// Reloads done and failed.
    pub(crate) reloads: AtomicU64,
    pub(crate) reload_errors: AtomicU64,
    /// The last reload succeeded (true from the load at start until one fails).
    pub(crate) reload_ok: AtomicBool,
}

/// What [`PgCounters`] counted, at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PgStats {
    /// Batches tried again after a conflict or a lost connection.
    pub(crate) retries: u64,
    /// Reloads of other instances' writes, done and failed.
    pub(crate) reloads: u64,
    pub(crate) reload_errors: u64,
}

impl PgCounters {
    /// The counts now, and whether the last reload succeeded.
    pub(crate) fn snapshot(&self) -> (PgStats, bool) {
        let stats = PgStats {
            retries: self.retries.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            reload_errors: self.reload_errors.load(Ordering::Relaxed),
        };
        (stats, self.reload_ok.load(Ordering::Relaxed))
    }
}

/// Connect, migrate, load, and start the writer and the reloader.
pub(crate) fn open(opts: PgOptions, cfg: StoreConfig) -> Result<Opened, StoreError> {
    let mut session = Session::open(opts.clone(), &MIGRATIONS)?;
    let (map, shard) = service::postgres::off_runtime(|| -> Result<_, StoreError> {
        let client = session.client()?;
        let shard = claim_shard(client)?;
        Ok((load(client, cfg.policy.ageing())?, shard))
    })?;
    tracing::info!(shard, "SOS instance writes evidence shard");
    let peer_count = Arc::new(AtomicUsize::new(map.len()));
    let peers = Arc::new(RwLock::new(map));
    let counters = Arc::new(PgCounters {
        retries: AtomicU64::new(0),
        reloads: AtomicU64::new(0),
        reload_errors: AtomicU64::new(0),
        reload_ok: AtomicBool::new(true),
    });
    let committer = PgCommitter {
        counters: Arc::clone(&counters),
        session,
        shard,
        cfg,
        peers: Arc::clone(&peers),
        peer_count: Arc::clone(&peer_count),
        last_prune_ms: 0,
    };
    let writer = Writer::spawn("sos-writer", committer, writer_config(&cfg))
        .map_err(|e| StoreError::Thread(e.to_string()))?;
    let reloader = Reloader::spawn(
        opts,
        cfg,
        Arc::clone(&peers),
        peer_count,
        Arc::clone(&counters),
    )?;
    Ok(Opened {
        peers,
        writer: Arc::new(writer),
        reloader: Arc::new(reloader),
        counters,
    })
}

/// The first shard number no other live instance holds (held for this connection).
fn claim_shard(client: &mut Client) -> Result<i32, StoreError> {
    for shard in 0..SHARDS {
        let row = client.query_one(
            "SELECT pg_try_advisory_lock($1, $2)",
            &[&SHARD_LOCK, &shard],
        )?;
        if row.get::<_, bool>(0) {
            return Ok(shard);
        }
    }
    Ok(SHARDS - 1)
}

/// Evidence split over shards, summed: each part aged to the newest part's time.
fn sum_evidence<'a>(
    parts: impl Iterator<Item = &'a trust::Evidence> + Clone,
    ageing: trust::Ageing,
) -> Result<trust::Evidence, StoreError> {
    let at = parts.clone().map(|e| e.at_ms()).max().unwrap_or(0);
    let (mut r, mut s) = (0.0, 0.0);
    for e in parts {
        let (er, es) = e.aged(at, ageing);
        r += er;
        s += es;
    }
    trust::Evidence::from_parts(r, s, at).map_err(|e| crate::store::corrupt("evidence", e))
}

/// Peers' records split over shards, summed (each kind of evidence aged to its newest
/// part's time).
fn combine(parts: &[PeerRecord], ageing: trust::Ageing) -> Result<PeerRecord, StoreError> {
    Ok(PeerRecord {
        evidence: sum_evidence(parts.iter().map(|p| &p.evidence), ageing)?,
        positive: parts.iter().map(|p| p.positive).sum(),
        negative: parts.iter().map(|p| p.negative).sum(),
        admin: None,
        proven: sum_evidence(parts.iter().map(|p| &p.proven), ageing)?,
        referral: sum_evidence(parts.iter().map(|p| &p.referral), ageing)?,
    })
}

/// Evidence rows ([`EVIDENCE_COLUMNS`]) as (peer, shard record).
fn evidence_rows(rows: Vec<postgres::Row>) -> Result<Vec<(PeerId, PeerRecord)>, StoreError> {
    rows.into_iter()
        .map(|row| {
            evidence_row(
                row.get(0),
                EvidenceColumns::new(
                    [row.get(1), row.get(2)],
                    [row.get(3), row.get(4), row.get(5)],
                    [row.get(6), row.get(7), row.get(9), row.get(10)],
                    [row.get(8), row.get(11)],
                ),
            )
        })
        .collect()
}

/// Both tables, as the in-memory map (shards summed per peer).
fn load(client: &mut Client, ageing: trust::Ageing) -> Result<PeerMap, StoreError> {
    let rows = client.query(
        &format!("SELECT {EVIDENCE_COLUMNS} FROM evidence ORDER BY peer"),
        &[],
    )?;
    let mut parts: BTreeMap<PeerId, Vec<PeerRecord>> = BTreeMap::new();
    for (peer, rec) in evidence_rows(rows)? {
        parts.entry(peer).or_default().push(rec);
    }
    let mut map = PeerMap::new();
    for (peer, parts) in parts {
        map.insert(peer, combine(&parts, ageing)?);
    }
    for row in client.query("SELECT peer, b, d, u, a FROM admin_opinions", &[])? {
        let (peer, op) = admin_row(row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))?;
        map.entry(peer).or_default().admin = Some(op);
    }
    Ok(map)
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(PgError::Db(e))
    }
}

/// Re-reads the database every interval so this instance's map shows other instances'
/// writes; stopped and joined when the store goes away.
pub(crate) struct Reloader {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    fn spawn(
        opts: PgOptions,
        cfg: StoreConfig,
        peers: Arc<RwLock<PeerMap>>,
        peer_count: Arc<AtomicUsize>,
        counters: Arc<PgCounters>,
    ) -> Result<Self, StoreError> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let every = cfg.refresh;
        let thread = std::thread::Builder::new()
            .name("sos-reloader".into())
            .spawn(move || {
                let mut session: Option<Session> = None;
                let warned = AtomicBool::new(false);
                loop {
                    {
                        let (lock, cv) = &*flag;
                        let guard = service::sync::lock(lock);
                        let (guard, _) = cv
                            .wait_timeout_while(guard, every, |stopped| !*stopped)
                            .unwrap_or_else(|p| p.into_inner());
                        if *guard {
                            return;
                        }
                    }
                    let fresh = (|| -> Result<PeerMap, StoreError> {
                        let s = match &mut session {
                            Some(s) => s,
                            None => session.insert(Session::open(opts.clone(), &MIGRATIONS)?),
                        };
                        let client = s.client()?;
                        let map = load(client, cfg.policy.ageing());
                        if map.is_err() {
                            s.reset();
                        }
                        map
                    })();
                    match fresh {
                        Ok(fresh) => {
                            counters.reloads.fetch_add(1, Ordering::Relaxed);
                            counters.reload_ok.store(true, Ordering::Relaxed);
                            warned.store(false, Ordering::Relaxed);
                            peer_count.store(fresh.len(), Ordering::Relaxed);
                            merge(&mut write(&peers), fresh);
                        }
                        Err(e) => {
                            counters.reload_errors.fetch_add(1, Ordering::Relaxed);
                            counters.reload_ok.store(false, Ordering::Relaxed);
                            if !warned.swap(true, Ordering::Relaxed) {
                                tracing::warn!(error = %e, "reloading opinions from PostgreSQL failed");
                            }
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *service::sync::lock(lock) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Fold a reload into the map: the reload's admin opinions, and its evidence unless the
/// map holds more reports for that peer (a commit the reload's snapshot predates). (The
/// referral record is taken as reloaded: rankings do not read it, and the writer judges
/// reports on the rows themselves.)
fn merge(map: &mut PeerMap, fresh: PeerMap) {
    for (peer, rec) in map.iter_mut() {
        if !fresh.contains_key(peer) {
            rec.admin = None;
        }
    }
    for (peer, new) in fresh {
        let rec = map.entry(peer).or_default();
        if new.positive + new.negative >= rec.positive + rec.negative {
            *rec = new;
        } else {
            rec.referral = new.referral;
            rec.admin = new.admin;
        }
    }
}

/// The writer thread's state: a reconnecting session and the map it updates.
pub(crate) struct PgCommitter {
    counters: Arc<PgCounters>,
    session: Session,
    /// The evidence shard this instance writes.
    shard: i32,
    cfg: StoreConfig,
    peers: Arc<RwLock<PeerMap>>,
    peer_count: Arc<AtomicUsize>,
    last_prune_ms: u64,
}

impl Apply for PgCommitter {
    type Op = WriteOp;
    type Error = StoreError;

    /// One transaction for the batch, retried on conflicts and lost connections for up to
    /// [`PATIENCE`]; every caller is answered after the commit or with the failure.
    fn apply(&mut self, batch: &mut Vec<WriteOp>) -> Result<(), StoreError> {
        // The ops stay for a retry; each reply is answered once.
        let (ops, replies): (Vec<Op>, Vec<Reply>) = std::mem::take(batch)
            .into_iter()
            .map(WriteOp::split)
            .unzip();
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        let mut retry = false;
        let outcome = loop {
            let known = self.peer_count.load(Ordering::Relaxed);
            let res = {
                let (cfg, shard) = (self.cfg, self.shard);
                let peers = &self.peers;
                match self.session.client() {
                    Ok(c) => commit_batch(c, &ops, retry, (cfg, shard), peers, known),
                    Err(e) => Err(StoreError::Postgres(e)),
                }
            };
            let patient = started.elapsed() < PATIENCE;
            match res {
                Ok(done) => break Ok(done),
                Err(StoreError::Postgres(PgError::Db(e))) if is_conflict(&e) && patient => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    retry = true;
                }
                Err(StoreError::Postgres(e)) if e.is_transient() && patient => {
                    tracing::warn!(error = %e, "SOS batch not committed, retrying");
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    retry = true;
                    self.session.reset();
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Ok((answers, staged, newest_ms)) => {
                write(&self.peers).extend(staged);
                if newest_ms.saturating_sub(self.last_prune_ms) >= PRUNE_EVERY_MS {
                    self.last_prune_ms = newest_ms;
                    self.prune(newest_ms);
                }
                for (reply, answer) in replies.into_iter().zip(answers) {
                    reply.done(answer).send();
                }
                Ok(())
            }
            Err(e) => {
                let err = WriteError::Storage(e.to_string());
                for reply in replies {
                    reply.failed().fail(&err).send();
                }
                Err(e)
            }
        }
    }
}

impl PgCommitter {
    fn prune(&mut self, now_ms: u64) {
        let cutoff = i64_of(now_ms.saturating_sub(self.cfg.retention_ms));
        let res = self.session.client().and_then(|c| {
            c.execute("DELETE FROM reports WHERE received_ms < $1", &[&cutoff])
                .map_err(PgError::from)
        });
        match res {
            Ok(n) if n > 0 => tracing::info!(rows = n, "pruned old reports"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning old reports failed"),
        }
    }
}

type Committed = (Vec<Answer>, PeerMap, u64);

/// Apply `ops` in one transaction. `retry`: an earlier attempt may have committed, so a
/// report already stored under its (reporter, nonce) is answered with its stored ID.
fn commit_batch(
    client: &mut Client,
    ops: &[Op],
    retry: bool,
    (cfg, shard): (StoreConfig, i32),
    peers: &RwLock<PeerMap>,
    known: usize,
) -> Result<Committed, StoreError> {
    // The peers this batch touches, and which of them it may add under the peer cap.
    let mut touched = BTreeSet::new();
    for op in ops {
        match op {
            Op::Report { report, proof, .. } => {
                if needs_reporter(&cfg, *proof) {
                    touched.insert(report.reporter);
                }
                touched.insert(report.subject)
            }
            Op::PutAdmin { peer, .. } | Op::DeleteAdmin { peer } => touched.insert(*peer),
        };
    }
    let allowed: BTreeSet<PeerId> = {
        let map = read(peers);
        let mut count = known.max(map.len());
        touched
            .into_iter()
            .filter(|p| {
                if map.contains_key(p) {
                    return true;
                }
                if count >= cfg.max_peers {
                    return false;
                }
                count += 1;
                true
            })
            .collect()
    };
    let keys: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    let mut tx = client.transaction()?;
    tx.execute(
        "INSERT INTO evidence(peer, shard, r, s, at_ms, positive, negative)
         SELECT p, $2, 0, 0, 0, 0, 0 FROM unnest($1::text[]) AS p ORDER BY p
         ON CONFLICT (peer, shard) DO NOTHING",
        &[&keys, &shard],
    )?;
    // This instance's shard rows, locked: what the batch adds to.
    let mine = tx.query(
        &format!(
            "SELECT {EVIDENCE_COLUMNS} FROM evidence
             WHERE peer = ANY($1) AND shard = $2 ORDER BY peer FOR UPDATE"
        ),
        &[&keys, &shard],
    )?;
    let mut staged: PeerMap = evidence_rows(mine)?.into_iter().collect();
    // The other shards, read as committed now: what the answers and the map add them to.
    let theirs = tx.query(
        &format!(
            "SELECT {EVIDENCE_COLUMNS} FROM evidence
             WHERE peer = ANY($1) AND shard <> $2"
        ),
        &[&keys, &shard],
    )?;
    let mut others: BTreeMap<PeerId, Vec<PeerRecord>> = BTreeMap::new();
    for (peer, rec) in evidence_rows(theirs)? {
        others.entry(peer).or_default().push(rec);
    }
    let mut admins: BTreeMap<PeerId, Opinion> = BTreeMap::new();
    for row in tx.query(
        "SELECT peer, b, d, u, a FROM admin_opinions WHERE peer = ANY($1)",
        &[&keys],
    )? {
        let (peer, op) = admin_row(row.get(0), row.get(1), row.get(2), row.get(3), row.get(4))?;
        admins.insert(peer, op);
    }
    let mut inserted = insert_reports(&mut tx, ops, &staged, cfg)?;
    let mut answers = Vec::with_capacity(ops.len());
    let mut dirty = BTreeSet::new();
    let mut newest_ms = 0;
    for op in ops {
        match op {
            Op::Report {
                report,
                proof,
                received_ms,
            } => {
                newest_ms = newest_ms.max(*received_ms);
                let id = inserted.remove(&(report.reporter, report.nonce));
                answers.push(Answer::Report(fold_report(
                    &mut tx,
                    (report, *proof),
                    id,
                    retry,
                    cfg,
                    (&mut staged, &others),
                    &mut dirty,
                )?));
            }
            Op::PutAdmin {
                peer,
                opinion,
                now_ms,
            } => {
                if !staged.contains_key(peer) {
                    answers.push(Answer::Put(Err(WriteError::TooManyPeers)));
                    continue;
                }
                tx.execute(
                    "INSERT INTO admin_opinions(peer, b, d, u, a, set_ms)
                     VALUES ($1,$2,$3,$4,$5,$6)
                     ON CONFLICT(peer) DO UPDATE SET b=excluded.b, d=excluded.d,
                     u=excluded.u, a=excluded.a, set_ms=excluded.set_ms",
                    &[
                        &peer.to_string(),
                        &opinion.belief(),
                        &opinion.disbelief(),
                        &opinion.uncertainty(),
                        &opinion.base_rate(),
                        &i64_of(*now_ms),
                    ],
                )?;
                admins.insert(*peer, *opinion);
                answers.push(Answer::Put(Ok(())));
            }
            Op::DeleteAdmin { peer } => {
                let n = tx.execute(
                    "DELETE FROM admin_opinions WHERE peer = $1",
                    &[&peer.to_string()],
                )?;
                admins.remove(peer);
                answers.push(Answer::Delete(Ok(n > 0)));
            }
        }
    }
    // This shard's new evidence for every peer the batch changed, in one statement.
    let mut peers = Vec::new();
    // (r, s, at_ms) of the evidence, the proven view and the referral record.
    let mut cols: [(Vec<f64>, Vec<f64>, Vec<i64>); 3] = Default::default();
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for peer in &dirty {
        let Some(rec) = staged.get(peer) else {
            continue;
        };
        peers.push(peer.to_string());
        for (col, e) in cols
            .iter_mut()
            .zip([rec.evidence, rec.proven, rec.referral])
        {
            col.0.push(e.r());
            col.1.push(e.s());
            col.2.push(i64_of(e.at_ms()));
        }
        pos.push(i64_of(rec.positive));
        neg.push(i64_of(rec.negative));
    }
    if !peers.is_empty() {
        let [ev, pr, rf] = &cols;
        tx.execute(
            "UPDATE evidence e SET r = v.r, s = v.s, at_ms = v.at_ms,
                    positive = v.positive, negative = v.negative,
                    proven_r = v.pr, proven_s = v.ps, proven_at_ms = v.pat,
                    referral_r = v.fr, referral_s = v.fs, referral_at_ms = v.fat
             FROM unnest($2::text[], $3::float8[], $4::float8[], $5::bigint[], $6::bigint[],
                         $7::bigint[], $8::float8[], $9::float8[], $10::bigint[],
                         $11::float8[], $12::float8[], $13::bigint[])
                  AS v(peer, r, s, at_ms, positive, negative, pr, ps, pat, fr, fs, fat)
             WHERE e.peer = v.peer AND e.shard = $1",
            &[
                &shard, &peers, &ev.0, &ev.1, &ev.2, &pos, &neg, &pr.0, &pr.1, &pr.2, &rf.0, &rf.1,
                &rf.2,
            ],
        )?;
    }
    tx.commit()?;
    // What the map shows: every shard, and the admin opinion.
    let mut whole = PeerMap::new();
    for (peer, mine) in staged {
        let mut parts = others.remove(&peer).unwrap_or_default();
        parts.push(mine);
        let mut rec = combine(&parts, cfg.policy.ageing())?;
        rec.admin = admins.get(&peer).copied();
        whole.insert(peer, rec);
    }
    Ok((answers, whole, newest_ms))
}

/// Insert the batch's reports whose subject it may hold, in one statement; the IDs of
/// those that were new, by (reporter, nonce). A report already stored (or twice in the
/// batch) is missing from the answer.
fn insert_reports(
    tx: &mut postgres::Transaction<'_>,
    ops: &[Op],
    staged: &PeerMap,
    cfg: StoreConfig,
) -> Result<BTreeMap<(PeerId, [u8; 16]), i64>, StoreError> {
    let mut cols: (Vec<String>, Vec<String>, Vec<&str>, Vec<String>) = Default::default();
    let mut times: (Vec<i64>, Vec<&[u8]>, Vec<i64>) = Default::default();
    for op in ops {
        let Op::Report {
            report,
            proof,
            received_ms,
        } = op
        else {
            continue;
        };
        if !staged.contains_key(&report.subject)
            || (needs_reporter(&cfg, *proof) && !staged.contains_key(&report.reporter))
        {
            continue;
        }
        cols.0.push(report.reporter.to_string());
        cols.1.push(report.subject.to_string());
        cols.2.push(report.outcome.as_str());
        cols.3.push(
            report
                .route
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
        );
        times.0.push(i64_of(report.timestamp_ms));
        times.1.push(&report.nonce[..]);
        times.2.push(i64_of(*received_ms));
    }
    let mut ids = BTreeMap::new();
    if cols.0.is_empty() {
        return Ok(ids);
    }
    for row in tx.query(
        "INSERT INTO reports(reporter, subject, outcome, route, timestamp_ms, nonce, received_ms)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                              $6::bytea[], $7::bigint[])
         ON CONFLICT (reporter, nonce) DO NOTHING RETURNING id, reporter, nonce",
        &[
            &cols.0, &cols.1, &cols.2, &cols.3, &times.0, &times.1, &times.2,
        ],
    )? {
        let reporter: String = row.get(1);
        let nonce: Vec<u8> = row.get(2);
        let reporter: PeerId = reporter
            .parse()
            .map_err(|e| crate::store::corrupt("reports", e))?;
        let nonce: [u8; 16] = nonce
            .try_into()
            .map_err(|_| crate::store::corrupt("reports", "nonce is not 16 bytes"))?;
        ids.insert((reporter, nonce), row.get(0));
    }
    Ok(ids)
}

/// Whether a report's reporter may have its referral record changed, so the batch must
/// hold (and lock) its row: an ordinary peer's report while reports are checked.
fn needs_reporter(cfg: &StoreConfig, proof: bool) -> bool {
    !proof && cfg.check_reports
}

/// A peer's whole record: this shard's (staged) share and the other shards' as read.
fn whole(
    peer: PeerId,
    (staged, others): (&PeerMap, &BTreeMap<PeerId, Vec<PeerRecord>>),
    ageing: trust::Ageing,
) -> Result<PeerRecord, StoreError> {
    let mut parts = others.get(&peer).cloned().unwrap_or_default();
    parts.extend(staged.get(&peer).copied());
    combine(&parts, ageing)
}

/// Answer one report of the batch: fold a newly stored one (`id`) into the staged shares
/// of its subject (and, for an ordinary peer's checked report, of its reporter), judged on
/// their whole records; otherwise it is a replay, or, when an earlier attempt of this batch
/// may have committed, that attempt's report, acknowledged with its stored ID.
fn fold_report(
    tx: &mut postgres::Transaction<'_>,
    (report, proof): (&ReportBody, bool),
    id: Option<i64>,
    retry: bool,
    cfg: StoreConfig,
    (staged, others): (&mut PeerMap, &BTreeMap<PeerId, Vec<PeerRecord>>),
    dirty: &mut BTreeSet<PeerId>,
) -> Result<Result<(i64, ReportCounts), WriteError>, StoreError> {
    if !staged.contains_key(&report.subject)
        || (needs_reporter(&cfg, proof) && !staged.contains_key(&report.reporter))
    {
        return Ok(Err(WriteError::TooManyPeers));
    }
    // Counts over every shard: this one as it stands now, the others as read.
    let theirs = others
        .get(&report.subject)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let counts = |rec: &PeerRecord| ReportCounts {
        positive: rec.positive + theirs.iter().map(|p| p.positive).sum::<u64>(),
        negative: rec.negative + theirs.iter().map(|p| p.negative).sum::<u64>(),
    };
    let Some(id) = id else {
        if retry {
            // Stored by an attempt whose answer was lost: the same report, acknowledged
            // with its ID; its evidence is already counted.
            let stored = tx.query_opt(
                "SELECT id FROM reports WHERE reporter = $1 AND nonce = $2",
                &[&report.reporter.to_string(), &&report.nonce[..]],
            )?;
            if let (Some(row), Some(rec)) = (stored, staged.get(&report.subject)) {
                return Ok(Ok((row.get(0), counts(rec))));
            }
        }
        return Ok(Err(WriteError::Replay));
    };
    let effect = Effect::judge(
        &cfg,
        report,
        proof,
        &whole(report.subject, (staged, others), cfg.policy.ageing())?,
        &whole(report.reporter, (staged, others), cfg.policy.ageing())?,
    );
    let mut reporter = staged.get(&report.reporter).copied();
    let Some(subject) = staged.get_mut(&report.subject) else {
        return Ok(Err(WriteError::TooManyPeers));
    };
    effect.apply(&cfg, report, subject, reporter.as_mut());
    let answer = (id, counts(subject));
    if effect.touches_subject() {
        dirty.insert(report.subject);
    }
    if effect.touches_reporter()
        && let Some(reporter) = reporter
    {
        staged.insert(report.reporter, reporter);
        dirty.insert(report.reporter);
    }
    Ok(Ok(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_never_takes_back_evidence_this_instance_committed_later() {
        let ageing = trust::Ageing::never();
        let mut map = PeerMap::new();
        let mut mine = PeerRecord::default();
        mine.record(true, 10, ageing);
        mine.record(true, 11, ageing);
        map.insert(PeerId(1), mine);
        map.insert(
            PeerId(2),
            PeerRecord {
                admin: Some(Opinion::new(0.5, 0.5, 0.0, 0.5).expect("opinion")),
                ..PeerRecord::default()
            },
        );
        let mut older = PeerRecord::default();
        older.record(true, 10, ageing);
        let mut theirs = PeerRecord::default();
        theirs.record(false, 12, ageing);
        let fresh = PeerMap::from([(PeerId(1), older), (PeerId(3), theirs)]);
        merge(&mut map, fresh);
        assert_eq!(map[&PeerId(1)].positive, 2, "the newer local count stays");
        assert_eq!(
            map[&PeerId(3)].negative,
            1,
            "another instance's peer arrives"
        );
        assert!(
            map[&PeerId(2)].admin.is_none(),
            "an admin opinion deleted elsewhere goes"
        );
    }
}
