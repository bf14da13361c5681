//! SQLite store (WAL, `synchronous = FULL`): tokens (hashed), enrolled nodes, every issued
//! certificate, revocations, and the overlay parameters fixed at first start.
//!
//! Enrollment runs in one `BEGIN IMMEDIATE` transaction: take the token, pick a free ID,
//! record node and certificate, commit — and only then answer. Any error drops the
//! transaction, so a refused request writes nothing.

use crate::api::BootstrapPeer;
use crate::layer::{Layer, Role};
use overlay::NodeId;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use service::sqlite::{self, Durability, OpenOptions, Schema, Unversioned};
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
    conn: Connection,
}

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
        Ok(Self { conn })
    }

    /// Record `value` for `key` on first use; afterwards it must match.
    pub fn pin_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES (?1, ?2)",
            params![key, value],
        )?;
        let stored: String =
            self.conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))?;
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
        self.conn.execute(
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
        Ok(())
    }

    /// Begin a write transaction (takes the write lock now).
    pub fn begin(&mut self) -> Result<Tx<'_>, StoreError> {
        Ok(Tx(self.conn.transaction_with_behavior(
            TransactionBehavior::Immediate,
        )?))
    }

    /// Revoke a node and all its certificates; returns how many certificates were newly
    /// revoked, or `None` when the node is unknown.
    pub fn revoke_node(&mut self, id: NodeId, now: i64) -> Result<Option<usize>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let key = id.to_string();
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

    /// Revoked certificates still within validity at `now`: (serial bytes, revoked at).
    pub fn revoked(&self, now: i64) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT serial, revoked_at FROM certs WHERE revoked_at IS NOT NULL
             AND not_after > ?1 ORDER BY serial",
        )?;
        let rows = st.query_map([now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (serial, at) = row?;
            out.push((unhex(&serial)?, at));
        }
        Ok(out)
    }

    /// Number of revocation events so far (changes whenever the CRL must change).
    pub fn revocation_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM certs WHERE revoked_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?)
    }

    /// The directory E&A publishes: for each node that is not revoked, its newest valid
    /// certificate (DER) and advertised address; CSPGs first, then CSPs, then peers (by
    /// Node-ID), at most `max` nodes.
    pub fn directory(&self, now: i64, max: usize) -> Result<Vec<DirectoryRow>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT n.node_id, n.listen, c.der FROM nodes n JOIN certs c ON c.node_id = n.node_id
             WHERE n.revoked_at IS NULL AND c.revoked_at IS NULL AND c.not_after > ?1
             ORDER BY CASE n.role WHEN 'cspg' THEN 0 WHEN 'csp' THEN 1 ELSE 2 END,
                      n.node_id, c.not_after DESC",
        )?;
        let rows = st.query_map([now], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out: Vec<DirectoryRow> = Vec::new();
        for row in rows {
            let (id, listen, der) = row?;
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

    /// Number of certificates ever issued.
    pub fn cert_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM certs", [], |r| r.get(0))?)
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
pub struct Tx<'a>(rusqlite::Transaction<'a>);

impl Tx<'_> {
    /// Check a token and use it up once.
    pub fn take_token(&self, hash: &str, now: i64) -> Result<TokenRow, StoreError> {
        let row = self
            .0
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
        let (role, layer, uses_left, expires_at) = row.ok_or(StoreError::TokenUnknown)?;
        if expires_at <= now {
            return Err(StoreError::TokenExpired);
        }
        if uses_left <= 0 {
            return Err(StoreError::TokenUsedUp);
        }
        self.0.execute(
            "UPDATE tokens SET uses_left = uses_left - 1 WHERE hash = ?1",
            [hash],
        )?;
        Ok(TokenRow {
            role: role_of(role)?,
            layer: layer.map(layer_of).transpose()?,
            uses_left: u32::try_from(uses_left).unwrap_or(u32::MAX),
            expires_at,
        })
    }

    /// Is this Node-ID already assigned (revoked ones stay taken)?
    pub fn id_taken(&self, id: NodeId) -> Result<bool, StoreError> {
        Ok(self
            .0
            .query_row(
                "SELECT 1 FROM nodes WHERE node_id = ?1",
                [id.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Record a newly enrolled node.
    pub fn insert_node(&self, n: &NodeRow, now: i64) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO nodes(node_id, layer, role, spki_sha256, listen, lat, lon, source, enrolled_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                n.node_id.to_string(),
                n.layer.get(),
                n.role.as_str(),
                n.spki_sha256,
                n.listen,
                n.location.map(|l| l.0),
                n.location.map(|l| l.1),
                n.source,
                now
            ],
        )?;
        Ok(())
    }

    /// Record an issued certificate.
    pub fn insert_cert(&self, c: &CertRow, now: i64) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO certs(serial, node_id, not_before, not_after, der, issued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                c.serial,
                c.node_id.to_string(),
                c.not_before,
                c.not_after,
                c.der,
                now
            ],
        )?;
        Ok(())
    }

    /// Status of a certificate we issued (by hex serial), `None` if unknown.
    pub fn cert_status(&self, serial: &str) -> Result<Option<CertStatus>, StoreError> {
        let row = self
            .0
            .query_row(
                "SELECT c.node_id, COALESCE(c.revoked_at, n.revoked_at)
                 FROM certs c JOIN nodes n ON n.node_id = c.node_id WHERE c.serial = ?1",
                [serial],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<i64>>(1)?)),
            )
            .optional()?;
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
        let mut st = self.0.prepare_cached(
            "SELECT node_id, layer, role, listen FROM nodes
             WHERE revoked_at IS NULL AND listen IS NOT NULL AND node_id != ?1
               AND ((layer = ?2 AND ?3 > 0) OR (layer != ?2 AND role = 'cspg'))
             ORDER BY layer != ?2, layer,
                      CASE role WHEN 'cspg' THEN 0 WHEN 'csp' THEN 1 ELSE 2 END,
                      enrolled_at DESC, node_id",
        )?;
        let rows = st.query_map(
            params![exclude.to_string(), layer.get(), same as i64],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )?;
        let mut out = Vec::new();
        let mut per_layer = [0usize; 3];
        for row in rows {
            let (id, l, role, addr) = row?;
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
        Ok(self.0.commit()?)
    }
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
