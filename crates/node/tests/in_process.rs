//! The peer library in one process, the way a program that embeds peers uses it: an
//! in-process E&A server enrolls a CSP and three peers of layer 2 into node directories,
//! four `node::Node`s start from them on mutual TLS over loopback and converge, and calls
//! placed through `Node::call` ring through the CSP and complete the whole SIP dialog of the
//! peers' own user agents; a call to a Node-ID nobody holds fails; every peer stops
//! gracefully and writes its database.
#![allow(clippy::unwrap_used)] // a failure is a test failure

use enroll::{Capabilities, DataDir, EnrollRequest, EnrollServer, Layer, Role, ServerConfig};
use node::{CallRequest, Config, CrlPolicy, Node, SosChoice};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released: the peer binds it again right away).
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Enroll one node of `role` into `dir` (key, chain, CA, node.json), listening at `listen`.
fn enroll_into(server: &EnrollServer, url: &str, token: &str, dir: &Path, listen: SocketAddr) {
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
fn config(dir: &Path) -> Config {
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

async fn converged(nodes: &[Node]) -> bool {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_in_one_process_call_each_other_through_the_library() {
    service::crypto::install_provider();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("ea");
    let (csp_token, peer_token) = {
        let d = DataDir::open(&data).unwrap();
        let day = Duration::from_secs(86_400);
        (
            d.create_token(Role::Csp, Some(Layer::TWO), 1, day).unwrap(),
            d.create_token(Role::Peer, Some(Layer::TWO), 3, day)
                .unwrap(),
        )
    };
    let ea_cfg = ServerConfig {
        id_bits: 16,
        ..ServerConfig::default()
    };
    let server = EnrollServer::open(&data, ea_cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop_ea, stopped) = tokio::sync::oneshot::channel::<()>();
    let ea = tokio::spawn(server.clone().serve(listener, async move {
        let _ = stopped.await;
    }));

    // The CSP first: the others get it as bootstrap, and the directory has its address.
    let mut dirs = Vec::new();
    for (i, name) in ["csp", "a", "b", "c"].iter().enumerate() {
        let dir = tmp.path().join(name);
        let token = if i == 0 { &csp_token } else { &peer_token };
        enroll_into(&server, &url, token, &dir, free_port());
        dirs.push(dir);
    }
    let mut nodes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut c = config(dir);
        c.create = i == 0;
        nodes.push(Node::start(c).await.unwrap());
    }
    assert_eq!(nodes[0].info().role, Role::Csp);
    let t0 = Instant::now();
    while !converged(&nodes).await {
        assert!(t0.elapsed() < Duration::from_secs(20), "no convergence");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A → B through the CSP: the whole dialog of the two peers' own user agents.
    let (a, b) = (&nodes[1], &nodes[2]);
    let report = a
        .call(CallRequest {
            to: b.info().id.to_string(),
            hold_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(report.result, "completed", "{report:?}");
    assert_eq!(
        report.route.last().map(String::as_str),
        Some(b.info().id.to_string().as_str())
    );
    assert!(report.srd_ms.is_some_and(|s| s > 0.0), "{report:?}");
    testkit::assert_completed_call_sip(&report.sip);
    // The callee's history takes the call's end from its event loop, just after its 200 OK
    // to the BYE left: give it a moment.
    let t0 = Instant::now();
    let sb = loop {
        let sb = b.status().await.unwrap();
        if sb["calls"]["recent"][0]["result"] == "ended" || t0.elapsed() > Duration::from_secs(2) {
            break sb;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(sb["calls"]["answered"], 1, "{sb}");
    assert_eq!(sb["calls"]["recent"][0]["result"], "ended", "{sb}");
    assert_eq!(sb["dialogs"], 0, "the callee forgot the call: {sb}");

    // Nobody holds this Node-ID: the call fails, and says so.
    let report = a
        .call(CallRequest {
            to: "12345".into(),
            hold_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(report.result, "failed", "{report:?}");

    // A peer cannot call itself; a bad callee is a bad request.
    let me = a.info().id.to_string();
    assert!(matches!(
        a.call(CallRequest { to: me, hold_ms: 0 }).await,
        Err(node::ApiError::BadRequest(_))
    ));

    for n in nodes {
        n.stop().await.unwrap();
    }
    for d in &dirs {
        assert!(d.join("peer.db").exists(), "{} has no peer.db", d.display());
        assert!(
            !d.join(node::CONTROL_FILE).exists(),
            "control.addr left behind"
        );
    }
    let _ = stop_ea.send(());
    ea.await.unwrap().unwrap();
}
