//! The plumbing every p2psip service shares, in one copy.
//!
//! The peer, the E&A server and the SOS each keep state in SQLite, the servers speak HTTP,
//! every process that makes an HTTPS request needs rustls' crypto provider, and they all
//! stamp wall-clock times and share state behind locks. Each of those used to be written
//! out per crate; this crate holds the one version of each:
//!
//! - [`sqlite`] (feature `sqlite`): open a database (WAL, an explicit [`sqlite::Durability`],
//!   busy timeout, optional integrity check, ordered migrations with a version check) and
//!   the [`sqlite::Writer`] thread that commits batches of operations.
//! - [`postgres`] (feature `postgres`): the same for services that run as several
//!   instances on one PostgreSQL database (connect with optional TLS, reconnect, migrate).
//! - [`http`] (feature `http`): [`http::serve`] for an axum router and [`http::client`] for
//!   a reqwest client.
//! - [`tls`] (feature `http`): HTTPS for the service APIs, the server's rustls
//!   configuration and TLS listener ([`http::serve_with`]) and the clients' trust in the
//!   E&A CA ([`http::client_trusting`]).
//! - [`monitor`] (feature `monitor`): `/metrics`, `/healthz` and `/readyz` through one
//!   [`monitor::Probe`] per service, and HTTP request counts and durations by route.
//! - [`crypto::install_provider`]: the one place rustls' ring provider is installed.
//! - [`time`]: Unix wall-clock readings.
//! - [`sync`]: locks that survive a panicked holder.
//! - [`output::say`]: the one writer of operator-facing lines, which survives a closed
//!   stdout.
//! - [`metrics`]: one way to write a service's Prometheus scrape.
//! - [`notify`]: readiness and stopping for the service manager (systemd `Type=notify`).
//!
//! Sans-IO crates (overlay, trust, sim, the sip core) do not depend on this crate: it
//! brings threads, sockets and clocks.
#![warn(missing_docs, unreachable_pub)]

pub mod crypto;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "monitor")]
pub mod monitor;
pub mod notify;
pub mod output;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod sync;
pub mod time;
#[cfg(feature = "http")]
pub mod tls;
