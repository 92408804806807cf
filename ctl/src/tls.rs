//! How cairnctl decides to trust the appliance. The appliance usually serves a self-signed
//! certificate, so the default (the system's CA roots) would only ever fail; the user says
//! instead which certificate to trust (`--ca-cert`) or that anything goes (`--insecure`).

use std::path::Path;
use std::sync::Arc;

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
}

pub enum Trust<'a> {
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

#[derive(Debug)]
enum Policy {
    /// `--insecure`.
    AcceptAnything,
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
