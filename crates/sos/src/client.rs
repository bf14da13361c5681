//! Typed async client for peers, CSPs and operators.
//!
//! Uses the services' HTTP client (`service::http::client`: reqwest with rustls, the ring
//! provider installed on first use).

use crate::api::{ErrorBody, Health, OpinionView, RankRequest, RankResponse, ReportAck};
use crate::{PeerId, SignedReport};
use reqwest::Method;
use service::http::{AnswerError, Api};
use std::time::Duration;
use trust::{Discounting, Opinion};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not build the HTTP client.
    #[error("cannot build HTTP client: {0}")]
    Build(String),
    /// Transport failure, timeout, or an unreadable answer.
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with an error status and body.
    #[error("server answered {status}: {} ({})", body.error, body.message)]
    Server {
        /// HTTP status.
        status: u16,
        /// The JSON error body.
        body: ErrorBody,
    },
}

impl From<AnswerError> for ClientError {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::Http(e) => ClientError::Http(e),
            AnswerError::Refused { status, body } => ClientError::Server { status, body },
        }
    }
}

impl ClientError {
    /// The server's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Server { body, .. } => Some(&body.error),
            _ => None,
        }
    }
}

/// A connection to one SOS.
#[derive(Debug, Clone)]
pub struct SosClient {
    api: Api,
    admin_token: Option<String>,
}

impl SosClient {
    /// Client for the server at `base_url` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let api = Api::new(base_url, Duration::from_secs(10))
            .map_err(|e| ClientError::Build(e.to_string()))?;
        Ok(Self {
            api,
            admin_token: None,
        })
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.api.base()
    }

    /// Use `token` for the admin calls.
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    fn admin(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        Ok(Api::call(self.api.request(Method::GET, "/healthz")).await?)
    }

    /// `GET /v1/opinions/{peer}`.
    pub async fn get_opinion(&self, peer: PeerId) -> Result<OpinionView, ClientError> {
        let path = format!("/v1/opinions/{peer}");
        Ok(Api::call(self.api.request(Method::GET, &path)).await?)
    }

    /// `PUT /v1/opinions/{peer}` (admin).
    pub async fn put_opinion(
        &self,
        peer: PeerId,
        opinion: Opinion,
    ) -> Result<OpinionView, ClientError> {
        let path = format!("/v1/opinions/{peer}");
        let rb = self.api.request(Method::PUT, &path).json(&opinion);
        Ok(Api::call(self.admin(rb)).await?)
    }

    /// `DELETE /v1/opinions/{peer}` (admin): back to evidence.
    pub async fn delete_opinion(&self, peer: PeerId) -> Result<OpinionView, ClientError> {
        let path = format!("/v1/opinions/{peer}");
        let rb = self.api.request(Method::DELETE, &path);
        Ok(Api::call(self.admin(rb)).await?)
    }

    /// `POST /v1/reports` with a report signed by [`crate::ReportSigner::sign`].
    pub async fn post_report(&self, report: &SignedReport) -> Result<ReportAck, ClientError> {
        let rb = self
            .api
            .request(Method::POST, "/v1/reports")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(report.to_json());
        Ok(Api::call(rb).await?)
    }

    /// `POST /v1/routes/rank` with the classic operator: best route first.
    pub async fn rank(&self, routes: Vec<Vec<PeerId>>) -> Result<RankResponse, ClientError> {
        self.rank_with(routes, Discounting::Classic).await
    }

    /// `POST /v1/routes/rank` with a chosen operator.
    pub async fn rank_with(
        &self,
        routes: Vec<Vec<PeerId>>,
        discounting: Discounting,
    ) -> Result<RankResponse, ClientError> {
        let rb = self
            .api
            .request(Method::POST, "/v1/routes/rank")
            .json(&RankRequest {
                routes,
                discounting,
            });
        Ok(Api::call(rb).await?)
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let bytes = Api::call_bytes(self.api.request(Method::GET, "/metrics")).await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
