#![allow(clippy::unwrap_used)]
//! Our client against our server on loopback: Binding, allocations, relay echo, REST
//! credentials, wrong credentials, quotas.

use service::time::unix_secs;
use std::time::Duration;

use nat::{
    BindingOptions, ClientError, CredentialStore, Credentials, Limits, ServerConfig, ServerHandle,
    StunServer, TurnClient, TurnOptions,
};
use tokio::net::UdpSocket;

mod support;

use support::{assert_rejected, echo_peer, recv_relayed, relay_echo};

const SECRET: &[u8] = b"shared-with-enrollment";

async fn server(limits: Limits) -> ServerHandle {
    let mut creds = CredentialStore::new();
    creds.add_user(Credentials::new("test", "test"));
    creds.set_rest_secret(SECRET.to_vec());
    let mut cfg = ServerConfig::loopback(creds);
    cfg.limits = limits;
    StunServer::bind(cfg).await.unwrap().spawn()
}

/// An allocation on `srv` as the server's test user.
async fn allocate(srv: &ServerHandle) -> TurnClient {
    TurnClient::allocate(srv.local_addr, Credentials::new("test", "test"), opts())
        .await
        .unwrap()
}

fn opts() -> TurnOptions {
    TurnOptions {
        timeout: Duration::from_secs(3),
        ..TurnOptions::default()
    }
}

/// Two real servers on loopback: no NAT, so both see the socket's own address; a server
/// that does not answer leaves one answer, which tells nothing.
#[tokio::test]
async fn loopback_has_an_independent_mapping() {
    let (s1, s2) = (
        server(Limits::default()).await,
        server(Limits::default()).await,
    );
    let quick = BindingOptions::quick(Duration::from_secs(2));
    let both = [s1.local_addr, s2.local_addr];
    assert_eq!(
        nat::mapping_behaviour(&both, &quick).await,
        nat::Mapping::Independent
    );
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let one = [s1.local_addr, dead.local_addr().unwrap()];
    assert_eq!(
        nat::mapping_behaviour(&one, &quick).await,
        nat::Mapping::Unknown
    );
}

#[tokio::test]
async fn binding_reports_reflexive_address() {
    let srv = server(Limits::default()).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mapped = nat::binding_request(
        &sock,
        srv.local_addr,
        &BindingOptions::quick(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    assert_eq!(mapped, sock.local_addr().unwrap());
    let (local, mapped) = nat::reflexive_address(srv.local_addr, &BindingOptions::default())
        .await
        .unwrap();
    assert_eq!(local, mapped);
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn binding_times_out_against_silence() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let t0 = std::time::Instant::now();
    let err = nat::binding_request(
        &sock,
        silent.local_addr().unwrap(),
        &BindingOptions::quick(Duration::from_millis(700)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(2));
    // It retransmitted: the silent socket saw more than one request.
    let mut buf = [0u8; 1500];
    let mut seen = 0;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(50), silent.recv_from(&mut buf)).await
    {
        seen += 1;
    }
    assert!(seen >= 3, "saw {seen} transmissions");
}

#[tokio::test]
async fn allocation_relays_both_ways_with_permission_and_channel() {
    let srv = server(Limits::default()).await;
    let peer = echo_peer().await;
    let mut turn = allocate(&srv).await;
    assert_eq!(turn.relayed_addr().ip(), srv.local_addr.ip());
    assert_eq!(turn.mapped_addr(), Some(turn.local_addr()));
    // Without a permission the client refuses to send.
    assert!(turn.send_to(b"x", peer).await.is_err());
    turn.create_permission(peer).await.unwrap();
    turn.send_to(b"via send indication", peer).await.unwrap();
    let (data, from) = recv_relayed(&mut turn).await;
    assert_eq!(data, b"via send indication");
    assert_eq!(from, peer);
    turn.bind_channel(peer).await.unwrap();
    relay_echo(&mut turn, peer, 50).await;
    turn.close().await;
    // The delete reached the server: the allocation is gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = srv.shutdown().await.unwrap();
    assert_eq!(stats.allocations_created, 1);
    assert_eq!(stats.allocations_closed, 1);
}

#[tokio::test]
async fn peer_without_permission_is_not_relayed() {
    let srv = server(Limits::default()).await;
    let mut turn = allocate(&srv).await;
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger
        .send_to(b"let me in", turn.relayed_addr())
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_millis(300), turn.recv_from()).await;
    assert!(
        r.is_err(),
        "datagram from a peer without permission was relayed"
    );
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn rest_credentials_work_and_expired_or_wrong_ones_do_not() {
    logs();
    let srv = server(Limits::default()).await;
    let good = Credentials::rest(SECRET, "1593", unix_secs(), 600);
    let turn = TurnClient::allocate(srv.local_addr, good, opts())
        .await
        .unwrap();
    turn.close().await;

    let expired = Credentials::rest(SECRET, "1593", unix_secs() - 1000, 60);
    let err = TurnClient::allocate(srv.local_addr, expired, opts())
        .await
        .unwrap_err();
    assert_rejected(&err, 401);

    let forged = Credentials::rest(b"not the secret", "1600", unix_secs(), 600);
    let err = TurnClient::allocate(srv.local_addr, forged, opts())
        .await
        .unwrap_err();
    assert_rejected(&err, 401);

    let wrong = Credentials::new("test", "nope");
    let err = TurnClient::allocate(srv.local_addr, wrong, opts())
        .await
        .unwrap_err();
    assert_rejected(&err, 401);
    srv.shutdown().await.unwrap();
}

#[tokio::test]
async fn per_user_quota_gives_486_and_total_limit_508() {
    let srv = server(Limits {
        max_allocations: 3,
        max_allocations_per_user: 2,
        ..Limits::default()
    })
    .await;
    let a = Credentials::rest(SECRET, "80", unix_secs(), 600);
    let t1 = TurnClient::allocate(srv.local_addr, a.clone(), opts())
        .await
        .unwrap();
    let _t2 = TurnClient::allocate(srv.local_addr, a.clone(), opts())
        .await
        .unwrap();
    let err = TurnClient::allocate(srv.local_addr, a.clone(), opts())
        .await
        .unwrap_err();
    assert_rejected(&err, 486);
    // Another user still fits, then the server is full.
    let b = Credentials::rest(SECRET, "1030", unix_secs(), 600);
    let _t3 = TurnClient::allocate(srv.local_addr, b.clone(), opts())
        .await
        .unwrap();
    let err = TurnClient::allocate(srv.local_addr, b, opts())
        .await
        .unwrap_err();
    assert_rejected(&err, 508);
    // Releasing one frees the quota slot.
    t1.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _t4 = TurnClient::allocate(srv.local_addr, a, opts())
        .await
        .unwrap();
    let stats = srv.shutdown().await.unwrap();
    assert_eq!(stats.quota_rejects, 1);
    assert_eq!(stats.capacity_rejects, 1);
}

#[tokio::test]
async fn permission_limit_gives_508() {
    let srv = server(Limits {
        max_permissions: 2,
        ..Limits::default()
    })
    .await;
    let turn = allocate(&srv).await;
    turn.create_permission("127.0.0.2:1".parse().unwrap())
        .await
        .unwrap();
    turn.create_permission("127.0.0.3:1".parse().unwrap())
        .await
        .unwrap();
    let err = turn
        .create_permission("127.0.0.4:1".parse().unwrap())
        .await
        .unwrap_err();
    assert_rejected(&err, 508);
    srv.shutdown().await.unwrap();
}

/// The value of the sample `series` (name and labels as written) in OpenMetrics `text`.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_bindings_allocations_relays_and_refusals() {
    let srv = server(Limits {
        max_permissions: 1,
        ..Limits::default()
    })
    .await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    nat::binding_request(
        &sock,
        srv.local_addr,
        &BindingOptions::quick(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let peer = echo_peer().await;
    let mut turn = allocate(&srv).await;
    turn.create_permission(peer).await.unwrap();
    let err = turn
        .create_permission("127.0.0.4:1".parse().unwrap())
        .await
        .unwrap_err();
    assert_rejected(&err, 508);
    turn.bind_channel(peer).await.unwrap();
    relay_echo(&mut turn, peer, 10).await;
    // A peer at another IP than the permitted one.
    let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    stranger.send_to(b"x", turn.relayed_addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snap = srv.monitor.snapshot(Duration::from_secs(2)).await.unwrap();
    assert_eq!(snap.active_allocations, 1);
    let text = nat::metrics::render(&snap, &srv.monitor.counters).unwrap();
    assert_eq!(sample(&text, "p2psip_stun_binding_requests_total"), 1);
    assert_eq!(sample(&text, "p2psip_stun_allocations_active"), 1);
    assert_eq!(sample(&text, "p2psip_stun_allocations_created_total"), 1);
    let to_peer = r#"p2psip_stun_relayed_packets_total{direction="to_peer"}"#;
    let to_client = r#"p2psip_stun_relayed_packets_total{direction="to_client"}"#;
    assert!(sample(&text, to_peer) >= 10, "{text}");
    assert!(sample(&text, to_client) >= 10, "{text}");
    let bytes = r#"p2psip_stun_relayed_bytes_total{direction="to_peer"}"#;
    assert!(sample(&text, bytes) >= sample(&text, to_peer), "{text}");
    let refused = |r: &str| {
        sample(
            &text,
            &format!(r#"p2psip_stun_refusals_total{{reason="{r}"}}"#),
        )
    };
    assert_eq!(refused("permissions_full"), 1);
    assert_eq!(refused("quota"), 0);
    assert_eq!(
        sample(
            &text,
            r#"p2psip_stun_peer_datagrams_dropped_total{reason="no_permission"}"#
        ),
        1
    );
    let monitor = srv.monitor.clone();
    srv.shutdown().await.unwrap();
    assert!(
        monitor.snapshot(Duration::from_secs(1)).await.is_none(),
        "a stopped server's loop does not answer"
    );
}

#[allow(dead_code)]
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[tokio::test]
async fn discover_reflexive_skips_a_dead_server_and_sees_no_nat_on_loopback() {
    let srv = server(Limits::default()).await;
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let opts = BindingOptions::quick(Duration::from_millis(400));
    let r = nat::discover_reflexive(&[silent.local_addr().unwrap(), srv.local_addr], &opts)
        .await
        .unwrap();
    assert_eq!(r.server, srv.local_addr);
    assert_eq!(r.local, r.reflexive);
    assert!(!r.behind_nat());
    let err = nat::discover_reflexive(&[silent.local_addr().unwrap()], &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(err, nat::ReachError::AllFailed { tried: 1, .. }),
        "{err}"
    );
    assert!(matches!(
        nat::discover_reflexive(&[], &opts).await,
        Err(nat::ReachError::NoServer)
    ));
    srv.shutdown().await.unwrap();
}
