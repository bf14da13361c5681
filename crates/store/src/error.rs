//! What can go wrong opening, reading and writing the peer's database.
//!
//! Opening and the writer thread fail the way every service database does
//! ([`OpenError`], [`SubmitError`], [`WriterError`] from `service::sqlite`); reading and
//! applying fail in ways of their own ([`StoreError`]).

use service::sqlite::is_corruption;
pub use service::sqlite::{OpenError, SubmitError, WriterError};

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
