//! A live CSP keeps the longer successor list its configuration asks for: an in-process
//! E&A enrolls a CSP and five peers of layer 2, six `node::Node`s converge on mutual TLS
//! over loopback with successor lists of two, and the CSP, told to keep five, extends its
//! list until it names every other peer of its arc in ring order, while the ordinary peers
//! keep two. With the CSP's length left at the ordinary one it keeps two as well.
#![allow(clippy::unwrap_used)] // a failure is a test failure

mod common;

use common::Overlay;
use enroll::Role;
use node::Node;
use std::time::{Duration, Instant};

/// The successor IDs a node's status lists.
async fn successors(n: &Node) -> Vec<String> {
    let st = n.status().await.unwrap();
    st["successors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect()
}

/// The ring order after `me` among `nodes`' IDs.
fn ring_after(nodes: &[Node], me: u128) -> Vec<String> {
    let mut ids: Vec<u128> = nodes.iter().map(|n| n.info().id.0).collect();
    ids.sort_unstable();
    let pos = ids.iter().position(|i| *i == me).unwrap();
    (1..ids.len())
        .map(|k| ids[(pos + k) % ids.len()].to_string())
        .collect()
}

async fn run(csp_successors: usize) -> (Vec<String>, Vec<String>, Vec<usize>) {
    let overlay = Overlay::enroll(5).await;
    let nodes = overlay
        .start(|_, c| {
            c.chord.successors = 2;
            c.chord.csp_successors = csp_successors;
        })
        .await;
    assert_eq!(nodes[0].info().role, Role::Csp);
    let want = ring_after(&nodes, nodes[0].info().id.0);
    let t0 = Instant::now();
    let mut got = successors(&nodes[0]).await;
    while got != want && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = successors(&nodes[0]).await;
    }
    let mut others = Vec::new();
    for n in &nodes[1..] {
        others.push(successors(n).await.len());
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
    overlay.close().await;
    (got, want, others)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_csp_extends_its_successor_list_where_configured() {
    let (got, want, others) = run(5).await;
    assert_eq!(
        got, want,
        "the CSP's list names its whole arc in ring order"
    );
    assert_eq!(
        others,
        vec![2; 5],
        "ordinary peers keep the ordinary length"
    );

    let (got, want, _) = run(2).await;
    assert_eq!(
        got,
        want[..2],
        "without the longer length the CSP keeps two"
    );
}
