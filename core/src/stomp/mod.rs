//! The STOMP bus: frames, codec, URLs, TLS, heart-beats, connection and client.

pub mod client;
pub mod codec;
pub mod connection;
pub mod error;
pub mod frame;
pub mod heartbeat;
mod scan;
pub mod tls;
pub mod url;

pub use client::{AckMode, Client, ClientConfig, ClientEvent, Message, SendOptions, State, SubscribeOptions, Subscription, Transaction};
pub use codec::{FrameError, Heartbeat, Incoming, Limits, StompCodec, Version};
pub use connection::Handshake;
pub use error::Error;
pub use frame::{Command, Frame, Headers};
pub use heartbeat::{HeartbeatConfig, KeepaliveWire};
pub use tls::TlsConfig;
pub use url::{BrokerUrl, Endpoint, FailoverOptions};
