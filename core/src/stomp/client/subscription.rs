//! What a subscriber holds: messages, the subscription stream, and transactions.

use super::inbox::Inbox;
use super::*;
use crate::stomp::codec::Version;
use crate::stomp::error::{Error, Result};
use crate::stomp::frame::{Command, Headers};
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// A message delivered to a subscription.
#[derive(Debug, Clone)]
pub struct Message {
    /// All MESSAGE headers.
    pub headers: Headers,
    /// The body.
    pub body: Bytes,
    /// What acknowledging it needs; boxed, as only client-ack subscriptions have one.
    pub(super) ack: Option<Box<AckRef>>,
}

// A message is moved three times between the socket and the application (into its
// batch, out of the inbox, out of `recv`). Up to 128 bytes a move is a few register
// copies; above that it is a call to `memcpy`, ~30 instructions each, which the
// `destination` field a message once carried (a second handle on the header block,
// 32 bytes) cost every message. The destination is now read from the headers.
const _: () = assert!(std::mem::size_of::<Message>() <= 128);

/// What an ACK/NACK of a message needs.
#[derive(Debug, Clone)]
pub(super) struct AckRef {
    pub headers: Headers,
    pub(super) generation: u64,
}

impl Message {
    /// The destination it was sent to (empty if the broker named none).
    pub fn destination(&self) -> &str {
        self.headers.get("destination").unwrap_or_default()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// Whether the body is the original deploykit's keepalive (a single newline).
    pub fn is_keepalive(&self) -> bool {
        &self.body[..] == b"\n"
    }
}

/// A subscription's message stream; dropping it unsubscribes.
pub struct Subscription {
    pub(super) id: String,
    pub(super) destination: String,
    pub(super) ack: AckMode,
    pub(super) rx: Inbox,
    pub(super) client: Client,
    pub(super) open: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("destination", &self.destination).finish()
    }
}

impl Subscription {
    /// The next message, or `None` once the client is closed.
    pub async fn recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// The subscription id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The destination.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The acknowledgement mode.
    pub fn ack_mode(&self) -> AckMode {
        self.ack
    }

    /// Acknowledges `msg` (and, in `client` mode, every earlier one).
    pub async fn ack(&self, msg: &Message) -> Result<()> {
        self.client.acknowledge(msg, Command::Ack, None).await
    }

    /// Rejects `msg`; the broker may redeliver it (STOMP 1.1 and later).
    pub async fn nack(&self, msg: &Message) -> Result<()> {
        if self.client.session().map(|s| s.version) == Some(Version::V1_0) {
            return Err(Error::Invalid("NACK does not exist in STOMP 1.0".into()));
        }
        self.client.acknowledge(msg, Command::Nack, None).await
    }

    /// Unsubscribes and waits for the broker's receipt.
    pub async fn unsubscribe(mut self) -> Result<()> {
        self.open = false;
        let (reply, done) = oneshot::channel();
        self.client.shared.outbox.unsubscribe(&self.id, Some(reply));
        match tokio::time::timeout(self.client.shared.receipt_timeout, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout { what: "RECEIPT for UNSUBSCRIBE".into(), after: self.client.shared.receipt_timeout }),
        }
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.open {
            self.client.shared.outbox.unsubscribe(&self.id, None);
        }
    }
}

/// An open transaction; SENDs and ACKs through it take effect on [`Transaction::commit`].
#[derive(Debug)]
pub struct Transaction {
    pub(super) client: Client,
    pub(super) id: String,
    pub(super) generation: u64,
}

impl Transaction {
    /// The transaction id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends within the transaction.
    pub async fn send_with(&self, destination: &str, body: impl Into<Bytes>, opts: SendOptions) -> Result<()> {
        self.client.send_parts(destination, body.into(), &opts, Some((&self.id, self.generation))).await
    }

    /// Sends within the transaction with default options.
    pub async fn send(&self, destination: &str, body: impl Into<Bytes>) -> Result<()> {
        self.send_with(destination, body, SendOptions::default()).await
    }

    /// Acknowledges a message within the transaction.
    pub async fn ack(&self, msg: &Message) -> Result<()> {
        self.client.acknowledge(msg, Command::Ack, Some((&self.id, self.generation))).await
    }

    /// Commits, confirmed by a RECEIPT.
    pub async fn commit(self) -> Result<()> {
        let frame = Frame::new(Command::Commit).header("transaction", self.id.clone());
        self.client.submit(frame, true, Some(self.generation)).await
    }

    /// Aborts, confirmed by a RECEIPT.
    pub async fn abort(self) -> Result<()> {
        let frame = Frame::new(Command::Abort).header("transaction", self.id.clone());
        self.client.submit(frame, true, Some(self.generation)).await
    }
}
