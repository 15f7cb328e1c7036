//! `wss://` with rustls: root certificates, SNI, and certificate failures reported as the
//! security errors they are.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};

use palisade_error::{Error, SecurityError, TransportError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::stream::ClientStream;

/// Which root certificates a `wss://` connection trusts (before any added with
/// [`crate::Client::with_root_certificate`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRoots {
    /// Mozilla's roots, compiled in (`webpki-roots`). The default: the same everywhere, and no
    /// file system access.
    #[default]
    WebPki,
    /// The operating system's store (`rustls-native-certs`), loaded at the first `wss://`
    /// connection.
    #[cfg(feature = "native-roots")]
    Native,
    /// None: only the certificates added with [`crate::Client::with_root_certificate`] (a
    /// private CA).
    Empty,
}

/// The TLS part of a client's settings. The rustls configuration is built once, at the first
/// `wss://` connection, and shared by the clones of the client.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    roots: TlsRoots,
    extra: Vec<CertificateDer<'static>>,
    custom: Option<Arc<ClientConfig>>,
    built: Arc<Mutex<Option<Arc<ClientConfig>>>>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("roots", &self.roots)
            .field("extra_roots", &self.extra.len())
            .field("custom_config", &self.custom.is_some())
            .finish()
    }
}

impl TlsSettings {
    pub(crate) fn set_roots(&mut self, roots: TlsRoots) {
        self.roots = roots;
        self.built = Arc::default();
    }

    pub(crate) fn add_root(&mut self, cert: CertificateDer<'static>) {
        self.extra.push(cert);
        self.built = Arc::default();
    }

    pub(crate) fn add_roots_pem(&mut self, pem: &[u8]) -> Result<usize, Error> {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| tls_error(format!("invalid PEM certificate: {e}"), None))?;
            self.add_root(cert);
            added += 1;
        }
        Ok(added)
    }

    pub(crate) fn set_config(&mut self, config: Arc<ClientConfig>) {
        self.custom = Some(config);
    }

    fn config(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(custom) = &self.custom {
            return Ok(custom.clone());
        }
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(config) = &*built {
            return Ok(config.clone());
        }
        let mut store = RootCertStore::empty();
        match self.roots {
            TlsRoots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            #[cfg(feature = "native-roots")]
            TlsRoots::Native => {
                let loaded = rustls_native_certs::load_native_certs();
                let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
                if added == 0 {
                    return Err(tls_error("no usable native root certificates".to_owned(), None));
                }
            }
            TlsRoots::Empty => {}
        }
        for cert in &self.extra {
            store
                .add(cert.clone())
                .map_err(|e| tls_error(format!("invalid root certificate: {e}"), None))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string(), None))?
            .with_root_certificates(store)
            .with_no_client_auth();
        // WebSocket runs over HTTP/1.1 (RFC 6455 §4.1); a server that prefers h2 must not pick
        // it, unless the client opts into RFC 8441 (`connect` offers `h2` then).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        *built = Some(config.clone());
        Ok(config)
    }
}

/// Runs the TLS handshake over `tcp` for `host`, which is sent as SNI when it is a DNS name
/// (RFC 6066 §3 forbids IP literals there; rustls omits them) and checked against the
/// certificate.
///
/// # Errors
///
/// [`SecurityError::Certificate`] naming why the certificate was refused;
/// [`TransportError::Tls`] for any other TLS failure; [`TransportError::Io`] when the
/// connection failed underneath.
///
/// With `h2`, ALPN offers `h2` before `http/1.1` (RFC 8441 runs WebSocket over HTTP/2);
/// [`ClientStream::is_h2`] tells which the server chose.
pub(crate) async fn connect(
    settings: &TlsSettings,
    host: &str,
    tcp: TcpStream,
    h2: bool,
) -> Result<ClientStream, Error> {
    let mut config = settings.config()?;
    if h2 {
        let mut offers = (*config).clone();
        offers.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config = Arc::new(offers);
    }
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| tls_error(format!("{host:?} is not a valid TLS server name"), None))?;
    let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(handshake_error)?;
    Ok(ClientStream::tls(tls))
}

fn tls_error(message: String, source: Option<rustls::Error>) -> Error {
    TransportError::Tls {
        message,
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
    .into()
}

/// Sorts a failed TLS handshake: a refused certificate is a security error, another rustls
/// error a TLS error, and anything else the I/O failure it is.
fn handshake_error(err: io::Error) -> Error {
    match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            SecurityError::Certificate { reason: certificate_reason(cert) }.into()
        }
        Some(other) => tls_error(other.to_string(), Some(other.clone())),
        None => Error::io(err),
    }
}

/// A short name for why a certificate was refused.
fn certificate_reason(err: &CertificateError) -> String {
    match err {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".into(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "not yet valid".into()
        }
        CertificateError::UnknownIssuer => "unknown issuer".into(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "wrong host".into()
        }
        CertificateError::Revoked => "revoked".into(),
        CertificateError::BadSignature => "bad signature".into(),
        CertificateError::BadEncoding => "bad encoding".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "not for server authentication".into()
        }
        // `CertificateError` is non-exhaustive: anything else by rustls' own words.
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_named() {
        for (err, reason) in [
            (CertificateError::Expired, "expired"),
            (CertificateError::UnknownIssuer, "unknown issuer"),
            (CertificateError::NotValidForName, "wrong host"),
            (CertificateError::NotValidYet, "not yet valid"),
            (CertificateError::Revoked, "revoked"),
        ] {
            let io =
                io::Error::new(io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(err));
            match handshake_error(io) {
                Error::Handshake(h) => {
                    assert_eq!(h.to_string(), format!("server certificate refused: {reason}"))
                }
                other => panic!("{other:?}"),
            }
        }
        let io = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::HandshakeNotComplete);
        assert!(
            matches!(handshake_error(io), Error::Transport(t) if matches!(*t, TransportError::Tls { .. }))
        );
        let io = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(handshake_error(io).is_retryable());
    }

    #[test]
    fn pem_roots_are_parsed_or_refused() {
        let mut settings = TlsSettings::default();
        assert_eq!(settings.add_roots_pem(b"").unwrap(), 0);
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(settings.add_roots_pem(bad).is_err());
    }
}
