//! Opening a database: pragmas, integrity, permissions and migrations.

use super::Durability;
use rusqlite::{Connection, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a database is: its migrations, and what a file from before versioning means.
///
/// The version lives in a one-row `schema_version` table. Migration `i` (0-based) takes a
/// database from version `i` to `i + 1`; a fresh file runs them all, in one transaction.
/// Never edit a released migration; append a new one.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// What the database is called in errors and logs ("peer database", "SOS database").
    pub name: &'static str,
    /// The migrations, oldest first.
    pub migrations: &'static [&'static str],
    /// What a file with tables but no `schema_version` is.
    pub unversioned: Unversioned,
}

impl Schema {
    /// The version this build writes: the number of migrations.
    pub fn version(&self) -> i64 {
        i64::try_from(self.migrations.len()).unwrap_or(i64::MAX)
    }
}

/// What a file with tables but no `schema_version` table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unversioned {
    /// Someone else's database: refused ([`OpenError::Foreign`]), left untouched.
    Refuse,
    /// This service's own file from before it recorded versions: taken as version 0. Its
    /// first migration must therefore be idempotent (`CREATE … IF NOT EXISTS`).
    Adopt,
}

/// How to open a database. [`OpenOptions::default`] is the careful choice: FULL
/// durability, 5 s busy timeout, integrity check, owner-only file.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// When a commit counts as done.
    pub durability: Durability,
    /// How long to wait for a lock held by another connection.
    pub busy_timeout: Duration,
    /// Run `PRAGMA quick_check` when opening (cheap for a small file; catches truncation
    /// and overwritten pages before the service trusts the data).
    pub integrity_check: bool,
    /// Make the file readable and writable by its owner only (mode 0600 on Unix; SQLite
    /// creates the `-wal` and `-shm` files with the same mode).
    pub owner_only: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(5),
            integrity_check: true,
            owner_only: true,
        }
    }
}

/// Opening a database failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file is not a SQLite database or is damaged (truncated, overwritten, failed
    /// integrity check). [`open_or_reset`] can move it aside and start fresh.
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
    /// A valid SQLite file that is not this service's database (tables but no version).
    #[error("database {path} is not a p2psip {expected} (tables: {tables})")]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What it was expected to be ([`Schema::name`]).
        expected: &'static str,
        /// The tables found.
        tables: String,
    },
    /// SQLite would not put the database in WAL mode (the batching writer and concurrent
    /// readers depend on it).
    #[error("database {path} has journal_mode {mode}; WAL is required")]
    NotWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The directory or file could not be used (permissions, not a directory, …).
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

impl OpenError {
    /// A SQLite error met while opening `path`: [`OpenError::Corrupt`] when it says the
    /// file is damaged, [`OpenError::Sqlite`] otherwise.
    pub fn from_sqlite(path: &Path, e: rusqlite::Error) -> OpenError {
        if is_corruption(&e) {
            OpenError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        } else {
            OpenError::Sqlite {
                path: path.to_path_buf(),
                source: e,
            }
        }
    }
}

/// Does this SQLite error mean the file is damaged?
pub fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Open (creating if needed) the database at `path`: permissions, busy timeout, WAL, the
/// durability, the integrity check, then migrations up to `schema`'s version.
pub fn open(path: &Path, schema: &Schema, opts: &OpenOptions) -> Result<Connection, OpenError> {
    let err = |e: rusqlite::Error| OpenError::from_sqlite(path, e);
    let mut conn = Connection::open(path).map_err(err)?;
    if opts.owner_only {
        restrict_permissions(path)?;
    }
    conn.busy_timeout(opts.busy_timeout).map_err(err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", opts.durability.pragma())
        .map_err(err)?;
    if opts.integrity_check {
        let verdict: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(err)?;
        if verdict != "ok" {
            return Err(OpenError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("integrity check: {verdict}"),
            });
        }
    }
    migrate(&mut conn, path, schema)?;
    Ok(conn)
}

/// What [`open_or_reset`] opened.
#[derive(Debug)]
pub struct Opened<T> {
    /// The database (or whatever the opener built on it).
    pub db: T,
    /// Where a corrupt file was moved, if one was.
    pub moved_aside: Option<PathBuf>,
}

/// Run `open`; if it finds the file corrupt, [`move_aside`] the file and run `open` again
/// on a fresh one. A database from a newer schema, a foreign database and I/O errors are
/// still refused: they are not damage, and moving them would lose someone's data.
pub fn open_or_reset<T>(
    mut open: impl FnMut() -> Result<T, OpenError>,
) -> Result<Opened<T>, OpenError> {
    match open() {
        Ok(db) => Ok(Opened {
            db,
            moved_aside: None,
        }),
        Err(OpenError::Corrupt { path, reason }) => {
            let aside = move_aside(&path, &reason)?;
            Ok(Opened {
                db: open()?,
                moved_aside: Some(aside),
            })
        }
        Err(e) => Err(e),
    }
}

/// Move a damaged `path` (and its `-wal`/`-shm`) to `<path>.corrupt-<unix ms>`; logged at
/// `warn`. Returns the new path of the main file.
pub fn move_aside(path: &Path, reason: &str) -> Result<PathBuf, OpenError> {
    let stamp = crate::time::unix_ms();
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to).map_err(|source| OpenError::Io {
                path: from.clone(),
                source,
            })?;
        }
    }
    tracing::warn!(
        db = %path.display(),
        moved_to = %aside.display(),
        %reason,
        "database damaged; moved aside, starting with an empty one"
    );
    Ok(aside)
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        OpenError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> Result<(), OpenError> {
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path, schema: &Schema) -> Result<(), OpenError> {
    let err = |e: rusqlite::Error| OpenError::from_sqlite(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let has_version: bool = tx
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map_err(err)?
        > 0;
    if !has_version {
        if schema.unversioned == Unversioned::Refuse {
            let tables: Option<String> = tx
                .query_row(
                    "SELECT group_concat(name, ', ') FROM sqlite_master
                     WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                    [],
                    |r| r.get(0),
                )
                .map_err(err)?;
            if let Some(tables) = tables.filter(|t| !t.is_empty()) {
                return Err(OpenError::Foreign {
                    path: path.to_path_buf(),
                    expected: schema.name,
                    tables,
                });
            }
        }
        tx.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version (version) VALUES (0);",
        )
        .map_err(err)?;
    }
    let versions: Vec<i64> = {
        let mut stmt = tx
            .prepare("SELECT version FROM schema_version")
            .map_err(err)?;
        stmt.query_map([], |r| r.get(0))
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?
    };
    let [found] = versions[..] else {
        return Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("schema_version has {} rows, expected 1", versions.len()),
        });
    };
    let supported = schema.version();
    if found > supported {
        return Err(OpenError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported,
        });
    }
    let Ok(from) = usize::try_from(found) else {
        return Err(OpenError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("negative schema version {found}"),
        });
    };
    for (i, sql) in schema.migrations.iter().enumerate().skip(from) {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        tx.execute_batch(sql).map_err(err)?;
        tx.execute("UPDATE schema_version SET version = ?1", [version])
            .map_err(err)?;
        tracing::info!(db = %path.display(), version, "{} migrated", schema.name);
    }
    tx.commit().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &[&str] = &["CREATE TABLE IF NOT EXISTS a (x INTEGER);"];
    const V2: &[&str] = &[
        "CREATE TABLE IF NOT EXISTS a (x INTEGER);",
        "ALTER TABLE a ADD COLUMN y INTEGER;",
    ];

    fn schema(migrations: &'static [&'static str], unversioned: Unversioned) -> Schema {
        Schema {
            name: "test database",
            migrations,
            unversioned,
        }
    }

    fn version(c: &Connection) -> i64 {
        c.query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn migrations_run_once_in_order_and_newer_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let opts = OpenOptions::default();
        let c = open(&path, &schema(V1, Unversioned::Refuse), &opts).unwrap();
        assert_eq!(version(&c), 1);
        drop(c);
        let c = open(&path, &schema(V2, Unversioned::Refuse), &opts).unwrap();
        assert_eq!(version(&c), 2);
        c.execute("INSERT INTO a (x, y) VALUES (1, 2)", []).unwrap();
        drop(c);
        match open(&path, &schema(V1, Unversioned::Refuse), &opts) {
            Err(OpenError::NewerSchema {
                found: 2,
                supported: 1,
                ..
            }) => {}
            other => panic!("expected NewerSchema, got {other:?}"),
        }
    }

    #[test]
    fn an_unversioned_file_is_adopted_or_refused_as_the_schema_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (7);")
                .unwrap();
        }
        let opts = OpenOptions::default();
        match open(&path, &schema(V1, Unversioned::Refuse), &opts) {
            Err(OpenError::Foreign { tables, .. }) => assert_eq!(tables, "a"),
            other => panic!("expected Foreign, got {other:?}"),
        }
        let c = open(&path, &schema(V1, Unversioned::Adopt), &opts).unwrap();
        assert_eq!(version(&c), 1);
        let x: i64 = c.query_row("SELECT x FROM a", [], |r| r.get(0)).unwrap();
        assert_eq!(x, 7, "adoption keeps the rows");
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let s = schema(V1, Unversioned::Refuse);
        let opened = open_or_reset(|| open(&path, &s, &OpenOptions::default())).unwrap();
        let aside = opened.moved_aside.expect("moved aside");
        assert_eq!(std::fs::read(&aside).unwrap(), vec![0x5a; 8192]);
        assert_eq!(version(&opened.db), 1);
    }
}
