//! A published message, shared (`Arc`) by every subscriber it is delivered to.
//!
//! The headers a MESSAGE frame carries besides the per-delivery ones
//! (`subscription`, `message-id`, `ack`, `redelivered`) are the same for every
//! subscriber speaking the same STOMP version, so they are encoded once per
//! version, on first use, and the body `Bytes` is shared, never copied per subscriber.

use super::budget::Charge;
use crate::stomp::{Headers, Version};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::OnceLock;

/// Prefix of `message-id` values: `dk-m-SEQ` (a delivery's `ack` value is `dk-SESSION-TAG`).
pub(crate) const MESSAGE_ID: &str = "dk-m-";

/// Headers a client may not set on a delivered MESSAGE (the broker sets or drops them).
const STRIPPED: [&str; 8] = ["passcode", "receipt", "transaction", "subscription", "message-id", "ack", "redelivered", "destination"];

/// One message as published, ready to be delivered any number of times.
#[derive(Debug)]
pub(crate) struct Message {
    /// The destination the publisher named (after temp-queue rewriting).
    pub destination: String,
    /// User headers, in the publisher's order, minus [`STRIPPED`].
    pub headers: Headers,
    /// The body, shared by every delivery.
    pub body: Bytes,
    /// Broker-wide serial behind its `message-id`, the same on every delivery and redelivery.
    pub seq: u64,
    /// Encoded `destination`, user headers, `content-length` and the blank line, per version.
    blocks: [OnceLock<Bytes>; 3],
    /// The bytes this message holds on the broker's budget, for as long as it lives.
    charge: Option<Charge>,
}

/// What a message or buffered frame with these headers and body costs in memory, roughly.
pub(crate) fn size_of(destination: &str, headers: &Headers, body_len: usize) -> usize {
    let head: usize = headers.iter().map(|(k, v)| k.len() + v.len() + 24).sum();
    body_len.saturating_add(head).saturating_add(destination.len()).saturating_add(256)
}

impl Message {
    /// A message from a SEND frame's destination, headers and body.
    /// `charge` holds the message's [`size_of`] on the budget until the last delivery is written.
    pub fn new(destination: String, mut headers: Headers, body: Bytes, seq: u64, charge: Option<Charge>) -> Message {
        for name in STRIPPED {
            if headers.get(name).is_some() {
                headers.remove(name);
            }
        }
        Message { destination, headers, body, seq, blocks: Default::default(), charge }
    }

    /// The bytes charged for this message (0 when not charged).
    pub fn size(&self) -> usize {
        self.charge.as_ref().map_or(0, Charge::bytes)
    }

    /// An estimate of the bytes one delivery of this message takes in an outbox.
    pub fn cost(&self) -> usize {
        self.body.len() + 128 + self.destination.len()
    }

    /// The header block (everything after the per-delivery headers, up to the body) for `version`.
    pub fn block(&self, version: Version) -> &Bytes {
        let slot = match version {
            Version::V1_0 => &self.blocks[0],
            Version::V1_1 => &self.blocks[1],
            Version::V1_2 => &self.blocks[2],
        };
        slot.get_or_init(|| self.encode_block(version))
    }

    fn encode_block(&self, version: Version) -> Bytes {
        let mut dst = BytesMut::with_capacity(64 + self.destination.len() + self.headers.len() * 32);
        put_header(&mut dst, "destination", &self.destination, version);
        for (name, value) in self.headers.iter() {
            if !put_header(&mut dst, name, value, version) {
                tracing::debug!(header = name, %version, "header cannot be encoded for this subscriber; left out");
            }
        }
        dst.put_slice(b"content-length:");
        dst.put_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        dst.put_slice(b"\n\n");
        dst.freeze()
    }
}

/// Writes `name:value\n` with `version`'s escaping; on failure writes nothing and returns false.
pub(crate) fn put_header(dst: &mut BytesMut, name: &str, value: &str, version: Version) -> bool {
    let mark = dst.len();
    let ok = put_escaped(dst, name, version, true) && {
        dst.put_u8(b':');
        put_escaped(dst, value, version, false)
    };
    if ok {
        dst.put_u8(b'\n');
    } else {
        dst.truncate(mark);
    }
    ok
}

/// Writes one header name or value with `version`'s escaping; false if it cannot be written.
pub(crate) fn put_escaped(dst: &mut BytesMut, s: &str, version: Version, is_name: bool) -> bool {
    crate::stomp::codec::escape_header(dst, s, version != Version::V1_0, version, is_name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_escapes_per_version_and_strips_broker_headers() {
        let headers: Headers = [("passcode", "secret"), ("a:b", "x\ny"), ("k", "v:w"), ("receipt", "9")].into_iter().collect();
        let m = Message::new("/topic/t".into(), headers, Bytes::from_static(b"hi"), 1, None);
        assert_eq!(&m.block(Version::V1_2)[..], b"destination:/topic/t\na\\cb:x\\ny\nk:v\\cw\ncontent-length:2\n\n");
        assert_eq!(&m.block(Version::V1_0)[..], b"destination:/topic/t\nk:v:w\ncontent-length:2\n\n");
    }
}
