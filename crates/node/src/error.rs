//! Why a peer could not start, or why a request to a running peer failed. Each error names
//! what the peer was doing; the cause is its `source()`, so `{:#}` (anyhow) prints the
//! whole chain once.

use std::path::PathBuf;

/// A peer could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration cannot work (a local mistake; the message names what to change).
    #[error("{0}")]
    Config(String),
    /// The node directory is missing or unusable.
    #[error("loading the node directory {dir}")]
    NodeDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: net::ConfigError,
    },
    /// No CRL could be loaded and the policy requires one.
    #[error("{0} (pass --crl-policy allow-missing to start without revocation checks)")]
    Crl(net::CrlError),
    /// The peer's TLS runtime failed (binding, identity, stopped).
    #[error("{what}")]
    Net {
        /// What the peer was doing.
        what: &'static str,
        /// Why.
        source: net::NetError,
    },
    /// A file or socket operation failed.
    #[error("{what}")]
    Io {
        /// What the peer was doing, with the path or address.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The peer database could not be opened or written.
    #[error("{what}: {why}")]
    Store {
        /// What the peer was doing.
        what: String,
        /// Why (the store's own error).
        why: String,
    },
    /// The membership directory could not be read.
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    /// The SIP front-end could not be configured.
    #[error("SIP front-end: {0}")]
    Sip(String),
    /// The SOS could not be set up.
    #[error("SOS: {0}")]
    Sos(String),
}

impl NodeError {
    pub(crate) fn net(what: &'static str) -> impl FnOnce(net::NetError) -> NodeError {
        move |source| NodeError::Net { what, source }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
        let what = what.into();
        move |source| NodeError::Io { what, source }
    }
}

/// The membership directory could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The HTTP request failed or the server refused it.
    #[error("fetching the directory from {source_url}: {why}")]
    Fetch {
        /// The URL.
        source_url: String,
        /// Why.
        why: String,
    },
    /// The file could not be read.
    #[error("reading the directory file {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The directory is larger than a peer accepts.
    #[error("the directory at {at} is larger than {max} bytes")]
    TooLarge {
        /// URL or file.
        at: String,
        /// The most a peer accepts.
        max: usize,
    },
    /// The bytes are not a directory.
    #[error("parsing the directory from {source_name}")]
    Parse {
        /// URL or file.
        source_name: String,
        /// Why.
        source: serde_json::Error,
    },
    /// node.json's overlay parameters do not describe three layer arcs.
    #[error("node.json: {0}")]
    Arcs(String),
}

/// `error` and every cause under it, `: `-separated (for logs, which print one line).
pub(crate) use service::output::error_chain as chain;
