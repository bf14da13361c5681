//! The one PostgreSQL shell: how a p2psip service that runs as several instances on a
//! shared database connects to it, migrates it and survives its restarts.
//!
//! - [`PgOptions`] is what `--db postgres://…` means: the connection URL (its `sslmode`
//!   decides TLS) and an optional CA file that turns on rustls (ring) for the connection.
//! - [`Session`] is one connection that reconnects: a call after the server restarted (or
//!   dropped the connection) opens a new one instead of failing forever.
//! - [`migrate`] applies a [`Migrations`] list under an advisory lock, so instances that
//!   start together migrate once; a database from a newer build is refused.
//! - [`is_transient`] and [`is_conflict`] sort errors into "retry later" (connection
//!   lost, server shutting down) and "retry now" (serialization failure, deadlock, unique
//!   violation between instances).
//!
//! The `postgres` client runs its own small tokio runtime and so must not be called on a
//! thread that is driving async tasks; [`off_runtime`] moves a call off such a thread.

use postgres::error::SqlState;
use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the database is and how to reach it.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user[:password]@host:port/dbname[?sslmode=require]`.
    pub url: String,
    /// PEM file of the CA that signed the server's certificate: the connection uses TLS
    /// (rustls, ring) with this root. Without it the connection is plain TCP, which suits
    /// a database on loopback or a private network.
    pub ca_file: Option<PathBuf>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &redact(&self.url))
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl PgOptions {
    /// Options for `url`, plain TCP, 5 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Is `s` a PostgreSQL URL (as opposed to a SQLite file path)?
    pub fn is_url(s: &str) -> bool {
        s.starts_with("postgres://") || s.starts_with("postgresql://")
    }

    /// Options for `s` if it is a PostgreSQL URL ([`Self::is_url`]), else `None` (a
    /// service's `--db` names either a URL or a SQLite file).
    pub fn from_url(s: &str) -> Option<Self> {
        Self::is_url(s).then(|| Self::new(s))
    }
}

/// The URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    let user = userinfo.split(':').next().unwrap_or("");
    format!("{scheme}://{user}@{host}")
}

/// Why talking to PostgreSQL failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse.
    #[error("bad PostgreSQL URL {url}: {reason}")]
    Url {
        /// The URL, password removed.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("PostgreSQL CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The server or the connection failed.
    #[error("PostgreSQL: {}", describe(.0))]
    Db(#[from] postgres::Error),
    /// The database was migrated by a newer build.
    #[error("{name} in PostgreSQL has schema version {found}; this build knows {supported}")]
    NewerSchema {
        /// What the database is.
        name: &'static str,
        /// Version found.
        found: i64,
        /// Newest version this build writes.
        supported: i64,
    },
}

/// A client error with the server's own message, which `Display` leaves out.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl PgError {
    /// Worth retrying after a pause (connection lost, server restarting)?
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Db(e) => is_transient(e),
            _ => false,
        }
    }
}

/// A database's migrations, oldest first; never edit a released one, append.
#[derive(Clone, Copy, Debug)]
pub struct Migrations {
    /// What the database is called in errors ("SOS database").
    pub name: &'static str,
    /// Advisory-lock key that serialises migrations of this database between instances.
    pub lock_key: i64,
    /// The migrations, oldest first.
    pub migrations: &'static [&'static str],
}

/// Run `f` where the `postgres` client may block: on this thread if it drives no async
/// tasks, else on a scoped thread of its own (the client runs its own runtime, which
/// tokio refuses to start inside another one).
pub fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    })
}

/// Open a connection (TLS if `opts.ca_file` is set).
pub fn connect(opts: &PgOptions) -> Result<Client, PgError> {
    let mut cfg: postgres::Config =
        opts.url
            .parse()
            .map_err(|e: postgres::Error| PgError::Url {
                url: redact(&opts.url),
                reason: e.to_string(),
            })?;
    cfg.connect_timeout(opts.connect_timeout);
    let client = off_runtime(|| match &opts.ca_file {
        None => cfg.connect(NoTls).map_err(PgError::from),
        Some(path) => {
            let tls = rustls_connector(path)?;
            cfg.connect(tls).map_err(PgError::from)
        }
    })?;
    Ok(client)
}

fn rustls_connector(path: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| PgError::Ca {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Bring the database to the newest schema: one transaction under an advisory lock, the
/// version in a one-row `schema_version_<lock_key>` table.
pub fn migrate(client: &mut Client, m: &Migrations) -> Result<(), PgError> {
    let table = format!("schema_version_{}", m.lock_key.unsigned_abs());
    let supported = i64::try_from(m.migrations.len()).unwrap_or(i64::MAX);
    off_runtime(|| {
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&m.lock_key])?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table}(one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
             version BIGINT NOT NULL)"
        ))?;
        let found: i64 = tx
            .query_opt(&format!("SELECT version FROM {table}"), &[])?
            .map(|r| r.get(0))
            .unwrap_or(0);
        if found > supported {
            return Err(PgError::NewerSchema {
                name: m.name,
                found,
                supported,
            });
        }
        for sql in m
            .migrations
            .iter()
            .skip(usize::try_from(found).unwrap_or(0))
        {
            tx.batch_execute(sql)?;
        }
        tx.execute(
            &format!(
                "INSERT INTO {table}(version) VALUES ($1)
                 ON CONFLICT (one) DO UPDATE SET version = excluded.version"
            ),
            &[&supported],
        )?;
        tx.commit()?;
        Ok(())
    })
}

/// The connection failed or the server is going away: retry after a pause, on a new
/// connection.
pub fn is_transient(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // I/O or protocol: the connection is gone
        Some(c) => {
            *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::CONNECTION_EXCEPTION
                || *c == SqlState::CONNECTION_FAILURE
                || *c == SqlState::CONNECTION_DOES_NOT_EXIST
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        }
    }
}

/// Another instance got there first (unique violation, serialization failure, deadlock):
/// the transaction rolled back and may be retried at once.
pub fn is_conflict(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// One connection that is reopened when it broke.
pub struct Session {
    opts: PgOptions,
    client: Option<Client>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("opts", &self.opts)
            .field("connected", &self.client.is_some())
            .finish()
    }
}

impl Session {
    /// Connect now (so a wrong URL fails at start) and migrate.
    pub fn open(opts: PgOptions, m: &Migrations) -> Result<Self, PgError> {
        let mut client = connect(&opts)?;
        migrate(&mut client, m)?;
        Ok(Self {
            opts,
            client: Some(client),
        })
    }

    /// The options it connects with.
    pub fn options(&self) -> &PgOptions {
        &self.opts
    }

    /// The connection, reopened first if the last one broke.
    pub fn client(&mut self) -> Result<&mut Client, PgError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.reset();
            let c = connect(&self.opts)?;
            tracing::info!(db = %redact(&self.opts.url), "reconnected to PostgreSQL");
            self.client = Some(c);
        }
        match self.client.as_mut() {
            Some(c) => Ok(c),
            None => Err(PgError::Url {
                url: redact(&self.opts.url),
                reason: "no connection".into(),
            }),
        }
    }

    /// Forget the connection after a transient error, so the next call reconnects.
    pub fn reset(&mut self) {
        // Closing blocks on the client's runtime: not on a thread that drives tasks.
        if let Some(c) = self.client.take() {
            off_runtime(move || drop(c));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("postgres://sos:secret@db:5432/sos"),
            "postgres://sos@db:5432/sos"
        );
        assert_eq!(redact("postgres://db/sos"), "postgres://db/sos");
        let opts = PgOptions::new("postgres://sos:secret@db/sos");
        assert!(!format!("{opts:?}").contains("secret"));
        assert!(PgOptions::is_url("postgresql://x/y") && !PgOptions::is_url("sos.db"));
    }

    #[test]
    fn a_malformed_url_is_refused_before_connecting() {
        let res = connect(&PgOptions::new("postgres://u@h:notaport/db"));
        assert!(matches!(res, Err(PgError::Url { .. })));
    }
}
