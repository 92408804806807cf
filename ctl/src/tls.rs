//! How cairnctl decides to trust the appliance. The appliance usually serves a self-signed
//! certificate, so the default (the system's CA roots) would only ever fail; the user says
//! instead which certificate to trust: by its fingerprint (`--accept-fingerprint`, a remote's
//! pin, as ssh pins host keys), a PEM file (`--ca-cert`), or that anything goes (`--insecure`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificate {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} holds no PEM certificate")]
    Empty { path: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(
        "{0:?} is not a certificate fingerprint: give SHA256: and 64 hex digits, as the host's \
         console prints it"
    )]
    Fingerprint(String),
}

/// A fingerprint as the user may give it — `SHA256:<hex>` (any case), the hex alone, or hex
/// with colons as `openssl x509 -fingerprint` prints it — in the one form Cairn prints and
/// pins ([`model::token::cert_fingerprint`]'s).
pub fn normalize_fingerprint(given: &str) -> Result<String, TlsError> {
    let t = given.trim();
    let hex = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sha256:") => &t[7..],
        _ => t,
    };
    let hex: String = hex
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TlsError::Fingerprint(given.to_string()));
    }
    Ok(format!("SHA256:{hex}"))
}

/// A pinned fingerprint and what the server presented instead, when it did: the verifier
/// can only answer the handshake with an error, so the caller asks here why it failed.
#[derive(Debug)]
pub struct Pin {
    pub expected: String,
    presented: Mutex<Option<String>>,
}

impl Pin {
    /// `expected` as [`normalize_fingerprint`] gives it.
    pub fn new(expected: String) -> Arc<Pin> {
        Arc::new(Pin {
            expected,
            presented: Mutex::new(None),
        })
    }

    /// The fingerprint the server presented when it was not the pinned one.
    pub fn mismatch(&self) -> Option<String> {
        self.presented.lock().ok().and_then(|p| p.clone())
    }

    fn check(&self, der: &[u8]) -> bool {
        let seen = model::token::cert_fingerprint(der);
        if seen == self.expected {
            return true;
        }
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(seen);
        }
        false
    }
}

pub enum Trust<'a> {
    /// Trust exactly the certificate with this fingerprint, whatever name it carries.
    Fingerprint(Arc<Pin>),
    /// Trust the certificates in this PEM file: as the exact server certificate (pinning, which
    /// works whatever name or address the host is reached by), or as a CA that signed it.
    CaFile(&'a Path),
    /// Accept any certificate. Encrypts, but does not know whom it talks to.
    Insecure,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn client_config(trust: Trust<'_>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let algorithms = provider.signature_verification_algorithms;
    let policy = match trust {
        Trust::Insecure => Policy::AcceptAnything,
        Trust::Fingerprint(pin) => Policy::Fingerprint(pin),
        Trust::CaFile(path) => {
            let name = path.display().to_string();
            let read_err = |e: rustls_pki_types::pem::Error| TlsError::Read {
                path: name.clone(),
                message: e.to_string(),
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(read_err)?
                .collect::<Result<_, _>>()
                .map_err(read_err)?;
            if certs.is_empty() {
                return Err(TlsError::Empty { path: name });
            }
            let mut roots = rustls::RootCertStore::empty();
            // A leaf that is not a valid trust anchor still works through pinning below.
            let _ = roots.add_parsable_certificates(certs.iter().cloned());
            let webpki = if roots.is_empty() {
                None
            } else {
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .ok()
            };
            Policy::Pinned { certs, webpki }
        }
    };
    let verifier = Arc::new(Verifier { policy, algorithms });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The fingerprint of the certificate the server at `host:port` presents, trusting nothing:
/// what `remote add` shows before it pins one.
pub async fn fetch_fingerprint(host: &str, port: u16) -> Result<String, String> {
    let record = Arc::new(Mutex::new(None));
    let provider = provider();
    let verifier = Arc::new(Verifier {
        algorithms: provider.signature_verification_algorithms,
        policy: Policy::Record(record.clone()),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|_| "not a valid host name")?;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))
    };
    tokio::time::timeout(std::time::Duration::from_secs(15), work)
        .await
        .map_err(|_| "no TLS handshake within 15 s".to_string())??;
    let seen = record.lock().ok().and_then(|r| r.clone());
    seen.ok_or_else(|| "the server presented no certificate".to_string())
}

#[derive(Debug)]
enum Policy {
    /// `--insecure`.
    AcceptAnything,
    /// Anything, noting the certificate's fingerprint ([`fetch_fingerprint`]).
    Record(Arc<Mutex<Option<String>>>),
    /// A remote's pin or `--accept-fingerprint`: that certificate only.
    Fingerprint(Arc<Pin>),
    /// `--ca-cert`: the exact certificate, or one a certificate in the file signed.
    Pinned {
        certs: Vec<CertificateDer<'static>>,
        webpki: Option<Arc<WebPkiServerVerifier>>,
    },
}

#[derive(Debug)]
struct Verifier {
    policy: Policy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (certs, webpki) = match &self.policy {
            Policy::AcceptAnything => return Ok(ServerCertVerified::assertion()),
            Policy::Record(seen) => {
                if let Ok(mut seen) = seen.lock() {
                    *seen = Some(model::token::cert_fingerprint(end_entity));
                }
                return Ok(ServerCertVerified::assertion());
            }
            Policy::Fingerprint(pin) => {
                return match pin.check(end_entity) {
                    true => Ok(ServerCertVerified::assertion()),
                    false => Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    )),
                };
            }
            Policy::Pinned { certs, webpki } => (certs, webpki),
        };
        if certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Ok(ServerCertVerified::assertion());
        }
        match webpki {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
    }

    // The handshake signature is checked under every policy: it costs nothing and keeps the
    // session sound against the certificate that was presented.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
