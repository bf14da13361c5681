//! A node directory as `p2psip enroll --out DIR` writes it.

use crate::tls::{ConfigError, Identity, RevocationPolicy, Trust, read};
use enroll::NodeConfig;
use std::path::{Path, PathBuf};

/// Identity, trust anchor and overlay parameters loaded from a node directory.
#[derive(Clone, Debug)]
pub struct NodeDir {
    /// The directory.
    pub dir: PathBuf,
    /// `node.json`.
    pub config: NodeConfig,
    /// Key and chain.
    pub identity: Identity,
    /// CA (and an empty CRL store).
    pub trust: Trust,
}

impl NodeDir {
    /// Load `node.json`, the key, the chain and the CA; check that the certificate binds the
    /// Node-ID that `node.json` names.
    pub fn load(dir: &Path, policy: RevocationPolicy) -> Result<Self, ConfigError> {
        let node_file = dir.join(enroll::client::NODE_FILE);
        let config: NodeConfig = serde_json_from(&read(&node_file)?)
            .map_err(|e| ConfigError::NodeConfig(format!("{}: {e}", node_file.display())))?;
        let identity = Identity::load(&dir.join(&config.chain_file), &dir.join(&config.key_file))?;
        if identity.node_id != config.node_id {
            return Err(ConfigError::NodeConfig(format!(
                "node.json says node {} but the certificate binds {}",
                config.node_id, identity.node_id
            )));
        }
        let trust = Trust::load(&dir.join(&config.ca_file), policy)?;
        Ok(NodeDir {
            dir: dir.to_path_buf(),
            config,
            identity,
            trust,
        })
    }

    /// An enrollment held in memory (a program that enrolled its peers itself): the
    /// certificate's identity, the trust anchor and the overlay's parameters, with no
    /// bootstrap peers, servers or files named.
    pub fn in_memory(
        identity: Identity,
        trust: Trust,
        overlay: enroll::api::OverlayParams,
    ) -> Self {
        let b = &identity.binding;
        let config = NodeConfig {
            node_id: identity.node_id,
            layer: b.layer,
            role: b.role,
            overlay,
            bootstrap: Vec::new(),
            services: enroll::ServiceUrls::default(),
            listen: None,
            enroll_server: String::new(),
            crl_url: String::new(),
            key_file: String::new(),
            chain_file: String::new(),
            ca_file: String::new(),
            not_after: b.not_after,
        };
        NodeDir {
            dir: PathBuf::new(),
            config,
            identity,
            trust,
        }
    }
}

fn serde_json_from(s: &str) -> Result<NodeConfig, String> {
    serde_json::from_str(s).map_err(|e| e.to_string())
}
