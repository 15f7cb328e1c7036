//! `wss://`: the server behind rustls, with a CA generated in the test.

#![cfg(feature = "rustls")]

use palisade_proto::Message;
use std::sync::Arc;

use palisade_server::Server;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{connect_on, echo, quiet};

/// A CA, and a certificate for `localhost` it signed, as rustls configurations.
fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    let client = ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

#[tokio::test]
async fn echo_over_tls() {
    let (server_tls, client_tls) = tls_configs();
    let server = Server::builder()
        .fallback(echo)
        .with_config(quiet())
        .with_tls(server_tls)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_tls)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/secure", server.local_addr().port());
    let c = connect_on(tls, &url, &[], &[]).await.open();
    c.send("over tls").await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Message::text("over tls"));
    c.send(Message::binary(vec![7u8; 200_000])).await.unwrap();
    assert_eq!(c.recv().await.unwrap(), Message::binary(vec![7u8; 200_000]));
    c.close(palisade_error::CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn plain_client_on_a_tls_port_gets_no_upgrade() {
    let (server_tls, _) = tls_configs();
    let server = Server::builder()
        .fallback(echo)
        .with_tls(server_tls)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    // Plain HTTP at a TLS server: the TLS handshake fails and the connection closes.
    let answer = super::raw(server.local_addr(), &super::upgrade_request("")).await;
    assert!(!answer.contains("101"), "{answer}");
}
