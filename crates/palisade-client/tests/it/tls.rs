//! `wss://`: a CA and server certificates generated here with rcgen, a TLS server with
//! tokio-rustls that completes a raw handshake, and each certificate failure.

use std::sync::Arc;

use palisade_client::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use palisade_client::rustls::{self, ServerConfig};
use palisade_client::{Client, Proxy, TlsRoots};
use palisade_error::{Category, Error};
use palisade_error::{HandshakeError, SecurityError};
use palisade_proto::Message;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsAcceptor;

use crate::support::*;

struct Pki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

fn pki() -> Pki {
    pki_named("palisade test CA")
}

fn pki_named(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = ca_params.self_signed(&ca_key).unwrap();
    Pki { ca: cert.der().clone(), ca_pem: cert.pem(), ca_params, ca_key }
}

/// A server certificate for `names`, signed by the CA; `expired` puts its validity in the
/// past.
fn server_config(pki: &Pki, names: &[&str], expired: bool) -> Arc<ServerConfig> {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    }
    let issuer = Issuer::from_params(&pki.ca_params, &pki.ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

/// A `wss` server: TLS, then the raw handshake and an echo — or `respond` instead of the 101.
async fn tls_server(config: Arc<ServerConfig>, respond: Option<&'static str>) -> Server {
    let acceptor = TlsAcceptor::from(config);
    serve(move |tcp| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else { return };
            let head = read_head(&mut tls).await;
            match respond {
                Some(response) => {
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
                None => echo_after_head(tls, &head, "").await,
            }
        }
    })
    .await
}

fn trusting(pki: &Pki) -> Client {
    client().with_root_certificate(pki.ca.clone())
}

fn certificate_reason(err: Error) -> String {
    assert_eq!(err.category(), Category::Security, "{err:?}");
    assert!(!err.is_retryable());
    match handshake_error(err) {
        HandshakeError::Security(SecurityError::Certificate { reason }) => reason,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn wss_with_a_private_ca() {
    let pki = pki();
    let server = tls_server(server_config(&pki, &["localhost"], false), None).await;
    let url = format!("wss://localhost:{}/secure", server.addr.port());
    let ws = trusting(&pki).connect(&url).await.unwrap();
    assert!(ws.is_tls());
    ws.send(Message::text("over TLS")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("over TLS"));

    // The same CA as PEM, and as the only root.
    let client = client()
        .with_tls_roots(TlsRoots::Empty)
        .with_root_certificates_pem(pki.ca_pem.as_bytes())
        .unwrap();
    client.connect(&url).await.unwrap();
}

#[tokio::test]
async fn an_unknown_issuer_is_a_certificate_error() {
    let pki = pki();
    let server = tls_server(server_config(&pki, &["localhost"], false), None).await;
    let url = format!("wss://localhost:{}/", server.addr.port());
    // Default roots (webpki) do not include the test CA.
    let err = client().connect(&url).await.unwrap_err();
    assert_eq!(certificate_reason(err), "unknown issuer");
    // Nor does another CA.
    let err = trusting(&pki_named("another CA")).connect(&url).await.unwrap_err();
    assert_eq!(certificate_reason(err), "unknown issuer");
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused() {
    let pki = pki();
    let server = tls_server(server_config(&pki, &["other.example"], false), None).await;
    let err = trusting(&pki)
        .connect(&format!("wss://localhost:{}/", server.addr.port()))
        .await
        .unwrap_err();
    assert_eq!(certificate_reason(err), "wrong host");
    // An IP address is checked against the certificate too.
    let err = trusting(&pki)
        .connect(&format!("wss://127.0.0.1:{}/", server.addr.port()))
        .await
        .unwrap_err();
    assert_eq!(certificate_reason(err), "wrong host");
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let pki = pki();
    let server = tls_server(server_config(&pki, &["localhost"], true), None).await;
    let err = trusting(&pki)
        .connect(&format!("wss://localhost:{}/", server.addr.port()))
        .await
        .unwrap_err();
    assert_eq!(certificate_reason(err), "expired");
}

#[tokio::test]
async fn a_redirect_from_wss_to_ws_is_refused() {
    let pki = pki();
    let server = tls_server(
        server_config(&pki, &["localhost"], false),
        Some("HTTP/1.1 301 Moved Permanently\r\nLocation: ws://localhost/plain\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    let err = trusting(&pki)
        .connect(&format!("wss://localhost:{}/", server.addr.port()))
        .await
        .unwrap_err();
    assert_eq!(err.category(), Category::Security);
    assert!(!err.is_retryable());
    assert!(matches!(
        handshake_error(err),
        HandshakeError::Security(SecurityError::InsecureRedirect)
    ));
}

#[tokio::test]
async fn wss_through_a_socks5h_proxy_checks_the_target_name() {
    use tokio::io::AsyncReadExt;
    let pki = pki();
    let server = tls_server(server_config(&pki, &["localhost"], false), None).await;
    // A one-connection SOCKS5 proxy that always tunnels to the TLS server.
    let target = server.addr;
    let proxy = serve(move |mut tcp| async move {
        let mut buf = [0u8; 3];
        tcp.read_exact(&mut buf).await.unwrap();
        tcp.write_all(&[5, 0]).await.unwrap();
        let mut req = [0u8; 5];
        tcp.read_exact(&mut req).await.unwrap();
        let mut rest = vec![0u8; usize::from(req[4]) + 2];
        tcp.read_exact(&mut rest).await.unwrap();
        let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
        tcp.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await;
    })
    .await;
    let ws = trusting(&pki)
        .with_proxy(Proxy::socks5h("127.0.0.1", proxy.addr.port()))
        .connect(&format!("wss://localhost:{}/", target.port()))
        .await
        .unwrap();
    ws.send(Message::text("tunnelled TLS")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap(), Message::text("tunnelled TLS"));
}
