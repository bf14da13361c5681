//! What the E&A server tests share: serving an opened server on a loopback port.
#![allow(dead_code)]

use enroll::EnrollServer;
use enroll::client::EnrollClient;
use service::tls::Trust;

/// A served E&A: a client for it, its base URL, the trust that client uses, and the
/// sender that stops the server (dropping it stops the server too).
pub struct Served {
    pub client: EnrollClient,
    pub url: String,
    pub trust: Trust,
    pub stop: tokio::sync::oneshot::Sender<()>,
}

/// Serve `server` over HTTPS on a free loopback port until the returned `stop` fires.
pub async fn serve_loopback(server: EnrollServer) -> Served {
    let trust = Trust::ca_pem(server.ca_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Served {
        client: EnrollClient::new(&url, &trust).unwrap(),
        url,
        trust,
        stop,
    }
}
