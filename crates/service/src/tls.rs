//! HTTPS for the service APIs (E&A, SOS): the server side's rustls configuration and
//! TLS listener, and the client side's trust (the E&A CA, or its pinned fingerprint).
//!
//! The overlay is mutual TLS; the services' HTTP APIs carry enrollment tokens, reports and
//! route rankings, so they get TLS too. Both ends use rustls with the ring provider
//! ([`crate::crypto::install_provider`]). A server presents a chain the E&A CA issued
//! (end entity first, the CA last); a client trusts that CA only: from the `ca.pem` of
//! its node directory ([`Trust::Ca`]), or, on first contact before it has the CA, from the
//! SHA-256 fingerprint the operator gave it ([`Trust::Pinned`]). The host name of the
//! URL is checked against the certificate's names either way.

use rustls::client::danger::{ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// URI prefix of the subjectAltName that names the service a server certificate is for
/// (`p2psip:service/enroll`, `p2psip:service/sos`); clients of one service refuse a
/// certificate made for another ([`Trust::client_config_for`]).
pub const SERVICE_SAN_PREFIX: &str = "p2psip:service/";

/// Handshakes a TLS listener runs at once; more connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 256;
/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the HTTP server to take them.
const READY_QUEUE: usize = 64;

/// Why TLS material is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// PEM without the expected contents.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA fingerprint that is not 64 hex digits.
    #[error("CA fingerprint {0:?}: expected 64 hex digits (SHA-256)")]
    Fingerprint(String),
}

/// Certificates from PEM text, in order; at least one.
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!("{what}: no certificate")));
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::Io(path.display().to_string(), e))
}

/// The rustls server configuration (ring, TLS 1.3 and 1.2, HTTP/1.1) presenting `chain_pem`
/// (end entity first) with the PKCS#8 key `key_pem`.
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    crate::crypto::install_provider();
    let chain = certs_from_pem(chain_pem, "server certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Pem(format!("server key: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// [`server_config`] from a chain file and a key file.
pub fn server_config_from_files(
    chain: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config(&read(chain)?, &read(key)?)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a rustls certificate verifier checks handshake signatures with. A verifier that
/// implements it gets the three handshake-signature methods both rustls verifier traits
/// require from [`handshake_signature_checks!`](crate::handshake_signature_checks).
pub trait SignatureAlgorithms {
    /// The algorithms handshake signatures are checked with: by default those of the ring
    /// provider every TLS configuration here uses.
    fn signature_algorithms(&self) -> WebPkiSupportedAlgorithms {
        provider().signature_verification_algorithms
    }
}

/// The handshake-signature half of a certificate verifier, the same for server and client
/// verifiers and for every verifier in the project: checked with the type's
/// [`SignatureAlgorithms`]. Used inside `impl ServerCertVerifier` / `impl
/// ClientCertVerifier` blocks (the caller depends on rustls).
#[macro_export]
macro_rules! handshake_signature_checks {
    () => {
        // TLS 1.2 and 1.3 checks differ only in rustls's function, named as the method.
        $crate::handshake_signature_checks!(@verify verify_tls12_signature, verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            $crate::tls::SignatureAlgorithms::signature_algorithms(self).supported_schemes()
        }
    };
    (@verify $($method:ident),*) => {
        $(
            fn $method(
                &self,
                message: &[u8],
                cert: &rustls::pki_types::CertificateDer<'_>,
                dss: &rustls::DigitallySignedStruct,
            ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
                let algs = $crate::tls::SignatureAlgorithms::signature_algorithms(self);
                rustls::crypto::$method(message, cert, dss, &algs)
            }
        )*
    };
}

/// The server certificate a TLS client is shown, as rustls hands it to
/// `ServerCertVerifier::verify_server_cert`, bundled for [`CheckServerCert`].
#[derive(Clone, Copy, Debug)]
pub struct ServerCert<'a> {
    /// The server's own certificate.
    pub end_entity: &'a CertificateDer<'a>,
    /// The rest of the chain it sent.
    pub intermediates: &'a [CertificateDer<'a>],
    /// The name the client dialled.
    pub server_name: &'a ServerName<'a>,
    /// A stapled OCSP response (empty when none).
    pub ocsp_response: &'a [u8],
    /// The time to check validity at.
    pub now: UnixTime,
}

impl ServerCert<'_> {
    /// Hand the certificate to another verifier.
    pub fn verify_with(
        self,
        v: &dyn ServerCertVerifier,
    ) -> Result<ServerCertVerified, rustls::Error> {
        v.verify_server_cert(
            self.end_entity,
            self.intermediates,
            self.server_name,
            self.ocsp_response,
            self.now,
        )
    }
}

/// A TLS client's check of a server's certificate, the one part in which server verifiers
/// differ; [`server_cert_verifier!`](crate::server_cert_verifier) makes the rustls
/// `ServerCertVerifier` around it.
pub trait CheckServerCert: SignatureAlgorithms {
    /// Accept or refuse `cert`.
    fn check_server_cert(&self, cert: ServerCert<'_>) -> Result<ServerCertVerified, rustls::Error>;
}

/// `impl rustls::client::danger::ServerCertVerifier for $t` from its [`CheckServerCert`]
/// and [`SignatureAlgorithms`] (the caller depends on rustls).
#[macro_export]
macro_rules! server_cert_verifier {
    ($t:ty) => {
        impl rustls::client::danger::ServerCertVerifier for $t {
            fn verify_server_cert(
                &self,
                end_entity: &rustls::pki_types::CertificateDer<'_>,
                intermediates: &[rustls::pki_types::CertificateDer<'_>],
                server_name: &rustls::pki_types::ServerName<'_>,
                ocsp_response: &[u8],
                now: rustls::pki_types::UnixTime,
            ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
                let cert = $crate::tls::ServerCert {
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                };
                $crate::tls::CheckServerCert::check_server_cert(self, cert)
            }

            $crate::handshake_signature_checks!();
        }
    };
}

impl SignatureAlgorithms for PinnedCa {}

impl SignatureAlgorithms for ForService {}

/// Whom a client of a p2psip service believes.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Servers whose chain leads to one of these CA certificates (the node directory's
    /// `ca.pem`).
    Ca(Vec<CertificateDer<'static>>),
    /// First contact: the server's chain must contain the CA certificate with this SHA-256
    /// (the fingerprint `enroll-server token create` prints), and the end entity must chain
    /// to it. Anything else is refused before a byte of the request is sent.
    Pinned([u8; 32]),
}

impl Trust {
    /// Trust the CA certificate(s) in `pem`.
    pub fn ca_pem(pem: &str) -> Result<Self, TlsError> {
        Ok(Trust::Ca(certs_from_pem(pem, "CA certificate")?))
    }

    /// Trust the CA certificate(s) in the PEM file `path`.
    pub fn ca_file(path: &Path) -> Result<Self, TlsError> {
        Self::ca_pem(&read(path)?)
    }

    /// Pin the CA by its SHA-256 fingerprint (hex, `:` separators allowed).
    pub fn pinned(hex: &str) -> Result<Self, TlsError> {
        let clean: String = hex.chars().filter(|c| *c != ':').collect();
        let bad = || TlsError::Fingerprint(hex.to_string());
        if clean.len() != 64 || !clean.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&clean[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Trust::Pinned(out))
    }

    /// The rustls client configuration (ring) that enforces this trust.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        self.client_config_for(None)
    }

    /// [`Trust::client_config`] that also requires the server's certificate to be made for
    /// `service` (its `p2psip:service/<service>` subjectAltName, e.g. `sos`), so that the
    /// certificate of one p2psip service never passes for another's.
    pub fn client_config_for(
        &self,
        service: Option<&str>,
    ) -> Result<rustls::ClientConfig, TlsError> {
        crate::crypto::install_provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let verifier: Arc<dyn ServerCertVerifier> = match self {
            // Nothing to believe (a client meant for plain HTTP): every certificate fails.
            Trust::Ca(cas) if cas.is_empty() => {
                return Ok(builder
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth());
            }
            Trust::Ca(cas) => rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots(cas)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Pem(format!("CA certificate: {e}")))?,
            Trust::Pinned(pin) => Arc::new(PinnedCa { pin: *pin }),
        };
        let verifier = match service {
            Some(s) => Arc::new(ForService {
                inner: verifier,
                uri: format!("{SERVICE_SAN_PREFIX}{s}"),
            }),
            None => verifier,
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }
}

fn roots(cas: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(ca.clone())?;
    }
    Ok(roots)
}

/// The verifier of [`Trust::Pinned`]: finds the pinned CA among the certificates the
/// server sent, then verifies the end entity against it exactly as [`Trust::Ca`] would
/// (path, validity, server-auth usage, host name).
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
}

impl CheckServerCert for PinnedCa {
    fn check_server_cert(&self, cert: ServerCert<'_>) -> Result<ServerCertVerified, rustls::Error> {
        let ca = cert
            .intermediates
            .iter()
            .find(|c| ring::digest::digest(&ring::digest::SHA256, c.as_ref()).as_ref() == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the server's chain does not hold the pinned CA (fingerprint mismatch)".into(),
                )
            })?;
        let roots = roots(&[ca.clone().into_owned()])
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        ServerCert {
            intermediates: &[],
            ..cert
        }
        .verify_with(&*inner)
    }
}

crate::server_cert_verifier!(PinnedCa);

/// A verifier that runs `inner`, then requires the end entity to carry the subjectAltName
/// URI `uri` (the service it was made for).
#[derive(Debug)]
struct ForService {
    inner: Arc<dyn ServerCertVerifier>,
    uri: String,
}

impl ForService {
    fn names_service(&self, cert: &CertificateDer<'_>) -> bool {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return false;
        };
        let Ok(Some(san)) = parsed.subject_alternative_name() else {
            return false;
        };
        san.value
            .general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == self.uri))
    }
}

impl CheckServerCert for ForService {
    fn check_server_cert(&self, cert: ServerCert<'_>) -> Result<ServerCertVerified, rustls::Error> {
        let ok = cert.verify_with(&*self.inner)?;
        if !self.names_service(cert.end_entity) {
            return Err(rustls::Error::General(format!(
                "the server's certificate is not one for {}",
                self.uri
            )));
        }
        Ok(ok)
    }
}

crate::server_cert_verifier!(ForService);

/// A listener that hands the HTTP server finished TLS connections. Handshakes run in their
/// own tasks (at most [`MAX_HANDSHAKES`] at once, each given up after
/// [`HANDSHAKE_TIMEOUT`]), so a client that stalls its handshake holds up nobody else.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Accept TLS on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(Self {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (mut tcp, from) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        crate::http::no_delay(&mut tcp);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, from)).await;
                }
                Ok(Err(e)) => tracing::debug!(%from, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%from, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept loop only ends when aborted, i.e. when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Transport, client_trusting, testing};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    /// A CA (PEM) and a server chain + key for `names`, issued by it.
    fn ca_and_server(names: &[&str]) -> (String, String, String) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*n).try_into().unwrap()),
            })
            .chain([SanType::URI(
                format!("{SERVICE_SAN_PREFIX}sos").try_into().unwrap(),
            )])
            .collect();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let chain = format!("{}{}", cert.pem(), ca_cert.pem());
        (ca_cert.pem(), chain, key.serialize_pem())
    }

    fn fingerprint(pem: &str) -> String {
        let der = certs_from_pem(pem, "ca").unwrap().remove(0);
        ring::digest::digest(&ring::digest::SHA256, der.as_ref())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Serve `/who` (the client's address) over HTTPS with `chain`/`key`.
    async fn start(chain: &str, key: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let transport = Transport::Https(server_config(chain, key).unwrap());
        let server = testing::start(testing::who_router(), transport).await;
        (server.addr, server.stop)
    }

    async fn who(trust: &Trust, url: &str) -> Result<String, reqwest::Error> {
        let http = client_trusting(Duration::from_secs(5), trust).unwrap();
        http.get(url).send().await?.error_for_status()?.text().await
    }

    #[tokio::test]
    async fn a_client_trusting_the_ca_gets_through_and_others_do_not() {
        let (ca, chain, key) = ca_and_server(&["127.0.0.1", "localhost"]);
        let (addr, _stop) = start(&chain, &key).await;
        let url = format!("https://{addr}/who");
        let good = Trust::ca_pem(&ca).unwrap();
        assert_eq!(who(&good, &url).await.unwrap(), "127.0.0.1");
        let by_name = format!("https://localhost:{}/who", addr.port());
        assert_eq!(who(&good, &by_name).await.unwrap(), "127.0.0.1");
        // Another CA: refused.
        let (other, _, _) = ca_and_server(&["127.0.0.1"]);
        let e = who(&Trust::ca_pem(&other).unwrap(), &url)
            .await
            .unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        // Plain HTTP to the HTTPS port gets no answer.
        assert!(who(&good, &format!("http://{addr}/who")).await.is_err());
    }

    #[tokio::test]
    async fn a_name_the_certificate_does_not_hold_is_refused() {
        let (ca, chain, key) = ca_and_server(&["sos.example.net"]);
        let (addr, _stop) = start(&chain, &key).await;
        let trust = Trust::ca_pem(&ca).unwrap();
        let e = who(&trust, &format!("https://{addr}/who"))
            .await
            .unwrap_err();
        assert!(e.is_connect(), "{e:?}");
    }

    #[tokio::test]
    async fn a_pinned_fingerprint_admits_its_ca_only() {
        let (ca, chain, key) = ca_and_server(&["127.0.0.1"]);
        let (addr, _stop) = start(&chain, &key).await;
        let url = format!("https://{addr}/who");
        let pin = fingerprint(&ca);
        let with_colons: String = pin
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(
            who(&Trust::pinned(&pin).unwrap(), &url).await.unwrap(),
            "127.0.0.1"
        );
        assert!(
            who(&Trust::pinned(&with_colons).unwrap(), &url)
                .await
                .is_ok()
        );
        let (other, _, _) = ca_and_server(&["127.0.0.1"]);
        let wrong = Trust::pinned(&fingerprint(&other)).unwrap();
        let e = who(&wrong, &url).await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        assert!(Trust::pinned("abcd").is_err());
        assert!(Trust::pinned(&"zz".repeat(32)).is_err());
    }

    #[tokio::test]
    async fn a_pinned_ca_does_not_vouch_for_a_certificate_it_did_not_issue() {
        // The server sends the pinned CA along, but its end entity comes from another CA.
        let (ca, _, _) = ca_and_server(&["127.0.0.1"]);
        let (_, foreign_chain, foreign_key) = ca_and_server(&["127.0.0.1"]);
        let leaf_only = foreign_chain
            .split_inclusive("-----END CERTIFICATE-----\n")
            .next()
            .unwrap();
        let chain = format!("{leaf_only}{ca}");
        let (addr, _stop) = start(&chain, &foreign_key).await;
        let pin = Trust::pinned(&fingerprint(&ca)).unwrap();
        assert!(who(&pin, &format!("https://{addr}/who")).await.is_err());
    }

    #[tokio::test]
    async fn a_client_of_one_service_refuses_another_services_certificate() {
        let (ca, chain, key) = ca_and_server(&["127.0.0.1"]);
        let (addr, _stop) = start(&chain, &key).await;
        let url = format!("https://{addr}/who");
        let get = |service: &'static str, trust: Trust| {
            let url = url.clone();
            async move {
                let http =
                    crate::http::client_for_service(Duration::from_secs(5), &trust, Some(service))
                        .unwrap();
                http.get(&url).send().await
            }
        };
        let by_ca = Trust::ca_pem(&ca).unwrap();
        let by_pin = Trust::pinned(&fingerprint(&ca)).unwrap();
        assert!(get("sos", by_ca.clone()).await.is_ok());
        assert!(get("sos", by_pin.clone()).await.is_ok());
        let e = get("enroll", by_ca).await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        assert!(get("enroll", by_pin).await.is_err());
    }

    #[tokio::test]
    async fn a_stalled_handshake_holds_up_nobody() {
        let (ca, chain, key) = ca_and_server(&["127.0.0.1"]);
        let (addr, _stop) = start(&chain, &key).await;
        // Connects and never says hello.
        let _stalled = TcpStream::connect(addr).await.unwrap();
        let trust = Trust::ca_pem(&ca).unwrap();
        let t = tokio::time::timeout(
            Duration::from_secs(3),
            who(&trust, &format!("https://{addr}/who")),
        )
        .await;
        assert_eq!(t.unwrap().unwrap(), "127.0.0.1");
    }

    #[tokio::test]
    async fn stopping_finishes_and_closes_the_port() {
        let (ca, chain, key) = ca_and_server(&["127.0.0.1"]);
        let (addr, stop) = start(&chain, &key).await;
        let trust = Trust::ca_pem(&ca).unwrap();
        let url = format!("https://{addr}/who");
        assert!(who(&trust, &url).await.is_ok());
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(who(&trust, &url).await.is_err());
    }
}
