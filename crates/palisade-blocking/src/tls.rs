//! `wss://` for the client with rustls' blocking `StreamOwned`: root certificates, SNI, the
//! handshake within the open timeout, and certificate failures reported as security errors.

use std::fmt;
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palisade_error::{Error, SecurityError, TimeoutPhase, TransportError};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::head::remaining;
use crate::transport::{Transport, is_timeout};

/// The TLS part of a client's settings; the rustls configuration is built at the first
/// `wss://` connection and shared by the clones of the client.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    extra: Vec<CertificateDer<'static>>,
    custom: Option<Arc<ClientConfig>>,
    built: Arc<Mutex<Option<Arc<ClientConfig>>>>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("extra_roots", &self.extra.len())
            .field("custom_config", &self.custom.is_some())
            .finish()
    }
}

impl TlsSettings {
    pub(crate) fn add_root(&mut self, cert: CertificateDer<'static>) {
        self.extra.push(cert);
        self.built = Arc::default();
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
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
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
        // WebSocket runs over HTTP/1.1 (RFC 6455 §4.1).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        *built = Some(config.clone());
        Ok(config)
    }
}

/// Runs the TLS handshake over `tcp` for `host` (sent as SNI when it is a DNS name, and
/// checked against the certificate) within `deadline`.
pub(crate) fn connect(
    settings: &TlsSettings,
    host: &str,
    tcp: TcpStream,
    deadline: Option<Instant>,
) -> Result<Box<dyn Transport>, Error> {
    let config = settings.config()?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| tls_error(format!("{host:?} is not a valid TLS server name"), None))?;
    let conn =
        ClientConnection::new(config, name).map_err(|e| tls_error(e.to_string(), Some(e)))?;
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        let left = remaining(deadline, TimeoutPhase::Tls)?;
        stream.sock.set_read_timeout(left).map_err(Error::io)?;
        stream.sock.set_write_timeout(left).map_err(Error::io)?;
        if let Err(err) = stream.conn.complete_io(&mut stream.sock) {
            return Err(handshake_error(err));
        }
    }
    Ok(Box::new(stream))
}

fn tls_error(message: String, source: Option<rustls::Error>) -> Error {
    TransportError::Tls {
        message,
        source: source.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
    }
    .into()
}

/// Sorts a failed TLS handshake: a refused certificate is a security error, another rustls
/// error a TLS error, a timeout the open timeout's, anything else the I/O failure it is.
fn handshake_error(err: std::io::Error) -> Error {
    if is_timeout(&err) {
        return Error::timeout(TimeoutPhase::Tls);
    }
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
        // `CertificateError` is non-exhaustive: anything else in rustls' words.
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_certificates_are_security_errors_and_timeouts_are_the_tls_phase() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let err = handshake_error(io);
        assert!(err.to_string().ends_with("server certificate refused: unknown issuer"), "{err}");
        assert!(!err.is_retryable());
        let err = handshake_error(std::io::ErrorKind::WouldBlock.into());
        assert!(matches!(err, Error::Timeout(t) if t.phase == TimeoutPhase::Tls), "{err:?}");
        let err = handshake_error(std::io::ErrorKind::ConnectionReset.into());
        assert!(err.is_retryable());
    }
}
