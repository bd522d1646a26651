//! Certificate pinning: a TLS client that accepts a server only when its certificate is
//! one whose fingerprint it was given (from a join string, `--fingerprint`, or a node's
//! registration), and only when the server proves it holds that certificate's key. Names,
//! dates and authorities do not matter: a farm's certificate is self-signed, and the pin
//! is exact.

use corral_core::tls::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::sync::Arc;

/// The fingerprints a client accepts; empty means "no pin" (plain HTTP, or HTTPS checked
/// against the usual authorities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins(pub Vec<Fingerprint>);

impl Pins {
    pub fn none() -> Pins {
        Pins(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A rustls client configuration that accepts exactly these certificates.
    pub(crate) fn tls_config(&self) -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = PinnedVerifier {
            pins: self.0.clone(),
            provider: provider.clone(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// Why a pinned handshake failed, in words a person can act on.
#[derive(Debug)]
struct WrongCertificate {
    presented: Fingerprint,
}

impl std::fmt::Display for WrongCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate has fingerprint {}, which is not the farm's (a different server, or the join string is out of date)",
            self.presented
        )
    }
}

impl std::error::Error for WrongCertificate {}

/// A pinned handshake's refusal, found in an error chain.
pub(crate) struct Refusal(pub String);

/// The pin's own words when `e` is a handshake this module refused.
pub(crate) fn refusal(e: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    match e.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            Some(Refusal(other.0.to_string()))
        }
        _ => None,
    }
}

#[derive(Debug)]
struct PinnedVerifier {
    pins: Vec<Fingerprint>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of_der(end_entity.as_ref());
        if self.pins.contains(&presented) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(WrongCertificate { presented })),
            )))
        }
    }

    // The handshake's signatures are checked for real: they prove the server holds the
    // pinned certificate's key, which is what makes a copied certificate worthless.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
