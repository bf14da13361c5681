//! The one SQLite shell: how a p2psip service opens its database and writes to it.
//!
//! - [`open`] opens (creating if needed) a database file: WAL journal (refused if SQLite
//!   will not use it), an explicit [`Durability`], a busy timeout, an optional
//!   `PRAGMA quick_check`, optional owner-only permissions, then the [`Schema`]'s
//!   migrations. The schema version lives in a one-row `schema_version` table; a file from
//!   a newer build is refused ([`OpenError::NewerSchema`]), never downgraded.
//! - [`open_or_reset`] moves a damaged file (and its `-wal`/`-shm`) aside and starts fresh.
//! - [`Writer`] puts the connection on its own thread behind a bounded queue and commits
//!   operations in batches (one transaction, one fsync, per batch): the caller's loop or
//!   request handler never waits on disk except when it asks to ([`Writer::flush`]) or the
//!   queue is full ([`Writer::send`], [`Writer::submit_blocking`]).

mod open;
mod writer;

pub use open::{
    OpenError, OpenOptions, Opened, Schema, Unversioned, is_corruption, move_aside, open,
    open_or_reset,
};
pub use writer::{Apply, SubmitError, Writer, WriterConfig, WriterError, WriterStats};

/// When a commit counts as done: SQLite's `synchronous` setting for the WAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Durability {
    /// `synchronous=FULL`: the WAL is fsynced at every commit, so an acknowledged write
    /// survives `kill -9` *and* an OS crash or power loss. With batching the fsync is paid
    /// once per batch, not per operation. The default.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is fsynced only at checkpoints. An acknowledged write
    /// survives `kill -9` (it is in the kernel's page cache) but the last commits may be
    /// lost on power loss. For disks where fsync is slow.
    Normal,
}

impl Durability {
    /// The value of SQLite's `synchronous` pragma.
    pub fn pragma(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::Durability;

    /// Its name on the command line (`--sync full`) is the pragma's value in lower case.
    #[test]
    fn a_durability_is_named_after_its_pragma() {
        use clap::ValueEnum;
        for d in Durability::value_variants() {
            let name = d.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(name, Some(d.pragma().to_ascii_lowercase()));
        }
    }
}
