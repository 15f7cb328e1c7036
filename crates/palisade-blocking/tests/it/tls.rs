//! `wss://`: a CA and a server certificate made here with rcgen, the acceptor over rustls'
//! `StreamOwned`, and the client trusting the CA (or not).

use std::net::TcpListener;
use std::sync::Arc;

use palisade_blocking::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use palisade_blocking::rustls::{self, ServerConfig, ServerConnection, StreamOwned};
use palisade_blocking::{Acceptor, Client, CloseCode, Message};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::{WAIT, echo};

#[test]
fn wss_echo_with_a_private_ca_and_a_refused_unknown_issuer() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "palisade blocking test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &Issuer::from_params(&ca_params, &ca_key)).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap(),
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().unwrap();
            let tls = StreamOwned::new(ServerConnection::new(config.clone()).unwrap(), tcp);
            ends.push(echo(Acceptor::new().accept(tls)));
        }
        ends
    });
    let url = format!("wss://localhost:{port}/");

    let err = Client::new().with_open_timeout(Some(WAIT)).connect(&url).unwrap_err();
    assert!(err.to_string().contains("unknown issuer"), "{err}");

    let mut ws = Client::new()
        .with_open_timeout(Some(WAIT))
        .with_root_certificate(ca.der().clone())
        .connect(&url)
        .unwrap();
    ws.send(Message::text("over TLS")).unwrap();
    assert_eq!(ws.recv().unwrap(), Message::text("over TLS"));
    ws.close(CloseCode::NORMAL, "").unwrap();
    let ends = server.join().unwrap();
    assert!(ends[1].is_closed_ok(), "{:?}", ends[1]);
}
