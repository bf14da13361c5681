//! The schema and its migrations.
//!
//! `schema_version` holds one row. Migration `i` (0-based) takes a database from version
//! `i` to `i + 1`; a fresh file runs them all. A file with a higher version was written by
//! a newer build and is refused, never downgraded; a file with tables but no version is
//! not a peer database and is refused too (`service::sqlite` does both).

use service::sqlite::{Schema, Unversioned};

/// `peer.db` as the SQLite shell opens it.
pub(crate) const SCHEMA: Schema = Schema {
    name: "peer database",
    migrations: MIGRATIONS,
    unversioned: Unversioned::Refuse,
};

/// Migrations in order; never edit a released one, append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "
    CREATE TABLE identity (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        node_id BLOB NOT NULL,
        layer INTEGER NOT NULL,
        role TEXT NOT NULL,
        cert_fp BLOB NOT NULL,
        chain_fp BLOB NOT NULL
    );
    CREATE TABLE contacts (
        node_id BLOB PRIMARY KEY,
        addr TEXT,
        layer INTEGER NOT NULL,
        last_seen_ms INTEGER NOT NULL,
        ttl_ms INTEGER NOT NULL,
        lru INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX contacts_lru ON contacts (lru);
    CREATE TABLE records (
        key BLOB PRIMARY KEY,
        value BLOB NOT NULL,
        owner BLOB,
        signature BLOB,
        expires_ms INTEGER,
        size INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE pending (
        handle INTEGER PRIMARY KEY,
        call INTEGER NOT NULL,
        caller_id BLOB NOT NULL,
        caller_addr TEXT,
        callee BLOB NOT NULL,
        invite BLOB NOT NULL,
        deadline_ms INTEGER NOT NULL
    );
    CREATE TABLE calls (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        peer BLOB NOT NULL,
        started_ms INTEGER NOT NULL,
        setup_ms INTEGER,
        outcome TEXT NOT NULL
    );
    ",
];
