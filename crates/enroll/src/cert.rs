//! The E&A certificate authority and certificate checks (no I/O: PEM/DER in, DER out).
//!
//! **Binding scheme.** A peer certificate carries, as subjectAltName URIs:
//!
//! * `p2psip:node/<id>` — the Node-ID, decimal;
//! * `p2psip:layer/<n>` — the layer, 1..=3;
//! * `p2psip:role/<peer|csp|cspg>` — the role.
//!
//! Exactly one of each must be present. The subject CN is informational
//! (`p2psip node <id>`). Certificates have key usage digitalSignature and both
//! serverAuth and clientAuth extended key usages (a peer is a TLS client and server), a
//! random positive 128-bit serial, and short validity (set by the server).
//!
//! The CA is a self-signed ECDSA P-256 certificate with pathLen 0 and keyCertSign +
//! cRLSign. CSRs must be ECDSA P-256/P-384 or Ed25519 and are checked to be signed by the
//! key they carry (proof of possession); everything else in a CSR (subject, requested
//! extensions) is ignored — the server alone decides what a certificate says.
//!
//! **Service certificates.** The E&A and the SOS serve their HTTP APIs over TLS with
//! certificates from the same CA ([`Ca::issue_service`]): DNS and IP subjectAltNames for
//! the names clients use, one `p2psip:service/<enroll|sos>` URI naming the service, and
//! serverAuth only. They carry no Node-ID binding, so the overlay refuses them as peers;
//! peer certificates carry no DNS or IP name, so no peer can pass for a service.
//!
//! [`verify_peer_chain`] is what the TLS runtime calls: path validation against the CA with
//! rustls-webpki (ring algorithms), optional CRL check of the end entity, then the binding.

use crate::layer::{Layer, Role};
use overlay::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use time::OffsetDateTime;

/// A key pair (rcgen's), for callers that keep a peer key and make CSRs for renewal.
pub use rcgen::KeyPair;

/// URI prefix of the Node-ID SAN.
pub const SAN_NODE: &str = "p2psip:node/";
/// URI prefix of the layer SAN.
pub const SAN_LAYER: &str = "p2psip:layer/";
/// URI prefix of the role SAN.
pub const SAN_ROLE: &str = "p2psip:role/";

/// URI prefix of the service SAN of a service certificate (the one the service clients
/// check, [`service::tls::SERVICE_SAN_PREFIX`]).
pub const SAN_SERVICE: &str = service::tls::SERVICE_SAN_PREFIX;

/// The service a server certificate is for (a role of its own, never a peer's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceRole {
    /// The E&A server's API.
    Enroll,
    /// The Secure Opinion Server's API.
    Sos,
}

impl ServiceRole {
    /// The name in the certificate's `p2psip:service/` URI.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceRole::Enroll => "enroll",
            ServiceRole::Sos => "sos",
        }
    }
}

/// A service's server certificate chain (its certificate, then the CA) and its new key.
#[derive(Clone)]
pub struct ServiceCert {
    /// PEM: the service certificate, then the CA certificate.
    pub chain_pem: String,
    /// PKCS#8 PEM of the key (to be written with mode 0600).
    pub key_pem: String,
}

impl std::fmt::Debug for ServiceCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCert").finish_non_exhaustive()
    }
}

/// Errors building or reading certificates and CSRs.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The CSR is not valid PEM/DER, or has unsupported extensions.
    #[error("malformed certificate signing request: {0}")]
    MalformedCsr(String),
    /// The CSR's signature does not verify with the key it carries.
    #[error("the CSR is not signed by the key it carries")]
    CsrSignature,
    /// Key algorithm not accepted (ECDSA P-256/P-384, Ed25519 only).
    #[error("unsupported key algorithm in CSR")]
    UnsupportedKey,
    /// A certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    MalformedCert(String),
    /// The certificate lacks a valid p2psip binding (node, layer, role SANs).
    #[error("certificate has no valid p2psip binding: {0}")]
    Binding(String),
    /// The CA key or certificate could not be loaded (local misconfiguration).
    #[error("CA material unusable: {0}")]
    Ca(String),
    /// rcgen refused to build the certificate or CRL (a bug or bad configuration).
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Errors from [`verify_peer_chain`]: the presented chain must be refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No certificate presented.
    #[error("empty certificate chain")]
    Empty,
    /// Path validation (signature, validity period, usage, CRL) failed.
    #[error("certificate rejected: {0}")]
    Path(webpki::Error),
    /// The certificate was revoked.
    #[error("certificate revoked")]
    Revoked,
    /// The certificate is not an E&A peer certificate.
    #[error(transparent)]
    Binding(#[from] CertError),
    /// The CA or a CRL given to the verifier is unusable (local misconfiguration).
    #[error("trust anchor or CRL unusable: {0}")]
    Config(String),
}

/// What a peer certificate binds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The Node-ID.
    pub node_id: NodeId,
    /// The layer.
    pub layer: Layer,
    /// The role.
    pub role: Role,
    /// Certificate serial number (big-endian bytes).
    pub serial: Vec<u8>,
    /// End of validity, unix seconds.
    pub not_after: i64,
    /// SHA-256 of the SubjectPublicKeyInfo (stable across renewals with the same key).
    pub spki_sha256: [u8; 32],
}

/// The CA: its certificate and signing key.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

fn odt(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix).map_err(|e| CertError::Ca(e.to_string()))
}

impl Ca {
    /// A new CA (ECDSA P-256), valid from `now - 1 h` for `years` years.
    pub fn generate(name: &str, now: i64, years: i64) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "p2psip");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = odt(now - 3600)?;
        params.not_after = odt(now + years * 365 * 86_400)?;
        params.serial_number = Some(SerialNumber::from_slice(&[1]));
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let cert_pem = cert.pem();
        Ok(Self {
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            cert_pem,
            key_pem,
        })
    }

    /// Load a CA from its certificate and PKCS#8 key, both PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Ca(e.to_string()))?;
        let cert_der = pem_to_der(cert_pem, "CERTIFICATE")
            .map_err(|e| CertError::Ca(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Ca("no certificate in CA PEM".into()))?;
        let cert_der = CertificateDer::from(cert_der);
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| CertError::Ca(e.to_string()))?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::Ca("CA key does not match CA certificate".into()));
        }
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CertError::Ca(e.to_string()))?;
        Ok(Self {
            issuer,
            cert_der,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM (to be written with mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// SHA-256 of the CA certificate DER, hex: what clients pin.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Issue a peer certificate for `csr` binding `id`, valid `[not_before, not_after)`.
    pub fn issue(
        &self,
        csr: &Csr,
        id: &Binding,
        serial: [u8; 16],
        not_before: i64,
        not_after: i64,
    ) -> Result<CertificateDer<'static>, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("p2psip node {}", id.node_id));
        params.distinguished_name = dn;
        params.subject_alt_names = id
            .san_uris()
            .into_iter()
            .map(|u| {
                u.try_into()
                    .map(SanType::URI)
                    .map_err(|e: rcgen::Error| CertError::Generate(e))
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = odt(not_before)?;
        params.not_after = odt(not_after)?;
        params.serial_number = Some(SerialNumber::from_slice(&positive(serial)));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&csr.0.public_key, &self.issuer)?;
        Ok(cert.der().clone())
    }

    /// Issue a server certificate for `role` under `names` (IP addresses or DNS names) on a
    /// fresh ECDSA P-256 key, valid `[not_before, not_after)`.
    pub fn issue_service(
        &self,
        role: ServiceRole,
        names: &[String],
        serial: [u8; 16],
        not_before: i64,
        not_after: i64,
    ) -> Result<ServiceCert, CertError> {
        if names.is_empty() {
            return Err(CertError::Ca(
                "a service certificate needs at least one name".into(),
            ));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("p2psip {} {}", role.as_str(), names[0]),
        );
        dn.push(DnType::OrganizationName, "p2psip");
        params.distinguished_name = dn;
        let mut sans = Vec::with_capacity(names.len() + 1);
        for name in names {
            sans.push(match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.as_str().try_into()?),
            });
        }
        sans.push(SanType::URI(
            format!("{SAN_SERVICE}{}", role.as_str()).try_into()?,
        ));
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = odt(not_before)?;
        params.not_after = odt(not_after)?;
        params.serial_number = Some(SerialNumber::from_slice(&positive(serial)));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&self.cert_pem);
        Ok(ServiceCert {
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// A CRL listing `revoked` (serial bytes, revocation time), valid
    /// `[this_update, next_update)`, numbered `number` (must grow).
    pub fn crl(
        &self,
        revoked: &[(Vec<u8>, i64)],
        this_update: i64,
        next_update: i64,
        number: u64,
    ) -> Result<Vec<u8>, CertError> {
        let params = CertificateRevocationListParams {
            this_update: odt(this_update)?,
            next_update: odt(next_update)?,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| {
                    Ok(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(serial),
                        revocation_time: odt(*at)?,
                        reason_code: None,
                        invalidity_date: None,
                    })
                })
                .collect::<Result<_, CertError>>()?,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.der().to_vec())
    }
}

/// A positive serial: clear the top bit (and keep it non-zero).
fn positive(mut serial: [u8; 16]) -> [u8; 16] {
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 0x01;
    }
    serial
}

/// What a certificate is to bind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The Node-ID.
    pub node_id: NodeId,
    /// The layer.
    pub layer: Layer,
    /// The role.
    pub role: Role,
}

impl Binding {
    /// The three SAN URIs of the binding scheme (module doc).
    pub fn san_uris(&self) -> [String; 3] {
        [
            format!("{SAN_NODE}{}", self.node_id),
            format!("{SAN_LAYER}{}", self.layer),
            format!("{SAN_ROLE}{}", self.role),
        ]
    }
}

/// A parsed CSR whose signature was checked.
#[derive(Debug)]
pub struct Csr(CertificateSigningRequestParams);

impl Csr {
    /// Parse a PEM CSR, check its self-signature and key algorithm.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let ders = pem_to_der(pem, "CERTIFICATE REQUEST")?;
        let [der] = ders.as_slice() else {
            return Err(CertError::MalformedCsr(
                "expected exactly one CERTIFICATE REQUEST block".into(),
            ));
        };
        Self::from_der(der)
    }

    /// Parse a DER CSR, check its self-signature and key algorithm.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let params =
            CertificateSigningRequestParams::from_der(&der.into()).map_err(|e| match e {
                rcgen::Error::InvalidCertificationRequestSignature => CertError::CsrSignature,
                rcgen::Error::UnsupportedSignatureAlgorithm => CertError::UnsupportedKey,
                other => CertError::MalformedCsr(other.to_string()),
            })?;
        let alg = params.public_key.algorithm();
        if alg != &rcgen::PKCS_ECDSA_P256_SHA256
            && alg != &rcgen::PKCS_ECDSA_P384_SHA384
            && alg != &rcgen::PKCS_ED25519
        {
            return Err(CertError::UnsupportedKey);
        }
        Ok(Csr(params))
    }

    /// The requester's SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> Vec<u8> {
        self.0.public_key.subject_public_key_info()
    }
}

/// Make a fresh ECDSA P-256 key and a CSR for it: `(key PKCS#8 PEM, CSR PEM)`.
pub fn new_key_and_csr() -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let csr = csr_for_key(&key)?;
    Ok((key.serialize_pem(), csr))
}

/// A CSR (PEM) for an existing key, e.g. for renewal.
pub fn csr_for_key(key: &KeyPair) -> Result<String, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "p2psip peer");
    params.distinguished_name = dn;
    Ok(params.serialize_request(key)?.pem()?)
}

/// All blocks labelled `label` (`CERTIFICATE`, `CERTIFICATE REQUEST` or `X509 CRL`) in a
/// PEM text, as DER. Other blocks are skipped.
pub fn pem_to_der(pem: &str, label: &str) -> Result<Vec<Vec<u8>>, CertError> {
    use rustls_pki_types::pem::{SectionKind, from_buf};
    let mut out = Vec::new();
    let mut rd = pem.as_bytes();
    while let Some((kind, der)) =
        from_buf(&mut rd).map_err(|e| CertError::MalformedCsr(format!("bad PEM: {e}")))?
    {
        let matches = match kind {
            SectionKind::Certificate => label == "CERTIFICATE",
            SectionKind::Csr => label == "CERTIFICATE REQUEST",
            SectionKind::Crl => label == "X509 CRL",
            _ => false,
        };
        if matches {
            out.push(der);
        }
    }
    Ok(out)
}

/// Encode DER as PEM with `label`.
pub fn der_to_pem(der: &[u8], label: &str) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// SHA-256 of DER bytes, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    crate::token::hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}

/// Read the p2psip binding out of a certificate (no path validation: see
/// [`verify_peer_chain`]).
pub fn identity_from_cert(der: &[u8]) -> Result<PeerIdentity, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| CertError::MalformedCert(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::MalformedCert(e.to_string()))?
        .ok_or_else(|| CertError::Binding("no subjectAltName".into()))?;
    let (mut node, mut layer, mut role) = (None, None, None);
    let once = |slot: &mut Option<String>, v: &str, what: &str| {
        if slot.replace(v.to_string()).is_some() {
            Err(CertError::Binding(format!("more than one {what} URI")))
        } else {
            Ok(())
        }
    };
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(v) = uri.strip_prefix(SAN_NODE) {
                once(&mut node, v, "node")?;
            } else if let Some(v) = uri.strip_prefix(SAN_LAYER) {
                once(&mut layer, v, "layer")?;
            } else if let Some(v) = uri.strip_prefix(SAN_ROLE) {
                once(&mut role, v, "role")?;
            }
        }
    }
    let missing = |w: &str| CertError::Binding(format!("no {w} URI"));
    let node_id: NodeId = node
        .ok_or_else(|| missing("node"))?
        .parse()
        .map_err(|_| CertError::Binding("node ID is not a decimal u128".into()))?;
    let layer = layer
        .ok_or_else(|| missing("layer"))?
        .parse::<u8>()
        .ok()
        .and_then(|n| Layer::new(n).ok())
        .ok_or_else(|| CertError::Binding("bad layer".into()))?;
    let role: Role = role
        .ok_or_else(|| missing("role"))?
        .parse()
        .map_err(|_| CertError::Binding("bad role".into()))?;
    let mut spki_sha256 = [0u8; 32];
    spki_sha256.copy_from_slice(
        ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw).as_ref(),
    );
    Ok(PeerIdentity {
        node_id,
        layer,
        role,
        serial: cert.tbs_certificate.raw_serial().to_vec(),
        not_after: cert.validity().not_after.timestamp(),
        spki_sha256,
    })
}

/// Signature algorithms accepted in peer chains (ring).
pub static SIG_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

/// Verify a peer's chain (end entity first; the CA itself may follow) against the E&A CA
/// at time `now`, check the end entity against `crls` (DER, signed by the CA; CRLs past
/// their nextUpdate are refused, so refresh them), and return what it binds.
///
/// Use it in the TLS runtime on both sides of a connection, then compare
/// [`PeerIdentity::node_id`] with the ID the peer claims.
pub fn verify_peer_chain(
    ca_der: &[u8],
    chain: &[CertificateDer<'_>],
    crls: &[Vec<u8>],
    now: UnixTime,
) -> Result<PeerIdentity, VerifyError> {
    let (ee, rest) = chain.split_first().ok_or(VerifyError::Empty)?;
    let ca = CertificateDer::from(ca_der);
    let anchor =
        webpki::anchor_from_trusted_cert(&ca).map_err(|e| VerifyError::Config(e.to_string()))?;
    let intermediates: Vec<CertificateDer<'_>> = rest
        .iter()
        .filter(|c| c.as_ref() != ca_der)
        .cloned()
        .collect();
    let parsed_crls: Vec<webpki::CertRevocationList<'_>> = crls
        .iter()
        .map(|d| {
            webpki::BorrowedCertRevocationList::from_der(d)
                .map(webpki::CertRevocationList::from)
                .map_err(|e| VerifyError::Config(format!("CRL: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = parsed_crls.iter().collect();
    let revocation = match webpki::RevocationOptionsBuilder::new(&crl_refs) {
        Ok(b) => Some(
            b.with_depth(webpki::RevocationCheckDepth::EndEntity)
                .with_status_policy(webpki::UnknownStatusPolicy::Allow)
                .with_expiration_policy(webpki::ExpirationPolicy::Enforce)
                .build(),
        ),
        Err(_) => None,
    };
    let cert = webpki::EndEntityCert::try_from(ee).map_err(VerifyError::Path)?;
    cert.verify_for_usage(
        SIG_ALGS,
        std::slice::from_ref(&anchor),
        &intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        revocation,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertRevoked => VerifyError::Revoked,
        other => VerifyError::Path(other),
    })?;
    Ok(identity_from_cert(ee)?)
}

/// A rustls client-certificate verifier (ring provider) that accepts chains issued by the
/// E&A CA and not listed in `crls` (end-entity check; unknown status allowed). For the
/// TLS runtime's server side; after the handshake, read the binding with
/// [`identity_from_cert`] on the first peer certificate.
pub fn rustls_client_verifier(
    ca_der: &[u8],
    crls: Vec<Vec<u8>>,
) -> Result<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>, VerifyError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .map_err(|e| VerifyError::Config(e.to_string()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .with_crls(
        crls.into_iter()
            .map(rustls_pki_types::CertificateRevocationListDer::from),
    )
    .only_check_end_entity_revocation()
    .allow_unknown_revocation_status()
    .build()
    .map_err(|e| VerifyError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000;

    fn binding(id: u128) -> Binding {
        Binding {
            node_id: NodeId(id),
            layer: Layer::TWO,
            role: Role::Csp,
        }
    }

    fn at(t: i64) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(t as u64))
    }

    #[test]
    fn issue_verify_revoke() {
        let ca = Ca::generate("test CA", NOW, 10).unwrap();
        let (_key, csr_pem) = new_key_and_csr().unwrap();
        let csr = Csr::from_pem(&csr_pem).unwrap();
        let id = u128::MAX - 5;
        let der = ca
            .issue(&csr, &binding(id), [0xff; 16], NOW - 60, NOW + 86_400)
            .unwrap();
        let chain = [der.clone(), ca.cert_der().clone()];
        let who = verify_peer_chain(ca.cert_der(), &chain, &[], at(NOW)).unwrap();
        assert_eq!(who.node_id, NodeId(id));
        assert_eq!(who.layer, Layer::TWO);
        assert_eq!(who.role, Role::Csp);
        assert_eq!(who.serial[0], 0x7f);
        // Expired.
        assert!(matches!(
            verify_peer_chain(ca.cert_der(), &chain, &[], at(NOW + 90_000)),
            Err(VerifyError::Path(_))
        ));
        // A CRL that lists the serial.
        let crl = ca
            .crl(&[(who.serial.clone(), NOW)], NOW, NOW + 3600, 1)
            .unwrap();
        assert!(matches!(
            verify_peer_chain(
                ca.cert_der(),
                &chain,
                std::slice::from_ref(&crl),
                at(NOW + 10)
            ),
            Err(VerifyError::Revoked)
        ));
        // A CRL that does not.
        let crl = ca.crl(&[(vec![1, 2, 3], NOW)], NOW, NOW + 3600, 2).unwrap();
        verify_peer_chain(ca.cert_der(), &chain, &[crl], at(NOW + 10)).unwrap();
        // Another CA's certificate.
        let other = Ca::generate("other", NOW, 1).unwrap();
        assert!(verify_peer_chain(other.cert_der(), &chain, &[], at(NOW)).is_err());
        // The CA reloads from PEM and its certificates still verify.
        let again = Ca::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let der2 = again
            .issue(&csr, &binding(7), [3; 16], NOW, NOW + 60)
            .unwrap();
        verify_peer_chain(ca.cert_der(), &[der2], &[], at(NOW + 1)).unwrap();
        assert!(Ca::from_pem(ca.cert_pem(), other.key_pem()).is_err());
    }

    #[test]
    fn rustls_verifier_accepts_ours_and_refuses_revoked() {
        let ca = Ca::generate("test CA", NOW, 10).unwrap();
        let csr = Csr::from_pem(&new_key_and_csr().unwrap().1).unwrap();
        let now = UnixTime::now().as_secs() as i64;
        let der = ca
            .issue(&csr, &binding(42), [9; 16], now - 60, now + 3600)
            .unwrap();
        let v = rustls_client_verifier(ca.cert_der(), vec![]).unwrap();
        v.verify_client_cert(&der, &[], UnixTime::now()).unwrap();
        let serial = identity_from_cert(&der).unwrap().serial;
        let crl = ca.crl(&[(serial, now)], now - 60, now + 3600, 1).unwrap();
        let v = rustls_client_verifier(ca.cert_der(), vec![crl]).unwrap();
        assert!(v.verify_client_cert(&der, &[], UnixTime::now()).is_err());
        let other = Ca::generate("other", NOW, 1).unwrap();
        let v = rustls_client_verifier(other.cert_der(), vec![]).unwrap();
        assert!(v.verify_client_cert(&der, &[], UnixTime::now()).is_err());
    }

    #[test]
    fn csr_checks() {
        assert!(matches!(
            Csr::from_pem("not a csr"),
            Err(CertError::MalformedCsr(_))
        ));
        let (_k, pem) = new_key_and_csr().unwrap();
        let mut der = pem_to_der(&pem, "CERTIFICATE REQUEST").unwrap().remove(0);
        // Flip a byte of the signature: must fail the proof of possession.
        let n = der.len();
        der[n - 3] ^= 0x55;
        assert!(Csr::from_der(&der).is_err());
        assert!(Csr::from_der(&der[..n / 2]).is_err());
        // PEM round trip.
        let der = pem_to_der(&pem, "CERTIFICATE REQUEST").unwrap().remove(0);
        let back = der_to_pem(&der, "CERTIFICATE REQUEST");
        assert_eq!(pem_to_der(&back, "CERTIFICATE REQUEST").unwrap(), vec![der]);
    }

    #[test]
    fn foreign_csr_rejected() {
        // A CSR whose public key was swapped for another key: the signature no longer
        // matches the key it carries.
        let a = KeyPair::generate().unwrap();
        let b = KeyPair::generate().unwrap();
        let der = pem_to_der(&csr_for_key(&a).unwrap(), "CERTIFICATE REQUEST")
            .unwrap()
            .remove(0);
        let (pa, pb) = (a.public_key_raw().to_vec(), b.public_key_raw().to_vec());
        let pos = der.windows(pa.len()).position(|w| w == pa).unwrap();
        let mut forged = der.clone();
        forged[pos..pos + pb.len()].copy_from_slice(&pb);
        assert!(matches!(
            Csr::from_der(&forged),
            Err(CertError::CsrSignature)
        ));
    }
}
