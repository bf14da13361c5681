//! The Secure Opinion Server (SOS): opinions about peers, evidence reports, route ranking.
//!
//! In the paper the callee, having received a `PingRequest` over several routes, asks the
//! SOS which route is most trustworthy. This crate is that server (axum over SQLite) and
//! the typed client peers use to talk to it. The arithmetic is in the pure `trust` crate;
//! this crate adds storage, authentication of evidence, and HTTP.
//!
//! # API (JSON; peer IDs are decimal strings)
//!
//! | method and path | who | what |
//! |---|---|---|
//! | `POST /v1/routes/rank` | anyone | `{"routes":[["1593","1609","1618"],["1600","1618"]]}` → `{"ranked":[{"route","opinion","expectation"}…]}`, best first |
//! | `GET /v1/opinions/{peer}` | anyone | current opinion, its source (`admin`, `evidence`, `default`) and report counts |
//! | `PUT /v1/opinions/{peer}` | admin | `{"b":0.8,"d":0.1,"u":0.1,"a":0.25}`: override (the paper's "manually modified") |
//! | `DELETE /v1/opinions/{peer}` | admin | clear the override, back to evidence |
//! | `POST /v1/reports` | registered reporters | signed evidence ([`report`](crate::parse_report) format) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | anyone | liveness (JSON); ready (the store is reachable: it can commit and, on PostgreSQL, its last reload succeeded); OpenMetrics text (`p2psip_sos_*`) |
//!
//! Admin calls carry `Authorization: Bearer <token>`. Every error is a 4xx/5xx with an
//! [`ErrorBody`] `{"error":"code","message":"…"}` and leaves the database unchanged.
//!
//! # Durability
//!
//! SQLite in WAL mode, `synchronous=FULL` by default; a write is acknowledged only after
//! its transaction committed (writes are group-committed by one writer thread), so every
//! acknowledged report or opinion survives `kill -9` — and, with FULL, power loss.
//! `synchronous=NORMAL` is offered for disks where fsync is slow: it still survives a killed
//! process, but not a power cut.
//!
//! # Several instances
//!
//! With [`ServerConfig::postgres`] (`p2psip sos --db postgres://…`) the SOS keeps its
//! tables in PostgreSQL instead, and any number of instances share them: a report is
//! acknowledged after PostgreSQL committed it, evidence about a peer is updated under its
//! row lock (no instance loses another's report), the (reporter, nonce) index refuses a
//! replay at every instance, and a batch interrupted by a lost connection is retried so
//! that a report it had already stored is answered with its stored ID. Each instance ranks
//! from memory, reloaded from the database every [`ServerConfig::postgres_refresh`]
//! (default 500 ms): that is the bound on how stale one instance's view of another's
//! reports can be. Peers name the instances as a comma-separated URL list and fail over
//! ([`SosClient`]).
//!
//! # Bounds
//!
//! Request bodies (64 KiB), routes per rank request (64) and hops per route (32), requests
//! in flight (1024), the per-reporter rate-limit table (registered reporters only, capped),
//! the peer table, the writer queue (back-pressure), and the stored reports (pruned after
//! twice the timestamp window plus a minute) are all bounded.
#![warn(missing_docs, unreachable_pub)]

mod api;
mod client;
pub mod fixtures;
mod hex;
mod metrics;
mod peer;
mod report;
mod server;
mod store;
mod store_pg;
mod verify;

pub use api::{
    BatchItem, ErrorBody, Health, OpinionView, RankRequest, RankResponse, RankedRouteView,
    ReportAck, ReportCounts,
};
pub use client::{ClientError, SERVICE, SosClient};
pub use peer::{PeerId, PeerIdError, RouteError, parse_route};
pub use report::{
    MAX_BATCH, MAX_ROUTE_HOPS, MAX_SIGNATURE_BYTES, Outcome, ReportBody, ReportError, SignedBatch,
    SignedReport, decode_canonical, parse_batch, parse_report,
};
pub use server::{Clock, RunningServer, ServerConfig, ServerError, SystemClock, router, serve};
pub use store::{StoreError, Synchronous, count_reports};
pub use trust::OpinionSource;
pub use verify::{
    Algorithm, KeyRegistry, RegistryEntry, RegistryError, ReportSigner, ReporterVerifier,
    SignerError, VerifyError,
};

/// Encode bytes as lowercase hex (nonces, keys, signatures in the JSON API).
pub fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Decode hex; `None` if malformed.
pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    hex::decode(s)
}
