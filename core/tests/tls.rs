//! `stomp+ssl://`: the client verifies the broker against a configured CA,
//! refuses an untrusted one, and presents a client certificate when asked.
//! A TLS front (tokio-rustls server) in the test terminates TLS before the
//! embedded broker, as stunnel or a TLS-enabled RabbitMQ listener would.

use deploykit::broker::{Broker, BrokerConfig};
use deploykit::stomp::{Client, ClientConfig, Error, SendOptions, SubscribeOptions, TlsConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throw-away CA and a leaf certificate for `localhost`, written as PEM files.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    leaf_der: CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

fn make_pki(tag: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &*ca).unwrap();
    let dir = std::env::temp_dir().join(format!("dk-tls-{tag}-{}-{}", std::process::id(), fastrand::u32(..)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    Pki { dir, ca_pem: ca.pem(), leaf_der: leaf.der().clone(), leaf_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())) }
}

/// Accepts TLS on 127.0.0.1:0 and pipes each session to `upstream` in plain TCP.
async fn tls_front(pki: &Pki, upstream: std::net::SocketAddr) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.leaf_der.clone()], pki.leaf_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    addr
}

fn tls_config(url: &str, ca: PathBuf) -> ClientConfig {
    let mut c = ClientConfig::new(url).unwrap().tls(TlsConfig { ca_file: Some(ca), ..TlsConfig::default() });
    c.url.options.startup_max_reconnect_attempts = Some(1);
    c.handshake.timeout = Duration::from_secs(5);
    c
}

#[tokio::test]
async fn tls_with_configured_ca_round_trips() {
    let pki = make_pki("ok");
    assert!(pki.ca_pem.contains("BEGIN CERTIFICATE"));
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let front = tls_front(&pki, broker.local_addr()).await;
    let url = format!("stomp+ssl://localhost:{}", front.port());
    let client = Client::connect(tls_config(&url, pki.dir.join("ca.pem"))).await.unwrap();
    let mut sub = client.subscribe("/topic/tls", SubscribeOptions::default()).await.unwrap();
    client.send_with("/topic/tls", "over TLS", SendOptions { receipt: true, ..Default::default() }).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await.unwrap().unwrap();
    assert_eq!(m.text(), Some("over TLS"));
    client.disconnect().await.unwrap();
}

#[tokio::test]
async fn tls_refuses_an_untrusted_broker() {
    let served = make_pki("served");
    let other = make_pki("other");
    let broker = Broker::start(BrokerConfig::default()).await.unwrap();
    let front = tls_front(&served, broker.local_addr()).await;
    let url = format!("stomp+ssl://localhost:{}", front.port());
    let err = Client::connect(tls_config(&url, other.dir.join("ca.pem"))).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::GaveUp { .. }), "{err:?}");
    assert!(text.contains("TLS") && text.to_lowercase().contains("certificate"), "error should say why: {text}");
}

#[tokio::test]
async fn tls_reports_missing_ca_file_clearly() {
    let url = "stomp+ssl://localhost:1";
    let err = Client::connect(tls_config(url, PathBuf::from("/nonexistent/ca.pem"))).await.unwrap_err();
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
