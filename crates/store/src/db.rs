//! [`Store`]: the connection to `peer.db`, opening (pragmas, integrity, migrations),
//! applying batches of [`Op`]s under the bounds, and the start-up snapshot.

use crate::error::{OpenError, StoreError};
use crate::model::{
    CallEntry, CallOutcome, ContactEntry, Direction, Identity, Op, PendingRequest, Snapshot,
    StoredRecord,
};
use crate::schema::SCHEMA;
use overlay::secure::{CallFailure, Layer, Role, UnknownRole};
use overlay::{Contact, NodeId};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use service::sqlite::{self, Durability, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The database file's name inside the peer's data directory.
pub const DB_FILE: &str = "peer.db";

/// Longest accepted signature on a record, in bytes.
pub const MAX_SIGNATURE_LEN: usize = 512;
/// Longest accepted call-history `call_id`, in bytes.
pub const MAX_CALL_ID_LEN: usize = 256;

/// Bounds and durability of the peer's database. Defaults mirror the in-memory bounds of
/// the overlay (`SecureConfig::cache_capacity`, `ChordConfig::max_records`/`max_record_len`,
/// `SecureConfig::max_pending`), so the database never holds more than the node could.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Contact-cache entries kept (least recently used evicted beyond).
    pub max_contacts: usize,
    /// Records kept (new keys refused beyond, like `ChordNode`).
    pub max_records: usize,
    /// One record's payload, bytes.
    pub max_record_len: usize,
    /// All records' payloads and signatures together, bytes.
    pub max_record_bytes: u64,
    /// Held CSP requests kept (new ones refused beyond).
    pub max_pending: usize,
    /// One held request's INVITE, bytes (the overlay's frame limit).
    pub max_invite_len: usize,
    /// Call-history lines kept (oldest pruned beyond).
    pub max_calls: usize,
    /// When a commit counts as done.
    pub durability: Durability,
    /// How long to wait for a lock held by another connection.
    pub busy_timeout: Duration,
    /// Run `PRAGMA quick_check` when opening (cheap for a peer-sized file; catches
    /// truncation and overwritten pages before the node trusts the data).
    pub integrity_check: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_contacts: 256,
            max_records: 65_536,
            max_record_len: 4096,
            max_record_bytes: 64 << 20,
            max_pending: 1024,
            max_invite_len: 64 << 10,
            max_calls: 10_000,
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            integrity_check: true,
        }
    }
}

/// What one [`Store::apply`] did besides applying.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Operations applied.
    pub applied: u64,
    /// Operations refused by a bound (too large, table full); nothing was written for them.
    pub rejected: u64,
    /// Contacts evicted (least recently used) to stay within the bound.
    pub evicted: u64,
    /// Call-history lines pruned (oldest first).
    pub pruned_calls: u64,
}

/// Row counts, for tests and status output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Contact-cache entries.
    pub contacts: u64,
    /// Records.
    pub records: u64,
    /// Bytes of record payloads and signatures.
    pub record_bytes: u64,
    /// Held CSP requests.
    pub pending: u64,
    /// Call-history lines.
    pub calls: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    contacts: u64,
    records: u64,
    record_bytes: u64,
    pending: u64,
    next_lru: i64,
}

/// An open `peer.db`. One per peer; writes normally go through a [`crate::Writer`] that
/// owns it on a dedicated thread.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    cfg: StoreConfig,
    counts: Counters,
}

/// A store opened by [`Store::open_or_reset`].
pub struct Opened {
    /// The store.
    pub store: Store,
    /// Where a corrupt file was moved, if one was.
    pub moved_aside: Option<PathBuf>,
}

impl Store {
    /// Open (creating if needed) `dir/peer.db`: WAL journal, the configured durability,
    /// busy timeout, integrity check, migrations to the current schema.
    pub fn open(dir: &Path, cfg: StoreConfig) -> Result<Store, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let conn = sqlite::open(
            &path,
            &SCHEMA,
            &OpenOptions {
                durability: cfg.durability,
                busy_timeout: cfg.busy_timeout,
                integrity_check: cfg.integrity_check,
                // Call history and contacts are private: owner-only, like the key file.
                owner_only: true,
            },
        )?;
        let mut store = Store {
            conn,
            path,
            cfg,
            counts: Counters::default(),
        };
        store.recount().map_err(|e| match e {
            StoreError::Corrupt(e) | StoreError::Sqlite(e) => {
                OpenError::from_sqlite(&store.path, e)
            }
            StoreError::BadRow { table, reason } => OpenError::Corrupt {
                path: store.path.clone(),
                reason: format!("{table}: {reason}"),
            },
        })?;
        Ok(store)
    }

    /// [`Store::open`], but a corrupt file (and its `-wal`/`-shm`) is moved aside to
    /// `peer.db.corrupt-<unix ms>` and a fresh database started; logged at `warn`. A
    /// database from a newer schema, a foreign database and I/O errors are still refused:
    /// they are not damage, and moving them would lose someone's data.
    pub fn open_or_reset(dir: &Path, cfg: StoreConfig) -> Result<Opened, OpenError> {
        let opened = sqlite::open_or_reset(|| Store::open(dir, cfg.clone()))?;
        Ok(Opened {
            store: opened.db,
            moved_aside: opened.moved_aside,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bounds in force.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Apply `ops` in one transaction: all or nothing. Operations over a bound are skipped
    /// and counted in the report, not errors.
    pub fn apply(&mut self, ops: &[Op]) -> Result<ApplyReport, StoreError> {
        let saved = self.counts;
        let mut report = ApplyReport::default();
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut batch = Batch {
                tx: &tx,
                cfg: &self.cfg,
                counts: &mut self.counts,
            };
            let mut calls_added = false;
            for op in ops {
                calls_added |= matches!(op, Op::AddCall(_));
                if batch.apply_one(op)? {
                    report.applied += 1;
                } else {
                    report.rejected += 1;
                }
            }
            report.evicted = batch.evict_contacts()?;
            if calls_added {
                let keep = i64::try_from(self.cfg.max_calls).unwrap_or(i64::MAX);
                report.pruned_calls = tx
                    .prepare_cached(
                        "DELETE FROM calls WHERE seq <= (SELECT MAX(seq) FROM calls) - ?1",
                    )?
                    .execute([keep])? as u64;
            }
            tx.commit()?;
            Ok::<_, StoreError>(())
        })();
        if let Err(e) = result {
            self.counts = saved; // rolled back
            return Err(e);
        }
        Ok(report)
    }

    /// Read everything to warm a (re)starting node. Expired contacts, records and held
    /// requests (as of `now_unix_ms`) are deleted first and not returned.
    pub fn load_snapshot(&mut self, now_unix_ms: u64) -> Result<Snapshot, StoreError> {
        let now = ms_i64(now_unix_ms);
        {
            let tx = self.conn.transaction()?;
            tx.execute(
                "DELETE FROM contacts WHERE last_seen_ms + ttl_ms < ?1",
                [now],
            )?;
            tx.execute(
                "DELETE FROM records WHERE expires_ms IS NOT NULL AND expires_ms < ?1",
                [now],
            )?;
            tx.execute("DELETE FROM pending WHERE deadline_ms < ?1", [now])?;
            tx.commit()?;
        }
        self.recount()?;
        Ok(Snapshot {
            identity: self.identity()?,
            contacts: self.contacts()?,
            records: self.records()?,
            pending: self.pending()?,
            calls: self.calls()?,
        })
    }

    /// Row counts, read from the file.
    pub fn counts(&self) -> Result<StoreCounts, StoreError> {
        let one = |sql: &str| -> Result<u64, StoreError> {
            let n: i64 = self.conn.query_row(sql, [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(StoreCounts {
            contacts: one("SELECT COUNT(*) FROM contacts")?,
            records: one("SELECT COUNT(*) FROM records")?,
            record_bytes: one("SELECT COALESCE(SUM(size), 0) FROM records")?,
            pending: one("SELECT COUNT(*) FROM pending")?,
            calls: one("SELECT COUNT(*) FROM calls")?,
        })
    }

    fn recount(&mut self) -> Result<(), StoreError> {
        let c = self.counts()?;
        let max_lru: Option<i64> =
            self.conn
                .query_row("SELECT MAX(lru) FROM contacts", [], |r| r.get(0))?;
        self.counts = Counters {
            contacts: c.contacts,
            records: c.records,
            record_bytes: c.record_bytes,
            pending: c.pending,
            next_lru: max_lru.unwrap_or(0).saturating_add(1),
        };
        Ok(())
    }

    fn identity(&self) -> Result<Option<Identity>, StoreError> {
        const T: &str = "identity";
        let row = self
            .conn
            .query_row(
                "SELECT node_id, layer, role, cert_fp, chain_fp FROM identity WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((id, layer, role, cert, chain)) = row else {
            return Ok(None);
        };
        Ok(Some(Identity {
            node_id: id_from(T, &id)?,
            layer: layer_from(T, layer)?,
            role: role_from(&role)?,
            cert_fingerprint: fp_from(T, &cert)?,
            chain_fingerprint: fp_from(T, &chain)?,
        }))
    }

    /// Every row `sql` selects, read as the tuple `R` of its columns and made a `T` by
    /// `decode` (which checks what SQLite's types cannot).
    fn rows<R, T>(
        &self,
        sql: &str,
        decode: impl Fn(R) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError>
    where
        R: for<'r> TryFrom<&'r rusqlite::Row<'r>, Error = rusqlite::Error>,
    {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| R::try_from(r))?;
        rows.map(|row| decode(row?)).collect()
    }

    fn contacts(&self) -> Result<Vec<ContactEntry>, StoreError> {
        const T: &str = "contacts";
        self.rows(
            "SELECT node_id, addr, layer, last_seen_ms, ttl_ms FROM contacts ORDER BY lru",
            |(id, addr, layer, seen, ttl): (Vec<u8>, Option<String>, i64, i64, i64)| {
                Ok(ContactEntry {
                    contact: contact_from(T, &id, addr)?,
                    layer: layer_from(T, layer)?,
                    last_seen_unix_ms: u64_from(T, seen)?,
                    ttl_ms: u64_from(T, ttl)?,
                })
            },
        )
    }

    fn records(&self) -> Result<Vec<StoredRecord>, StoreError> {
        const T: &str = "records";
        type Row = (
            Vec<u8>,
            Vec<u8>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<i64>,
        );
        self.rows(
            "SELECT key, value, owner, signature, expires_ms FROM records ORDER BY key",
            |(key, value, owner, signature, expires): Row| {
                Ok(StoredRecord {
                    key: id_from(T, &key)?,
                    value,
                    owner: owner.map(|o| id_from(T, &o)).transpose()?,
                    signature,
                    expires_unix_ms: expires.map(|e| u64_from(T, e)).transpose()?,
                })
            },
        )
    }

    fn pending(&self) -> Result<Vec<PendingRequest>, StoreError> {
        const T: &str = "pending";
        type Row = (i64, i64, Vec<u8>, Option<String>, Vec<u8>, Vec<u8>, i64);
        let mut out = self.rows(
            "SELECT handle, call, caller_id, caller_addr, callee, invite, deadline_ms
             FROM pending ORDER BY handle",
            |(handle, call, caller_id, caller_addr, callee, invite, deadline): Row| {
                Ok(PendingRequest {
                    handle: handle as u64,
                    call: call as u64,
                    caller: contact_from(T, &caller_id, caller_addr)?,
                    callee: id_from(T, &callee)?,
                    invite,
                    deadline_unix_ms: u64_from(T, deadline)?,
                })
            },
        )?;
        out.sort_by_key(|p| p.handle); // handles are stored bit-cast to i64
        Ok(out)
    }

    fn calls(&self) -> Result<Vec<CallEntry>, StoreError> {
        const T: &str = "calls";
        type Row = (String, String, Vec<u8>, i64, Option<i64>, String);
        self.rows(
            "SELECT call_id, direction, peer, started_ms, setup_ms, outcome
             FROM calls ORDER BY seq",
            |(call_id, direction, peer, started, setup, outcome): Row| {
                Ok(CallEntry {
                    call_id,
                    direction: direction_from(&direction)?,
                    peer: id_from(T, &peer)?,
                    started_unix_ms: u64_from(T, started)?,
                    setup_ms: setup
                        .map(|s| {
                            u32::try_from(s)
                                .map_err(|_| bad(T, format!("setup_ms {s} out of range")))
                        })
                        .transpose()?,
                    outcome: outcome_from(&outcome)?,
                })
            },
        )
    }
}

/// One [`Store::apply`] transaction under way: the bounds its operations are checked
/// against and the counters they keep up to date.
struct Batch<'t, 'c> {
    tx: &'t Transaction<'c>,
    cfg: &'t StoreConfig,
    counts: &'t mut Counters,
}

impl Batch<'_, '_> {
    /// Apply one operation; `false` when a bound refused it.
    fn apply_one(&mut self, op: &Op) -> Result<bool, StoreError> {
        match op {
            Op::SetIdentity(i) => {
                self.tx.prepare_cached(
                    "INSERT OR REPLACE INTO identity (id, node_id, layer, role, cert_fp, chain_fp)
                     VALUES (1, ?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    id_blob(i.node_id),
                    i.layer.get(),
                    i.role.as_str(),
                    &i.cert_fingerprint[..],
                    &i.chain_fingerprint[..],
                ])?;
            }
            Op::TouchContact(e) => return self.touch_contact(e),
            Op::RemoveContact(id) => {
                let n = self
                    .tx
                    .prepare_cached("DELETE FROM contacts WHERE node_id = ?1")?
                    .execute([id_blob(*id)])?;
                self.counts.contacts = self.counts.contacts.saturating_sub(n as u64);
            }
            Op::ReplaceContacts(entries) => {
                self.tx.execute("DELETE FROM contacts", [])?;
                self.counts.contacts = 0;
                let skip = entries.len().saturating_sub(self.cfg.max_contacts);
                for e in &entries[skip..] {
                    self.touch_contact(e)?;
                }
            }
            Op::PutRecord(r) => {
                if r.value.len() > self.cfg.max_record_len
                    || r.signature
                        .as_ref()
                        .is_some_and(|s| s.len() > MAX_SIGNATURE_LEN)
                {
                    return Ok(false);
                }
                let old: Option<i64> = self
                    .tx
                    .prepare_cached("SELECT size FROM records WHERE key = ?1")?
                    .query_row([id_blob(r.key)], |row| row.get(0))
                    .optional()?;
                let old_size = old.map_or(0, |s| u64::try_from(s).unwrap_or(0));
                let records = self.counts.records + u64::from(old.is_none());
                let bytes = self.counts.record_bytes.saturating_sub(old_size) + r.size();
                if records > self.cfg.max_records as u64 || bytes > self.cfg.max_record_bytes {
                    return Ok(false);
                }
                self.tx.prepare_cached(
                    "INSERT OR REPLACE INTO records (key, value, owner, signature, expires_ms, size)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    id_blob(r.key),
                    r.value,
                    r.owner.map(id_blob),
                    r.signature,
                    r.expires_unix_ms.map(ms_i64),
                    ms_i64(r.size()),
                ])?;
                self.counts.records = records;
                self.counts.record_bytes = bytes;
            }
            Op::RemoveRecord(key) => {
                let old: Option<i64> = self
                    .tx
                    .prepare_cached("DELETE FROM records WHERE key = ?1 RETURNING size")?
                    .query_row([id_blob(*key)], |row| row.get(0))
                    .optional()?;
                if let Some(size) = old {
                    self.counts.records = self.counts.records.saturating_sub(1);
                    self.counts.record_bytes = self
                        .counts
                        .record_bytes
                        .saturating_sub(u64::try_from(size).unwrap_or(0));
                }
            }
            Op::ClearRecords => {
                self.tx.execute("DELETE FROM records", [])?;
                self.counts.records = 0;
                self.counts.record_bytes = 0;
            }
            Op::PutPending(p) => {
                if p.invite.len() > self.cfg.max_invite_len {
                    return Ok(false);
                }
                let exists = self
                    .tx
                    .prepare_cached("SELECT 1 FROM pending WHERE handle = ?1")?
                    .exists([p.handle as i64])?;
                if !exists && self.counts.pending >= self.cfg.max_pending as u64 {
                    return Ok(false);
                }
                self.tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO pending
                     (handle, call, caller_id, caller_addr, callee, invite, deadline_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        p.handle as i64,
                        p.call as i64,
                        id_blob(p.caller.id),
                        p.caller.addr.map(|a| a.to_string()),
                        id_blob(p.callee),
                        p.invite,
                        ms_i64(p.deadline_unix_ms),
                    ])?;
                if !exists {
                    self.counts.pending += 1;
                }
            }
            Op::RemovePending(handle) => {
                let n = self
                    .tx
                    .prepare_cached("DELETE FROM pending WHERE handle = ?1")?
                    .execute([*handle as i64])?;
                self.counts.pending = self.counts.pending.saturating_sub(n as u64);
            }
            Op::AddCall(c) => {
                if c.call_id.len() > MAX_CALL_ID_LEN || self.cfg.max_calls == 0 {
                    return Ok(false);
                }
                self.tx.prepare_cached(
                    "INSERT INTO calls (call_id, direction, peer, started_ms, setup_ms, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    c.call_id,
                    direction_text(c.direction),
                    id_blob(c.peer),
                    ms_i64(c.started_unix_ms),
                    c.setup_ms,
                    outcome_text(c.outcome),
                ])?;
            }
        }
        Ok(true)
    }

    fn touch_contact(&mut self, e: &ContactEntry) -> Result<bool, StoreError> {
        if self.cfg.max_contacts == 0 {
            return Ok(false);
        }
        let key = id_blob(e.contact.id);
        let exists = self
            .tx
            .prepare_cached("SELECT 1 FROM contacts WHERE node_id = ?1")?
            .exists([key])?;
        self.tx
            .prepare_cached(
                "INSERT OR REPLACE INTO contacts (node_id, addr, layer, last_seen_ms, ttl_ms, lru)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                key,
                e.contact.addr.map(|a| a.to_string()),
                e.layer.get(),
                ms_i64(e.last_seen_unix_ms),
                ms_i64(e.ttl_ms),
                self.counts.next_lru,
            ])?;
        self.counts.next_lru = self.counts.next_lru.saturating_add(1);
        if !exists {
            self.counts.contacts += 1;
        }
        Ok(true)
    }

    /// Drop the least recently used contacts beyond the bound; how many went.
    fn evict_contacts(&mut self) -> Result<u64, StoreError> {
        let excess = self
            .counts
            .contacts
            .saturating_sub(self.cfg.max_contacts as u64);
        if excess == 0 {
            return Ok(0);
        }
        let n = self
            .tx
            .prepare_cached(
                "DELETE FROM contacts WHERE node_id IN
                 (SELECT node_id FROM contacts ORDER BY lru LIMIT ?1)",
            )?
            .execute([ms_i64(excess)])? as u64;
        self.counts.contacts = self.counts.contacts.saturating_sub(n);
        Ok(n)
    }
}

fn bad(table: &'static str, reason: String) -> StoreError {
    StoreError::BadRow { table, reason }
}

fn id_blob(id: NodeId) -> [u8; 16] {
    id.0.to_be_bytes()
}

fn id_from(table: &'static str, b: &[u8]) -> Result<NodeId, StoreError> {
    let bytes: [u8; 16] = b
        .try_into()
        .map_err(|_| bad(table, format!("node id of {} bytes, expected 16", b.len())))?;
    Ok(NodeId(u128::from_be_bytes(bytes)))
}

fn fp_from(table: &'static str, b: &[u8]) -> Result<[u8; 32], StoreError> {
    b.try_into().map_err(|_| {
        bad(
            table,
            format!("fingerprint of {} bytes, expected 32", b.len()),
        )
    })
}

fn contact_from(
    table: &'static str,
    id: &[u8],
    addr: Option<String>,
) -> Result<Contact, StoreError> {
    Ok(Contact {
        id: id_from(table, id)?,
        addr: addr
            .map(|a| {
                a.parse()
                    .map_err(|_| bad(table, format!("bad socket address {a:?}")))
            })
            .transpose()?,
    })
}

fn layer_from(table: &'static str, v: i64) -> Result<Layer, StoreError> {
    match u8::try_from(v) {
        Ok(l) => Layer::new(l).map_err(|e| bad(table, e.to_string())),
        Err(_) => Err(bad(table, format!("layer {v}, expected 1..=3"))),
    }
}

fn u64_from(table: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| bad(table, format!("negative time {v}")))
}

fn ms_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn role_from(s: &str) -> Result<Role, StoreError> {
    s.parse()
        .map_err(|e: UnknownRole| bad("identity", e.to_string()))
}

fn direction_text(d: Direction) -> &'static str {
    match d {
        Direction::Outgoing => "out",
        Direction::Incoming => "in",
    }
}

fn direction_from(s: &str) -> Result<Direction, StoreError> {
    match s {
        "out" => Ok(Direction::Outgoing),
        "in" => Ok(Direction::Incoming),
        _ => Err(bad("calls", format!("unknown direction {s:?}"))),
    }
}

fn outcome_text(o: CallOutcome) -> &'static str {
    match o {
        CallOutcome::Ringing => "ringing",
        CallOutcome::Failed(CallFailure::TimedOut) => "timed_out",
        CallOutcome::Failed(CallFailure::Tampered) => "tampered",
        CallOutcome::Failed(CallFailure::NoRoute) => "no_route",
        CallOutcome::Failed(CallFailure::Overloaded) => "overloaded",
    }
}

fn outcome_from(s: &str) -> Result<CallOutcome, StoreError> {
    match s {
        "ringing" => Ok(CallOutcome::Ringing),
        "timed_out" => Ok(CallOutcome::Failed(CallFailure::TimedOut)),
        "tampered" => Ok(CallOutcome::Failed(CallFailure::Tampered)),
        "no_route" => Ok(CallOutcome::Failed(CallFailure::NoRoute)),
        "overloaded" => Ok(CallOutcome::Failed(CallFailure::Overloaded)),
        _ => Err(bad("calls", format!("unknown outcome {s:?}"))),
    }
}
