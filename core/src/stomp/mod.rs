//! The STOMP bus: frames, codec, URLs, TLS, heart-beats, connection and client.

pub mod client;
pub mod codec;
pub mod connection;
pub mod error;
pub mod frame;
pub mod heartbeat;
pub mod tls;
pub mod url;


pub use codec::{FrameError, Heartbeat, Incoming, Limits, StompCodec, Version};
pub use error::Error;
pub use frame::{Command, Frame, Headers};
pub use url::{BrokerUrl, Endpoint, FailoverOptions};
