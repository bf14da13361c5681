//! What can go wrong opening, reading and writing the peer's database.

use std::path::PathBuf;

/// Opening `peer.db` failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is not a SQLite database or is damaged (truncated, overwritten, failed
    /// integrity check). [`crate::Store::open_or_reset`] can move it aside and start fresh.
    #[error("database {path} is corrupt: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite or the integrity check said.
        reason: String,
    },
    /// The file was written by a newer p2psip (schema `found` > `supported`); it is left
    /// untouched rather than misread or downgraded.
    #[error(
        "database {path} has schema version {found}, this build supports up to {supported}; refusing to open it"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Latest version this build knows.
        supported: i64,
    },
    /// A valid SQLite file that is not a p2psip peer database (tables but no version).
    #[error("database {path} is not a p2psip peer database (tables: {tables})")]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// The tables found.
        tables: String,
    },
    /// The data directory or file could not be used (permissions, not a directory, …).
    #[error("cannot use database {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Any other SQLite failure while opening (locked past the busy timeout, …).
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
}

/// A read or write on an open database failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row does not decode (wrong blob length, unknown enum text, bad address): the file
    /// was damaged or edited by hand.
    #[error("bad row in table {table}: {reason}")]
    BadRow {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// SQLite found the file damaged while using it.
    #[error("database is corrupt: {0}")]
    Corrupt(rusqlite::Error),
    /// Any other SQLite failure (disk full, I/O error, busy past the timeout).
    #[error("database error: {0}")]
    Sqlite(rusqlite::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if is_corruption(&e) {
            StoreError::Corrupt(e)
        } else {
            StoreError::Sqlite(e)
        }
    }
}

/// Queuing an operation for the writer failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: the operation was dropped and counted
    /// ([`crate::WriterStats::dropped_full`]). The node's memory stays authoritative.
    #[error("store writer queue full; operation dropped")]
    Full,
    /// The writer thread is gone.
    #[error("store writer has stopped")]
    Closed,
}

/// A flush or the writer's shutdown reported a problem.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriterError {
    /// The writer thread is gone (it panicked or was closed).
    #[error("store writer has stopped")]
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
    #[error("cannot start the store writer thread: {0}")]
    Spawn(String),
}

/// Does this SQLite error mean the file is damaged?
pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}
