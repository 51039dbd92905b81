//! One connection to one broker: TCP or TLS transport, framed by the codec, and the CONNECT handshake.

use super::codec::{Incoming, Limits, StompCodec, Version};
use super::error::{Error, Result};
use super::frame::{Command, Frame};
use super::heartbeat::{self, HeartbeatConfig};
use super::tls::{self, TlsConfig};
use super::url::{Endpoint, Secret};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A byte stream the codec can run over (TCP or TLS over TCP).
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// The framed transport.
pub type FramedStream = Framed<Box<dyn Transport>, StompCodec>;

/// What the client says in CONNECT.
#[derive(Debug, Clone)]
pub struct Handshake {
    /// The `host` header: the virtual host (RabbitMQ wants `/`, not a socket address).
    pub vhost: String,
    /// Login, overriding the URL's.
    pub login: Option<String>,
    /// Passcode, overriding the URL's.
    pub passcode: Option<Secret>,
    /// Versions offered in `accept-version`.
    pub versions: Vec<Version>,
    /// Heart-beat wishes.
    pub heartbeat: HeartbeatConfig,
    /// ActiveMQ `client-id`, if any.
    pub client_id: Option<String>,
    /// How long TCP connect, TLS and CONNECTED may take together.
    pub timeout: Duration,
    /// Decoder limits.
    pub limits: Limits,
    /// TLS settings for `stomp+ssl://` endpoints.
    pub tls: TlsConfig,
}

impl Default for Handshake {
    fn default() -> Handshake {
        Handshake {
            vhost: "/".into(),
            login: None,
            passcode: None,
            versions: Version::ALL.to_vec(),
            heartbeat: HeartbeatConfig::default(),
            client_id: None,
            timeout: Duration::from_secs(10),
            limits: Limits::default(),
            tls: TlsConfig::default(),
        }
    }
}

/// An open STOMP session with one broker.
pub struct Connection {
    /// The framed socket.
    pub framed: FramedStream,
    /// The endpoint, for logs (password redacted by its Display).
    pub endpoint: String,
    /// The negotiated protocol version.
    pub version: Version,
    /// The broker's `heart-beat` answer, if any.
    pub server_heartbeat: Option<(u64, u64)>,
    /// The broker's `server` header, if any.
    pub server: Option<String>,
    /// The broker's `session` header, if any.
    pub session: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("endpoint", &self.endpoint).field("version", &self.version).field("server", &self.server).finish()
    }
}

/// Opens a transport to `endpoint` and performs the STOMP handshake.
pub async fn open(endpoint: &Endpoint, hs: &Handshake) -> Result<Connection> {
    let name = endpoint.to_string();
    let fut = open_inner(endpoint, hs, name.clone());
    match tokio::time::timeout(hs.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout { what: format!("CONNECTED from {name}"), after: hs.timeout }),
    }
}

/// The body of [`open`], without the overall timeout.
async fn open_inner(endpoint: &Endpoint, hs: &Handshake, name: String) -> Result<Connection> {
    let tcp = TcpStream::connect(endpoint.addr()).await.map_err(|source| Error::Connect { endpoint: name.clone(), source })?;
    let _ = tcp.set_nodelay(true);
    let io: Box<dyn Transport> = if endpoint.tls {
        let connector = tls::connector(&hs.tls).map_err(|e| with_endpoint(e, &name))?;
        let server = tls::server_name(&hs.tls, &endpoint.host)?;
        let stream = connector.connect(server, tcp).await.map_err(|e| Error::Tls { endpoint: name.clone(), why: e.to_string() })?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let mut framed = Framed::new(io, StompCodec::with_limits(Version::V1_2, hs.limits));
    // Batch up to 64 KiB per write instead of tokio-util's 8 KiB (bench/README.md: batched
    // publish CPU 0.9 -> ~0.7 µs/msg); a flush still follows every drained batch of commands.
    framed.set_backpressure_boundary(64 * 1024);
    let versions: Vec<&str> = hs.versions.iter().map(|v| v.as_str()).collect();
    let mut connect = Frame::new(Command::Connect).header("accept-version", versions.join(",")).header("host", hs.vhost.clone()).header("heart-beat", hs.heartbeat.header());
    let login = hs.login.clone().or_else(|| endpoint.login.clone());
    let passcode = hs.passcode.clone().or_else(|| endpoint.passcode.clone());
    if let Some(login) = login {
        connect.headers.push("login", login);
    }
    if let Some(passcode) = passcode {
        connect.headers.push("passcode", passcode.expose());
    }
    if let Some(id) = &hs.client_id {
        connect.headers.push("client-id", id.clone());
    }
    framed.send(&connect).await?;
    loop {
        let item =
            framed.next().await.ok_or_else(|| Error::Refused { endpoint: name.clone(), message: "connection closed before CONNECTED (wrong vhost or credentials?)".into() })??;
        let frame = match item {
            Incoming::Heartbeat => continue,
            Incoming::Frame(f) => f,
        };
        match frame.command {
            Command::Connected => {
                let version = frame.get("version").and_then(Version::parse).unwrap_or(Version::V1_0);
                if !hs.versions.contains(&version) {
                    return Err(Error::Refused { endpoint: name, message: format!("broker chose STOMP {version}, which we did not offer") });
                }
                framed.codec_mut().set_version(version);
                let server_heartbeat = if version >= Version::V1_1 { frame.get("heart-beat").and_then(heartbeat::parse_header) } else { None };
                return Ok(Connection {
                    framed,
                    endpoint: name,
                    version,
                    server_heartbeat,
                    server: frame.get("server").map(str::to_owned),
                    session: frame.get("session").map(str::to_owned),
                });
            }
            Command::Error => {
                let mut message = frame.get("message").unwrap_or("ERROR frame").to_owned();
                let body = String::from_utf8_lossy(&frame.body);
                if !body.trim().is_empty() {
                    message.push_str(": ");
                    message.push_str(body.trim());
                }
                return Err(Error::Refused { endpoint: name, message });
            }
            other => {
                return Err(Error::Refused { endpoint: name, message: format!("expected CONNECTED, got {other}") });
            }
        }
    }
}

/// Flushes frames fed to the framed stream.
pub async fn flush(framed: &mut FramedStream) -> Result<(), super::codec::FrameError> {
    SinkExt::<super::codec::Heartbeat>::flush(framed).await
}

/// Fills in the endpoint on errors raised before it was known.
fn with_endpoint(e: Error, name: &str) -> Error {
    match e {
        Error::Tls { endpoint, why } if endpoint.is_empty() => Error::Tls { endpoint: name.to_owned(), why },
        other => other,
    }
}
