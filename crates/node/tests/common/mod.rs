//! One overlay of layer-2 peers in this process, as a program that embeds peers builds it:
//! an in-process E&A server enrolls a CSP and ordinary peers into node directories, and
//! `node::Node`s start from them on mutual TLS over loopback and converge.
#![allow(clippy::unwrap_used, dead_code)] // a failure is a test failure; not every test uses all

use enroll::{Capabilities, DataDir, EnrollRequest, EnrollServer, Layer, Role, ServerConfig};
use node::{Config, CrlPolicy, Node, SosChoice};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Enroll one node of `role` into `dir` (key, chain, CA, node.json), listening at `listen`.
pub fn enroll_into(server: &EnrollServer, url: &str, token: &str, dir: &Path, listen: SocketAddr) {
    let (key_pem, csr) = enroll::cert::new_key_and_csr().unwrap();
    let req = EnrollRequest {
        token: token.into(),
        csr,
        role: None,
        capabilities: Capabilities::default(),
        location: None,
        listen: Some(listen),
    };
    let resp = server.enroll(&req, listen.ip()).unwrap();
    enroll::write_node_dir(dir, &key_pem, &resp, url, Some(listen)).unwrap();
}

/// Quick Chord timers, as the process tests use.
pub fn config(dir: &Path) -> Config {
    let mut c = Config::new(dir);
    c.crl_policy = CrlPolicy::Require;
    c.sos = SosChoice::Off;
    c.chord.stabilize = Duration::from_millis(100);
    c.chord.fix_fingers = Duration::from_millis(100);
    c.chord.check_predecessor = Duration::from_millis(200);
    c.chord.ring_check = Duration::from_millis(1000);
    c.chord.lookup_timeout = Duration::from_millis(1500);
    c.secure.call_timeout = Duration::from_millis(2000);
    c
}

pub async fn converged(nodes: &[Node]) -> bool {
    let mut ids: Vec<u128> = nodes.iter().map(|n| n.info().id.0).collect();
    ids.sort_unstable();
    for n in nodes {
        let st = n.status().await.unwrap();
        let me = n.info().id.0;
        let pos = ids.iter().position(|i| *i == me).unwrap();
        let want = ids[(pos + 1) % ids.len()].to_string();
        if st["successors"][0]["id"] != want.as_str() || st["directory"]["csps"][1] != 1 {
            return false;
        }
    }
    true
}

/// A CSP and `peers` ordinary peers of layer 2, enrolled by an in-process E&A server.
pub struct Overlay {
    /// The CSP first, then the ordinary peers.
    pub dirs: Vec<PathBuf>,
    tmp: tempfile::TempDir,
    stop_ea: Option<tokio::sync::oneshot::Sender<()>>,
    ea: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Overlay {
    /// Enroll a CSP and `peers` peers (the E&A server keeps serving its directory and CRL).
    pub async fn enroll(peers: u32) -> Overlay {
        service::crypto::install_provider();
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("ea");
        let (csp_token, peer_token) = {
            let d = DataDir::open(&data).unwrap();
            let day = Duration::from_secs(86_400);
            (
                d.create_token(Role::Csp, Some(Layer::TWO), 1, day).unwrap(),
                d.create_token(Role::Peer, Some(Layer::TWO), peers, day)
                    .unwrap(),
            )
        };
        let ea_cfg = ServerConfig {
            id_bits: 16,
            ..ServerConfig::default()
        };
        let server = EnrollServer::open(&data, ea_cfg).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let (stop_ea, stopped) = tokio::sync::oneshot::channel::<()>();
        let ea = tokio::spawn(server.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        // The CSP first: the others get it as bootstrap, and the directory has its address.
        let mut dirs = Vec::new();
        for i in 0..=peers {
            let dir = tmp.path().join(format!("node{i}"));
            let token = if i == 0 { &csp_token } else { &peer_token };
            enroll_into(&server, &url, token, &dir, testkit::ports::free_addr());
            dirs.push(dir);
        }
        Overlay {
            dirs,
            tmp,
            stop_ea: Some(stop_ea),
            ea: Some(ea),
        }
    }

    /// Start a node from every directory with the test's Chord timers, adjusted by `adjust`
    /// (node index, its config), and wait until the ring converges.
    pub async fn start(&self, mut adjust: impl FnMut(usize, &mut Config)) -> Vec<Node> {
        let mut nodes = Vec::new();
        for (i, dir) in self.dirs.iter().enumerate() {
            let mut c = config(dir);
            c.create = i == 0;
            adjust(i, &mut c);
            nodes.push(Node::start(c).await.unwrap());
        }
        let t0 = Instant::now();
        while !converged(&nodes).await {
            assert!(t0.elapsed() < Duration::from_secs(20), "no convergence");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        nodes
    }

    /// Stop the E&A server.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop_ea.take() {
            let _ = stop.send(());
        }
        if let Some(ea) = self.ea.take() {
            ea.await.unwrap().unwrap();
        }
        drop(self.tmp);
    }
}
