//! SQLite store (WAL, `synchronous = FULL`): tokens (hashed), enrolled nodes, every issued
//! certificate, revocations, and the overlay parameters fixed at first start.
//!
//! Enrollment runs in one `BEGIN IMMEDIATE` transaction: take the token, pick a free ID,
//! record node and certificate, commit — and only then answer. Any error drops the
//! transaction, so a refused request writes nothing.
//!
//! **PostgreSQL** ([`Store::open_postgres`]) holds the same tables for several E&A
//! instances. A token is taken with one conditional `UPDATE … WHERE uses_left > 0`, so its
//! row lock makes every use count once across instances. Node-IDs and certificate serials
//! are primary keys: two instances that pick the same free ID in the same moment cannot
//! both commit; the loser's transaction fails with [`StoreError::is_conflict`] and the
//! server runs the enrollment again (its token use rolled back with it). Certificate
//! serials are 128 random bits, so they never meet in practice, and the key would refuse
//! it if they did. A lost connection is reopened by the next request.

use crate::api::BootstrapPeer;
use crate::layer::{Layer, Role};
use overlay::NodeId;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use service::postgres::{Migrations, PgError, PgOptions, Session, off_runtime};
use service::sqlite::{self, Durability, OpenOptions, Schema, Unversioned};
use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (damaged, newer schema, not WAL, I/O).
    #[error(transparent)]
    Open(#[from] sqlite::OpenError),
    /// SQLite failed (disk, lock, corruption).
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// No token with that hash.
    #[error("unknown enrollment token")]
    TokenUnknown,
    /// The token has expired.
    #[error("enrollment token expired")]
    TokenExpired,
    /// The token has no uses left.
    #[error("enrollment token already used")]
    TokenUsedUp,
    /// The data directory was set up with other overlay parameters.
    #[error("data directory was created with {key} = {stored}, not {given}")]
    MetaMismatch {
        /// Parameter name.
        key: String,
        /// Value in the database.
        stored: String,
        /// Value given now.
        given: String,
    },
    /// A value in the database is not what this code wrote.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// PostgreSQL failed (connection, constraint, server).
    #[error(transparent)]
    Postgres(#[from] PgError),
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        StoreError::Postgres(PgError::Db(e))
    }
}

impl StoreError {
    /// Another instance committed a conflicting row first (same Node-ID or serial) or the
    /// database broke a deadlock: nothing was written, and the request may run again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Postgres(PgError::Db(e)) if service::postgres::is_conflict(e))
    }

    /// The database is unreachable or restarting: the request may be tried again later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Postgres(e) if e.is_transient())
    }
}

/// A token as stored (hash, not the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRow {
    /// Role it enrolls.
    pub role: Role,
    /// Layer it pins, if any.
    pub layer: Option<Layer>,
    /// Uses left before this one.
    pub uses_left: u32,
    /// Expiry, unix seconds.
    pub expires_at: i64,
}

/// A node row to insert.
#[derive(Clone, Debug)]
pub struct NodeRow {
    /// Node-ID.
    pub node_id: NodeId,
    /// Layer.
    pub layer: Layer,
    /// Role.
    pub role: Role,
    /// SHA-256 of its SPKI, hex.
    pub spki_sha256: String,
    /// Advertised overlay address.
    pub listen: Option<String>,
    /// Location given.
    pub location: Option<(f64, f64)>,
    /// Source address of the request.
    pub source: String,
}

/// A certificate row to insert.
#[derive(Clone, Debug)]
pub struct CertRow {
    /// Serial, hex.
    pub serial: String,
    /// Node-ID it binds.
    pub node_id: NodeId,
    /// Validity start.
    pub not_before: i64,
    /// Validity end.
    pub not_after: i64,
    /// The certificate.
    pub der: Vec<u8>,
}

/// One directory line: Node-ID, advertised address, newest valid certificate (DER).
pub type DirectoryRow = (NodeId, Option<String>, Vec<u8>);

/// What the database holds ([`Store::counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Tokens ever created (`enroll-server token create`).
    pub tokens: u64,
    /// Tokens with a use left that have not expired.
    pub tokens_usable: u64,
    /// Certificates ever issued (enrollments and renewals).
    pub certificates: u64,
    /// Revoked certificates still within their validity: the entries of the CRL.
    pub crl_entries: u64,
    /// Enrolled nodes not revoked.
    pub members: u64,
}

/// What the store knows about an issued certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertStatus {
    /// Node-ID it binds.
    pub node_id: NodeId,
    /// Revoked (the certificate or its node), unix seconds.
    pub revoked_at: Option<i64>,
}

/// The database.
#[derive(Debug)]
pub struct Store {
    db: Db,
}

/// The embedded file, or PostgreSQL shared by several E&A instances.
#[derive(Debug)]
enum Db {
    Sqlite(Connection),
    Postgres(Box<std::sync::Mutex<Session>>),
}

/// The E&A database on PostgreSQL: the SQLite schema in PostgreSQL's types.
const PG_MIGRATIONS: Migrations = Migrations {
    name: "E&A database",
    lock_key: 0x5045_4e41, // "PENA"
    migrations: &["
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tokens(
  hash TEXT PRIMARY KEY, role TEXT NOT NULL, layer BIGINT, uses_left BIGINT NOT NULL,
  expires_at BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE nodes(
  node_id TEXT PRIMARY KEY, layer BIGINT NOT NULL, role TEXT NOT NULL,
  spki_sha256 TEXT NOT NULL, listen TEXT, lat DOUBLE PRECISION, lon DOUBLE PRECISION,
  source TEXT NOT NULL, enrolled_at BIGINT NOT NULL, revoked_at BIGINT);
CREATE TABLE certs(
  serial TEXT PRIMARY KEY, node_id TEXT NOT NULL, not_before BIGINT NOT NULL,
  not_after BIGINT NOT NULL, der BYTEA NOT NULL, issued_at BIGINT NOT NULL,
  revoked_at BIGINT);
CREATE INDEX certs_node ON certs(node_id);
"],
};

/// The E&A database. Files from before the version table are adopted: the first migration
/// is the schema they were created with (`IF NOT EXISTS` throughout).
const SCHEMA: Schema = Schema {
    name: "E&A database",
    migrations: &[SCHEMA_V1],
    unversioned: Unversioned::Adopt,
};

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(
  hash TEXT PRIMARY KEY, role TEXT NOT NULL, layer INTEGER, uses_left INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(
  node_id TEXT PRIMARY KEY, layer INTEGER NOT NULL, role TEXT NOT NULL,
  spki_sha256 TEXT NOT NULL, listen TEXT, lat REAL, lon REAL, source TEXT NOT NULL,
  enrolled_at INTEGER NOT NULL, revoked_at INTEGER);
CREATE TABLE IF NOT EXISTS certs(
  serial TEXT PRIMARY KEY, node_id TEXT NOT NULL, not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL, der BLOB NOT NULL, issued_at INTEGER NOT NULL,
  revoked_at INTEGER);
CREATE INDEX IF NOT EXISTS certs_node ON certs(node_id);
";

fn role_of(s: String) -> Result<Role, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("role {s:?}")))
}

fn layer_of(n: i64) -> Result<Layer, StoreError> {
    u8::try_from(n)
        .ok()
        .and_then(|n| Layer::new(n).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("layer {n}")))
}

impl Store {
    /// Open or create the database file (WAL, FULL durability: an enrollment is answered
    /// only once it would survive a power cut).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = sqlite::open(
            path,
            &SCHEMA,
            &OpenOptions {
                durability: Durability::Full,
                busy_timeout: Duration::from_secs(10),
                integrity_check: false,
                owner_only: false,
            },
        )?;
        Ok(Self {
            db: Db::Sqlite(conn),
        })
    }

    /// Connect to PostgreSQL shared with other E&A instances, migrating it on first use.
    pub fn open_postgres(opts: PgOptions) -> Result<Self, StoreError> {
        let session = Session::open(opts, &PG_MIGRATIONS)?;
        Ok(Self {
            db: Db::Postgres(Box::new(std::sync::Mutex::new(session))),
        })
    }

    /// Run `f` on the PostgreSQL connection, off any async runtime thread.
    fn pg<R: Send>(
        session: &std::sync::Mutex<Session>,
        f: impl FnOnce(&mut postgres::Client) -> Result<R, StoreError> + Send,
    ) -> Result<R, StoreError> {
        off_runtime(|| {
            let mut session = service::sync::lock(session);
            let res = session.client().map_err(StoreError::from).and_then(f);
            if res.as_ref().is_err_and(StoreError::is_unavailable) {
                session.reset();
            }
            res
        })
    }

    /// Record `value` for `key` on first use; afterwards it must match.
    pub fn pin_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let stored: String = match &self.db {
            Db::Sqlite(conn) => {
                conn.execute(
                    "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)",
                    params![key, value],
                )?;
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?
            }
            Db::Postgres(s) => Self::pg(s, |c| {
                c.execute(
                    "INSERT INTO meta(key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    &[&key, &value],
                )?;
                Ok(
                    c.query_one("SELECT value FROM meta WHERE key = $1", &[&key])?
                        .get(0),
                )
            })?,
        };
        if stored == value {
            Ok(())
        } else {
            Err(StoreError::MetaMismatch {
                key: key.into(),
                stored,
                given: value.into(),
            })
        }
    }

    /// Is this the PostgreSQL backend (shared with other instances)?
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// Store a new token (by hash).
    pub fn add_token(
        &self,
        hash: &str,
        role: Role,
        layer: Option<Layer>,
        uses: u32,
        expires_at: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(conn) => {
                conn.execute(
                    "INSERT INTO tokens(hash, role, layer, uses_left, expires_at, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        hash,
                        role.as_str(),
                        layer.map(|l| l.get()),
                        uses,
                        expires_at,
                        now
                    ],
                )?;
            }
            Db::Postgres(s) => Self::pg(s, |c| {
                c.execute(
                    "INSERT INTO tokens(hash, role, layer, uses_left, expires_at, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &hash,
                        &role.as_str(),
                        &layer.map(|l| i64::from(l.get())),
                        &i64::from(uses),
                        &expires_at,
                        &now,
                    ],
                )?;
                Ok(())
            })?,
        }
        Ok(())
    }

    /// Begin a write transaction (takes the write lock now on SQLite). On PostgreSQL the
    /// transaction's statements block the calling thread: call it where blocking is
    /// allowed (`spawn_blocking`, a plain thread, or inside [`off_runtime`]).
    pub fn begin(&mut self) -> Result<Tx<'_>, StoreError> {
        match &mut self.db {
            Db::Sqlite(conn) => Ok(Tx(TxInner::Sqlite(
                conn.transaction_with_behavior(TransactionBehavior::Immediate)?,
            ))),
            Db::Postgres(s) => {
                let s = s.get_mut().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = s.client() {
                    s.reset();
                    return Err(e.into());
                }
                let client = s.client()?;
                Ok(Tx(TxInner::Postgres(RefCell::new(client.transaction()?))))
            }
        }
    }

    /// Revoke a node and all its certificates; returns how many certificates were newly
    /// revoked, or `None` when the node is unknown.
    pub fn revoke_node(&mut self, id: NodeId, now: i64) -> Result<Option<usize>, StoreError> {
        let key = id.to_string();
        match &mut self.db {
            Db::Sqlite(conn) => {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let known = tx.execute(
                    "UPDATE nodes SET revoked_at = COALESCE(revoked_at, ?2) WHERE node_id = ?1",
                    params![key, now],
                )?;
                if known == 0 {
                    return Ok(None);
                }
                let n = tx.execute(
                    "UPDATE certs SET revoked_at = ?2 WHERE node_id = ?1 AND revoked_at IS NULL",
                    params![key, now],
                )?;
                tx.commit()?;
                Ok(Some(n))
            }
            Db::Postgres(s) => Self::pg(s, |c| {
                let mut tx = c.transaction()?;
                let known = tx.execute(
                    "UPDATE nodes SET revoked_at = COALESCE(revoked_at, $2) WHERE node_id = $1",
                    &[&key, &now],
                )?;
                if known == 0 {
                    return Ok(None);
                }
                let n = tx.execute(
                    "UPDATE certs SET revoked_at = $2 WHERE node_id = $1 AND revoked_at IS NULL",
                    &[&key, &now],
                )?;
                tx.commit()?;
                Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
            }),
        }
    }

    /// Revoked certificates still within validity at `now`: (serial bytes, revoked at).
    pub fn revoked(&self, now: i64) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        let rows: Vec<(String, i64)> = match &self.db {
            Db::Sqlite(conn) => {
                let mut st = conn.prepare_cached(
                    "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL
                     AND not_after > ?1 ORDER BY serial",
                )?;
                st.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            }
            Db::Postgres(s) => Self::pg(s, |c| {
                Ok(c.query(
                    "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL
                     AND not_after > $1 ORDER BY serial",
                    &[&now],
                )?
                .into_iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
            })?,
        };
        rows.into_iter()
            .map(|(serial, at)| Ok((unhex(&serial)?, at)))
            .collect()
    }

    /// Number of revocation events so far (changes whenever the CRL must change), and the
    /// time of the newest one.
    pub fn revocation_version(&self) -> Result<(i64, i64), StoreError> {
        match &self.db {
            Db::Sqlite(conn) => Ok(conn.query_row(
                "SELECT COUNT(*), COALESCE(MAX(revoked_at), 0) FROM certs
                 WHERE revoked_at IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?),
            Db::Postgres(s) => Self::pg(s, |c| {
                let r = c.query_one(
                    "SELECT COUNT(*), COALESCE(MAX(revoked_at), 0) FROM certs
                     WHERE revoked_at IS NOT NULL",
                    &[],
                )?;
                Ok((r.get(0), r.get(1)))
            }),
        }
    }

    /// The directory E&A publishes: for each node that is not revoked, its newest valid
    /// certificate (DER) and advertised address; CSPGs first, then CSPs, then peers (by
    /// Node-ID), at most `max` nodes.
    pub fn directory(&self, now: i64, max: usize) -> Result<Vec<DirectoryRow>, StoreError> {
        const SQL: &str = "SELECT n.node_id, n.listen, c.der FROM nodes n
             JOIN certs c ON c.node_id = n.node_id
             WHERE n.revoked_at IS NULL AND c.revoked_at IS NULL AND c.not_after > $1
             ORDER BY CASE n.role WHEN 'cspg' THEN 0 WHEN 'csp' THEN 1 ELSE 2 END,
                      n.node_id, c.not_after DESC";
        let rows: Vec<(String, Option<String>, Vec<u8>)> = match &self.db {
            Db::Sqlite(conn) => {
                let mut st = conn.prepare_cached(&SQL.replace("$1", "?1"))?;
                st.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?
            }
            Db::Postgres(s) => Self::pg(s, |c| {
                Ok(c.query(SQL, &[&now])?
                    .into_iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect())
            })?,
        };
        let mut out: Vec<DirectoryRow> = Vec::new();
        for (id, listen, der) in rows {
            let id: NodeId = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("node {id}")))?;
            if out.last().is_some_and(|(last, _, _)| *last == id) {
                continue; // an older certificate of the same node
            }
            if out.len() >= max {
                break;
            }
            out.push((id, listen, der));
        }
        Ok(out)
    }

    /// What the database holds, for the metrics (one query; several instances on one
    /// PostgreSQL database see the same numbers).
    pub fn counts(&self, now: i64) -> Result<StoreCounts, StoreError> {
        const SQL: &str = "SELECT (SELECT COUNT(*) FROM tokens),
                (SELECT COUNT(*) FROM tokens WHERE uses_left > 0 AND expires_at > $1),
                (SELECT COUNT(*) FROM certs),
                (SELECT COUNT(*) FROM certs WHERE revoked_at IS NOT NULL AND not_after > $1),
                (SELECT COUNT(*) FROM nodes WHERE revoked_at IS NULL)";
        let row: [i64; 5] = match &self.db {
            Db::Sqlite(conn) => conn.query_row(&SQL.replace("$1", "?1"), [now], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
            })?,
            Db::Postgres(s) => Self::pg(s, |c| {
                let r = c.query_one(SQL, &[&now])?;
                Ok([r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)])
            })?,
        };
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(StoreCounts {
            tokens: n(row[0]),
            tokens_usable: n(row[1]),
            certificates: n(row[2]),
            crl_entries: n(row[3]),
            members: n(row[4]),
        })
    }

    /// Ok when the database answers a query (what `GET /readyz` reports); on PostgreSQL a
    /// lost connection is opened again first.
    pub fn ping(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(conn) => {
                conn.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
            }
            Db::Postgres(s) => Self::pg(s, |c| {
                c.query_one("SELECT 1", &[])?;
                Ok(())
            })?,
        }
        Ok(())
    }

    /// Number of certificates ever issued.
    pub fn cert_count(&self) -> Result<i64, StoreError> {
        match &self.db {
            Db::Sqlite(conn) => Ok(conn.query_row("SELECT COUNT(*) FROM certs", [], |r| r.get(0))?),
            Db::Postgres(s) => Self::pg(s, |c| {
                Ok(c.query_one("SELECT COUNT(*) FROM certs", &[])?.get(0))
            }),
        }
    }
}

/// Lowercase hex to bytes.
fn unhex(s: &str) -> Result<Vec<u8>, StoreError> {
    if !s.len().is_multiple_of(2) {
        return Err(StoreError::Corrupt(format!("serial {s}")));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| StoreError::Corrupt(format!("serial {s}")))
        })
        .collect()
}

/// A write transaction; dropped without [`Tx::commit`] it rolls back.
#[derive(Debug)]
pub struct Tx<'a>(TxInner<'a>);

enum TxInner<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(RefCell<postgres::Transaction<'a>>),
}

impl std::fmt::Debug for TxInner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxInner::Sqlite(t) => t.fmt(f),
            TxInner::Postgres(_) => f.write_str("PostgreSQL transaction"),
        }
    }
}

/// The columns `bootstrap` reads: Node-ID, layer, role, address.
type BootstrapRow = (String, i64, String, String);

impl Tx<'_> {
    /// Check a token and use it up once.
    pub fn take_token(&self, hash: &str, now: i64) -> Result<TokenRow, StoreError> {
        let (role, layer, uses_left, expires_at) = match &self.0 {
            TxInner::Sqlite(tx) => {
                let row = tx
                    .query_row(
                        "SELECT role, layer, uses_left, expires_at FROM tokens WHERE hash = ?1",
                        [hash],
                        |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, Option<i64>>(1)?,
                                r.get::<_, i64>(2)?,
                                r.get::<_, i64>(3)?,
                            ))
                        },
                    )
                    .optional()?;
                let row = row.ok_or(StoreError::TokenUnknown)?;
                check_token(row.2, row.3, now)?;
                tx.execute(
                    "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ?1",
                    [hash],
                )?;
                row
            }
            TxInner::Postgres(tx) => {
                let mut tx = tx.borrow_mut();
                // One statement takes the use under the row lock: a token with one use
                // left enrolls once, whichever instance asks first.
                let taken = tx.query_opt(
                    "UPDATE tokens SET uses_left = uses_left - 1
                     WHERE hash = $1 AND uses_left > 0 AND expires_at > $2
                     RETURNING role, layer, uses_left + 1, expires_at",
                    &[&hash, &now],
                )?;
                match taken {
                    Some(r) => (r.get(0), r.get(1), r.get(2), r.get(3)),
                    None => {
                        let r = tx
                            .query_opt(
                                "SELECT uses_left, expires_at FROM tokens WHERE hash = $1",
                                &[&hash],
                            )?
                            .ok_or(StoreError::TokenUnknown)?;
                        check_token(r.get(0), r.get(1), now)?;
                        return Err(StoreError::TokenUsedUp);
                    }
                }
            }
        };
        Ok(TokenRow {
            role: role_of(role)?,
            layer: layer.map(layer_of).transpose()?,
            uses_left: u32::try_from(uses_left).unwrap_or(u32::MAX),
            expires_at,
        })
    }

    /// Is this Node-ID already assigned (revoked ones stay taken)?
    pub fn id_taken(&self, id: NodeId) -> Result<bool, StoreError> {
        let key = id.to_string();
        match &self.0 {
            TxInner::Sqlite(tx) => Ok(tx
                .query_row("SELECT 1 FROM nodes WHERE node_id = ?1", [key], |_| Ok(()))
                .optional()?
                .is_some()),
            TxInner::Postgres(tx) => Ok(tx
                .borrow_mut()
                .query_opt("SELECT 1 FROM nodes WHERE node_id = $1", &[&key])?
                .is_some()),
        }
    }

    /// Record a newly enrolled node.
    pub fn insert_node(&self, n: &NodeRow, now: i64) -> Result<(), StoreError> {
        let id = n.node_id.to_string();
        let (lat, lon) = (n.location.map(|l| l.0), n.location.map(|l| l.1));
        match &self.0 {
            TxInner::Sqlite(tx) => {
                tx.execute(
                    "INSERT INTO nodes(node_id, layer, role, spki_sha256, listen, lat, lon, source, enrolled_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        id,
                        n.layer.get(),
                        n.role.as_str(),
                        n.spki_sha256,
                        n.listen,
                        lat,
                        lon,
                        n.source,
                        now
                    ],
                )?;
            }
            TxInner::Postgres(tx) => {
                tx.borrow_mut().execute(
                    "INSERT INTO nodes(node_id, layer, role, spki_sha256, listen, lat, lon, source, enrolled_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        &id,
                        &i64::from(n.layer.get()),
                        &n.role.as_str(),
                        &n.spki_sha256,
                        &n.listen,
                        &lat,
                        &lon,
                        &n.source,
                        &now,
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Record an issued certificate.
    pub fn insert_cert(&self, c: &CertRow, now: i64) -> Result<(), StoreError> {
        let id = c.node_id.to_string();
        match &self.0 {
            TxInner::Sqlite(tx) => {
                tx.execute(
                    "INSERT INTO certs(serial, node_id, not_before, not_after, der, issued_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![c.serial, id, c.not_before, c.not_after, c.der, now],
                )?;
            }
            TxInner::Postgres(tx) => {
                tx.borrow_mut().execute(
                    "INSERT INTO certs(serial, node_id, not_before, not_after, der, issued_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[&c.serial, &id, &c.not_before, &c.not_after, &c.der, &now],
                )?;
            }
        }
        Ok(())
    }

    /// Status of a certificate we issued (by hex serial), `None` if unknown.
    pub fn cert_status(&self, serial: &str) -> Result<Option<CertStatus>, StoreError> {
        const SQL: &str = "SELECT c.node_id, COALESCE(c.revoked_at, n.revoked_at)
             FROM certs c JOIN nodes n ON n.node_id = c.node_id WHERE c.serial = $1";
        let row: Option<(String, Option<i64>)> = match &self.0 {
            TxInner::Sqlite(tx) => tx
                .query_row(&SQL.replace("$1", "?1"), [serial], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?,
            TxInner::Postgres(tx) => tx
                .borrow_mut()
                .query_opt(SQL, &[&serial])?
                .map(|r| (r.get(0), r.get(1))),
        };
        row.map(|(id, revoked_at)| {
            Ok(CertStatus {
                node_id: id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("node id {id}")))?,
                revoked_at,
            })
        })
        .transpose()
    }

    /// Bootstrap peers for a new peer of `layer`: up to `same` non-revoked peers of that
    /// layer with an address (CSPG, then CSP, then newest first), then up to `other` CSPGs
    /// of each other layer. `exclude` is the new peer itself.
    pub fn bootstrap(
        &self,
        layer: Layer,
        exclude: NodeId,
        same: usize,
        other: usize,
    ) -> Result<Vec<BootstrapPeer>, StoreError> {
        const SQL: &str = "SELECT node_id, layer, role, listen FROM nodes
             WHERE revoked_at IS NULL AND listen IS NOT NULL AND node_id != $1
               AND ((layer = $2 AND $3::BIGINT > 0) OR (layer != $2 AND role = 'cspg'))
             ORDER BY layer != $2, layer,
                      CASE role WHEN 'cspg' THEN 0 WHEN 'csp' THEN 1 ELSE 2 END,
                      enrolled_at DESC, node_id";
        let (exclude_key, layer_no, same_no) =
            (exclude.to_string(), i64::from(layer.get()), same as i64);
        let rows: Vec<BootstrapRow> = match &self.0 {
            TxInner::Sqlite(tx) => {
                let sql = SQL
                    .replace("$1", "?1")
                    .replace("$2", "?2")
                    .replace("$3::BIGINT", "?3");
                let mut st = tx.prepare_cached(&sql)?;
                st.query_map(params![exclude_key, layer_no, same_no], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<Result<_, _>>()?
            }
            TxInner::Postgres(tx) => tx
                .borrow_mut()
                .query(SQL, &[&exclude_key, &layer_no, &same_no])?
                .into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
        };
        let mut out = Vec::new();
        let mut per_layer = [0usize; 3];
        for (id, l, role, addr) in rows {
            let l = layer_of(l)?;
            let cap = if l == layer { same } else { other };
            if per_layer[l.index()] >= cap {
                continue;
            }
            let (Ok(node_id), Ok(addr)) = (id.parse(), addr.parse()) else {
                return Err(StoreError::Corrupt(format!("node {id} at {addr}")));
            };
            per_layer[l.index()] += 1;
            out.push(BootstrapPeer {
                node_id,
                layer: l,
                role: role_of(role)?,
                addr,
            });
        }
        Ok(out)
    }

    /// Commit.
    pub fn commit(self) -> Result<(), StoreError> {
        match self.0 {
            TxInner::Sqlite(tx) => Ok(tx.commit()?),
            TxInner::Postgres(tx) => Ok(tx.into_inner().commit()?),
        }
    }
}

/// Why a token that exists cannot be used now.
fn check_token(uses_left: i64, expires_at: i64, now: i64) -> Result<(), StoreError> {
    if expires_at <= now {
        return Err(StoreError::TokenExpired);
    }
    if uses_left <= 0 {
        return Err(StoreError::TokenUsedUp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("db")).unwrap();
        s.pin_meta("id_bits", "11").unwrap();
        assert!(s.pin_meta("id_bits", "128").is_err());
        s.add_token("h", Role::Csp, Some(Layer::THREE), 1, 100, 0)
            .unwrap();
        {
            let tx = s.begin().unwrap();
            assert!(matches!(
                tx.take_token("x", 1),
                Err(StoreError::TokenUnknown)
            ));
            assert!(matches!(
                tx.take_token("h", 100),
                Err(StoreError::TokenExpired)
            ));
            let t = tx.take_token("h", 1).unwrap();
            assert_eq!((t.role, t.layer), (Role::Csp, Some(Layer::THREE)));
            // Not committed: rolled back.
        }
        let tx = s.begin().unwrap();
        tx.take_token("h", 1).unwrap();
        assert!(matches!(
            tx.take_token("h", 1),
            Err(StoreError::TokenUsedUp)
        ));
        for (id, layer, role) in [
            (5, 1, "cspg"),
            (6, 1, "peer"),
            (1500, 3, "cspg"),
            (1501, 3, "peer"),
        ] {
            tx.insert_node(
                &NodeRow {
                    node_id: NodeId(id),
                    layer: Layer::new(layer).unwrap(),
                    role: role.parse().unwrap(),
                    spki_sha256: "00".into(),
                    listen: Some(format!("127.0.0.1:{}", 1000 + id)),
                    location: None,
                    source: "127.0.0.1".into(),
                },
                1,
            )
            .unwrap();
        }
        tx.insert_cert(
            &CertRow {
                serial: "0a0b".into(),
                node_id: NodeId(6),
                not_before: 0,
                not_after: 1000,
                der: vec![1],
            },
            1,
        )
        .unwrap();
        assert!(tx.id_taken(NodeId(5)).unwrap());
        assert!(!tx.id_taken(NodeId(7)).unwrap());
        let b = tx.bootstrap(Layer::ONE, NodeId(6), 8, 2).unwrap();
        let ids: Vec<u128> = b.iter().map(|p| p.node_id.0).collect();
        assert_eq!(ids, vec![5, 1500]);
        tx.commit().unwrap();
        assert_eq!(s.revoke_node(NodeId(6), 50).unwrap(), Some(1));
        assert_eq!(s.revoke_node(NodeId(99), 50).unwrap(), None);
        assert_eq!(s.revoked(10).unwrap(), vec![(vec![10, 11], 50)]);
        assert!(s.revoked(1000).unwrap().is_empty());
        let tx = s.begin().unwrap();
        assert_eq!(
            tx.cert_status("0a0b").unwrap().unwrap().revoked_at,
            Some(50)
        );
    }
}
