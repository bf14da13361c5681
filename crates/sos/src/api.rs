//! JSON request and response types shared by the server and the typed client.

use crate::PeerId;
use serde::{Deserialize, Serialize};
use trust::{Discounting, Opinion, OpinionSource};

/// How many reports about a peer were ever accepted (not aged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportCounts {
    /// Accepted `delivered` reports.
    pub positive: u64,
    /// Accepted negative reports (dropped, modified, misrouted, replayed).
    pub negative: u64,
}

/// Answer to `GET /v1/opinions/{peer}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpinionView {
    /// The peer asked about.
    pub peer: PeerId,
    /// Where the opinion came from.
    pub source: OpinionSource,
    /// The current opinion.
    pub opinion: Opinion,
    /// Its expectation E = b + a·u.
    pub expectation: f64,
    /// Raw counts of accepted reports about the peer.
    pub reports: ReportCounts,
}

/// Body of `POST /v1/routes/rank`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankRequest {
    /// Candidate routes, each a list of hops in path order.
    pub routes: Vec<Vec<PeerId>>,
    /// Discounting operator; classic unless asked otherwise.
    #[serde(default)]
    pub discounting: Discounting,
}

/// One route in a ranking answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedRouteView {
    /// The hops as submitted.
    pub route: Vec<PeerId>,
    /// The route's chained-discounting opinion.
    pub opinion: Opinion,
    /// Its expectation.
    pub expectation: f64,
}

/// Answer to `POST /v1/routes/rank`: best route first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankResponse {
    /// Routes, most trustworthy first.
    pub ranked: Vec<RankedRouteView>,
}

/// Answer to an accepted `POST /v1/reports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportAck {
    /// Row id of the stored report.
    pub id: i64,
    /// The subject whose evidence changed.
    pub subject: PeerId,
    /// Its report counts after this report.
    pub reports: ReportCounts,
}

/// One report's answer in a `POST /v1/reports/batch` response (in the order posted): the
/// status `POST /v1/reports` would have answered it with, and its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    /// HTTP status of this report alone (200 stored; 4xx refused; 503 try again).
    pub status: u16,
    /// The acknowledgement, when stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<ReportAck>,
    /// Why not, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Every 4xx/5xx answer carries this body (the one all p2psip services use).
pub use service::http::ErrorBody;

/// Answer to `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Peers with an admin opinion or evidence.
    pub peers: usize,
}
