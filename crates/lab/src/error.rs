//! [`LabError`]: why an experiment could not run, or ran and did not show what it should.
//! Each variant says what failed in the operator's terms; the underlying error, where there
//! is one, is its [`source`](std::error::Error::source), so `{:#}` in the binary prints the
//! whole chain.

use overlay::NodeId;
use std::path::PathBuf;
use std::time::Duration;

/// Any error of the crates the experiments drive, kept as the source of a [`LabError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an experiment failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// An option is out of range, or options contradict each other.
    #[error("{0}")]
    Args(String),
    /// The paper's malicious-peer scenario did not come out as the paper prints it (plain
    /// Chord loses the INVITE at 1617, the secure overlay rings over 1600 → 1618, and only
    /// CSPs, CSPGs and the callee see the INVITE).
    #[error("the paper's scenario did not reproduce")]
    ScenarioNotReproduced,
    /// Something the run is built on could not be set up (the ID space, the layer arcs,
    /// the SOS key registry, a temporary directory).
    #[error("{what}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// A peer could not be enrolled or started (its key, certificate, signer, listener or
    /// SOS link).
    #[error("peer {id}: {what}")]
    Peer {
        /// The peer's Node-ID.
        id: NodeId,
        /// The step that failed.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// A running peer did not carry out a request (its runtime stopped, or it refused).
    #[error("{what}")]
    PeerRequest {
        /// What the peer was asked to do.
        what: String,
        /// The runtime's answer.
        #[source]
        source: net::NetError,
    },
    /// A service of the demo (E&A, SOS, STUN, a SIP front-end) could not start, or could
    /// not be set up once started.
    #[error("{what}")]
    Server {
        /// Which service, doing what.
        what: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// The layer rings did not converge in time.
    #[error("rings did not converge within {timeout:?}: {correct}/{peers} peers correct")]
    NotConverged {
        /// How long the run waited.
        timeout: Duration,
        /// Peers with their true successor and predecessor.
        correct: usize,
        /// Peers in all.
        peers: usize,
    },
    /// Too few live peers are left for calls.
    #[error("fewer than two peers {when} to call each other")]
    TooFewPeers {
        /// At which point of the run.
        when: &'static str,
    },
    /// Reading or writing a file or directory.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// With which file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The async runtime the demo's peers run on could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The discrete-event simulator refused the run (its parameters).
    #[error("the simulator refused the run")]
    Sim(#[source] BoxError),
    /// A demo report given to `eval` is missing, too large, not JSON, or has no setup delays.
    #[error("demo report {}: {reason}", path.display())]
    DemoReport {
        /// The report file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A scaling file given to `eval` (`scripts/scaling`) is missing, too large, not JSON,
    /// or has a row without its size or numbers.
    #[error("scaling file {}: {reason}", path.display())]
    ScalingFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A figure could not be drawn or encoded.
    #[error("drawing {figure}")]
    Figure {
        /// The figure's id (`fig3-…`).
        figure: String,
        /// What the plotting or PNG library said.
        #[source]
        source: BoxError,
    },
    /// A result could not be turned into JSON.
    #[error("{what} as JSON")]
    Json {
        /// Which result.
        what: &'static str,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A task of the run panicked or was cancelled.
    #[error("a task of the run ended abnormally")]
    Task(#[from] tokio::task::JoinError),
}

impl From<sim::RunError> for LabError {
    fn from(e: sim::RunError) -> Self {
        LabError::Sim(Box::new(e))
    }
}

impl From<sim::CallError> for LabError {
    fn from(e: sim::CallError) -> Self {
        LabError::Sim(Box::new(e))
    }
}

/// Constructors for `map_err`: `.map_err(LabError::server("starting the SOS"))?`.
impl LabError {
    /// A [`LabError::Setup`] for `what`.
    pub(crate) fn setup<E: Into<BoxError>>(what: impl Into<String>) -> impl FnOnce(E) -> LabError {
        let what = what.into();
        move |e| LabError::Setup {
            what,
            source: e.into(),
        }
    }

    /// A [`LabError::Server`] for `what`.
    pub(crate) fn server<E: Into<BoxError>>(what: impl Into<String>) -> impl FnOnce(E) -> LabError {
        let what = what.into();
        move |e| LabError::Server {
            what,
            source: e.into(),
        }
    }

    /// A [`LabError::Peer`]: peer `id` failed at `what`.
    pub(crate) fn peer<E: Into<BoxError>>(
        id: NodeId,
        what: &'static str,
    ) -> impl FnOnce(E) -> LabError {
        move |e| LabError::Peer {
            id,
            what,
            source: e.into(),
        }
    }

    /// A [`LabError::PeerRequest`] for `what`.
    pub(crate) fn request(what: impl Into<String>) -> impl FnOnce(net::NetError) -> LabError {
        let what = what.into();
        move |source| LabError::PeerRequest { what, source }
    }

    /// A [`LabError::Io`]: `what` with `path` failed.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> LabError {
        let path = path.into();
        move |source| LabError::Io { what, path, source }
    }

    /// `Err(LabError::Args(why()))` unless `ok`: an option check.
    pub(crate) fn check(ok: bool, why: impl FnOnce() -> String) -> Result<(), LabError> {
        if ok {
            Ok(())
        } else {
            Err(LabError::Args(why()))
        }
    }

    /// A [`LabError::Json`] for `what`.
    pub(crate) fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> LabError {
        move |source| LabError::Json { what, source }
    }
}
