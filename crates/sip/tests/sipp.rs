//! Real SIPp processes against real front-end listeners (UDP and TCP on loopback), two
//! front-ends joined by the in-process overlay: REGISTER / refresh / unregister, 404 for an
//! unknown AoR, 400 for a malformed request, and full SIPp UAC → front-end A → overlay →
//! front-end B → SIPp UAS calls (INVITE/180/200/ACK/BYE). Skips loudly without `sipp`.
#![allow(clippy::unwrap_used)]

use testkit::sipp::{have_sipp, run_ok, scenario, sipp_calls, sipp_cmd};

use overlay::NodeId;
use overlay::secure::{Ed25519Registry, Ed25519Signer};
use sip::driver::{self, DriverLimits, FrontEndTask};
use sip::{FrontEnd, FrontEndConfig, LoopbackNet};
use std::sync::Arc;

/// `n` front-ends joined by the in-process overlay, for SIPp to talk to; `None` (a loud skip)
/// without SIPp.
async fn frontends(n: usize) -> Option<Vec<FrontEndTask>> {
    if !have_sipp() {
        return None;
    }
    let mut keys = Ed25519Registry::default();
    let mut signers = Vec::new();
    for i in 0..n {
        let (s, _) = Ed25519Signer::generate().unwrap();
        keys.insert(NodeId(i as u128 + 1), s.public_key());
        signers.push(s);
    }
    let keys = Arc::new(keys);
    let net = LoopbackNet::new(keys.clone(), 0);
    let mut out = Vec::new();
    for (i, s) in signers.into_iter().enumerate() {
        let id = NodeId(i as u128 + 1);
        let k = keys.clone();
        let t = driver::start(
            "127.0.0.1:0".parse().unwrap(),
            DriverLimits::default(),
            move |local| {
                FrontEnd::new(
                    FrontEndConfig::new("p2psip.test", local),
                    id,
                    Box::new(s),
                    k,
                )
            },
            net.join(id),
        )
        .await
        .unwrap();
        out.push(t);
    }
    Some(out)
}

/// Stop every front-end gracefully.
async fn shutdown(fes: Vec<FrontEndTask>) {
    for f in fes {
        f.shutdown().await;
    }
}

async fn register_flow(transport: &str) {
    let Some(fes) = frontends(1).await else {
        return;
    };
    let a = fes[0].local;
    let c = sipp_cmd(
        transport,
        a,
        &[
            "-sf",
            &scenario("register.xml"),
            "-s",
            "alice",
            "-key",
            "contact_port",
            "5999",
            "-m",
            "3",
        ],
    );
    run_ok(c, "register/refresh/unregister").await;
    // Each call of the scenario: register, refresh, unregister = 3 stores accepted.
    assert_eq!(fes[0].stats().frontend.registered, 9);
    shutdown(fes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_register_refresh_unregister_udp_and_tcp() {
    register_flow("u1").await;
    register_flow("t1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_invite_unknown_aor_is_404_and_malformed_is_400() {
    let Some(fes) = frontends(1).await else {
        return;
    };
    let a = fes[0].local;
    for t in ["u1", "t1"] {
        run_ok(
            sipp_cmd(t, a, &["-sf", &scenario("invite-404.xml"), "-m", "2"]),
            "404",
        )
        .await;
        run_ok(
            sipp_cmd(t, a, &["-sf", &scenario("malformed.xml"), "-m", "2"]),
            "400",
        )
        .await;
    }
    let s = fes[0].stats().frontend;
    assert_eq!(s.not_found, 4, "{s:?}");
    assert_eq!(s.bad_requests, 4, "{s:?}");
    shutdown(fes).await;
}

async fn call_flow(transport: &str, calls: u32) {
    let Some(fes) = frontends(2).await else {
        return;
    };
    let (a, b) = (fes[0].local, fes[1].local);
    sipp_calls(transport, a, b, calls).await;
    let (sa, sb) = (fes[0].stats().frontend, fes[1].stats().frontend);
    assert_eq!(sa.calls_out, u64::from(calls), "{sa:?}");
    assert_eq!(sb.calls_in, u64::from(calls), "{sb:?}");
    shutdown(fes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_calls_sipp_uas_through_two_frontends_udp() {
    call_flow("u1", 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_uac_calls_sipp_uas_through_two_frontends_tcp() {
    call_flow("t1", 20).await;
}
