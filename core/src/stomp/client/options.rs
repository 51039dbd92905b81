//! Options for sending and subscribing.

use crate::stomp::frame::Headers;

/// How a subscription acknowledges messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckMode {
    /// The broker considers a message acknowledged once sent.
    #[default]
    Auto,
    /// Cumulative: an ACK acknowledges this and every earlier message of the subscription.
    Client,
    /// Each message is acknowledged on its own.
    ClientIndividual,
}

impl AckMode {
    /// The `ack` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::Auto => "auto",
            AckMode::Client => "client",
            AckMode::ClientIndividual => "client-individual",
        }
    }

    /// Parses `auto`, `client` or `client-individual`.
    pub fn parse(s: &str) -> Option<AckMode> {
        match s {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }
}

/// Options for [`Client::subscribe`].
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Acknowledgement mode.
    pub ack: AckMode,
    /// Most unacknowledged messages in flight (sent as `prefetch-count` and `activemq.prefetchSize`).
    pub prefetch: Option<u32>,
    /// Subscription id; generated when unset.
    pub id: Option<String>,
    /// Extra SUBSCRIBE headers (e.g. `selector`, `durable`).
    pub headers: Headers,
}

/// Options for [`Client::send_with`].
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Extra headers.
    pub headers: Headers,
    /// Wait for the broker's RECEIPT before returning.
    pub receipt: bool,
    /// Ask the broker to persist the message (`persistent:true`).
    pub persistent: bool,
    /// `content-type` header.
    pub content_type: Option<String>,
}

impl SendOptions {
    /// No options: what [`Client::send`](super::Client::send) sends with.
    pub const NONE: SendOptions = SendOptions { headers: Headers::new(), receipt: false, persistent: false, content_type: None };
}
