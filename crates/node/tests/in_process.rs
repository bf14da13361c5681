//! The peer library in one process, the way a program that embeds peers uses it: an
//! in-process E&A server enrolls a CSP and three peers of layer 2 into node directories,
//! four `node::Node`s start from them on mutual TLS over loopback and converge, and calls
//! placed through `Node::call` ring through the CSP and complete the whole SIP dialog of the
//! peers' own user agents; a call to a Node-ID nobody holds fails; every peer stops
//! gracefully and writes its database, and a restarted peer comes back warm from it.
#![allow(clippy::unwrap_used)] // a failure is a test failure

mod common;

use common::Overlay;
use enroll::Role;
use node::{CallRequest, Node};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_in_one_process_call_each_other_through_the_library() {
    let overlay = Overlay::enroll(3).await;
    let nodes = overlay.start(|_, _| {}).await;
    assert_eq!(nodes[0].info().role, Role::Csp);

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

    // What an operator's Prometheus scrapes from A: both calls, the SRD of the one that
    // rang, the failure by reason, the ring and the links; B is ready, and healthy.
    let http = service::http::client(Duration::from_secs(10)).unwrap();
    let get = |node: &Node, path: &str| {
        let url = format!("http://{}{path}", node.info().control.unwrap());
        let http = http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (code, text) = get(a, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    for line in [
        "p2psip_peer_calls_rang_total 1",
        "p2psip_peer_srd_seconds_count 1",
        "p2psip_peer_control_calls_completed_total 1",
        "p2psip_peer_control_calls_failed_total 1",
        "p2psip_peer_ring_active 1",
        "p2psip_peer_members 4",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("p2psip_peer_calls_failed_total{reason=")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("p2psip_peer_messages_received_total{kind=\"")),
        "{text}"
    );
    assert!(text.contains("p2psip_peer_net_dials_ok_total"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(get(b, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(get(b, "/healthz").await, (200, "ok\n".into()));

    // A peer cannot call itself; a bad callee is a bad request.
    let me = a.info().id.to_string();
    assert!(matches!(
        a.call(CallRequest { to: me, hold_ms: 0 }).await,
        Err(node::ApiError::BadRequest(_))
    ));

    for n in nodes {
        n.stop().await.unwrap();
    }
    for d in &overlay.dirs {
        assert!(d.join("peer.db").exists(), "{} has no peer.db", d.display());
        assert!(
            !d.join(node::CONTROL_FILE).exists(),
            "control.addr left behind"
        );
    }
    // A comes back warm from its peer.db: both calls it placed are in its history, and its
    // contact cache still knows how to reach B (the rest of the overlay is gone: its join
    // waits).
    let a_again = Node::start(common::config(&overlay.dirs[1])).await.unwrap();
    let st = a_again.status().await.unwrap();
    let warm = &st["store"]["warm_start"];
    assert!(warm["calls_in_history"].as_u64() >= Some(2), "{st}");
    assert!(warm["contacts"].as_u64() >= Some(1), "{st}");
    assert_eq!(warm["moved_aside"], serde_json::Value::Null, "{st}");
    a_again.stop().await.unwrap();
    overlay.close().await;
}
