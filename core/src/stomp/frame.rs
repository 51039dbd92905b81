//! STOMP frames: the command, the ordered header list and the body.

use bytes::Bytes;
pub use bytestring::ByteString;
use std::fmt;

/// A STOMP command, client or server side (STOMP 1.0–1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session (1.0 and later).
    Connect,
    /// Client: open a session (1.1 and later spelling).
    Stomp,
    /// Server: session accepted.
    Connected,
    /// Client: publish a message.
    Send,
    /// Client: subscribe to a destination.
    Subscribe,
    /// Client: cancel a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: negatively acknowledge a message (1.1 and later).
    Nack,
    /// Client: begin a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: abort a transaction.
    Abort,
    /// Client: close the session.
    Disconnect,
    /// Server: a message delivered to a subscription.
    Message,
    /// Server: a receipt for a client frame.
    Receipt,
    /// Server: an error; the server closes the connection after it.
    Error,
}

impl Command {
    /// Every command, for tests and tables.
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// The command's name as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a command name as read from the wire (case-sensitive, as the spec says).
    pub fn from_bytes(name: &[u8]) -> Option<Command> {
        Some(match name {
            b"MESSAGE" => Command::Message,
            b"SEND" => Command::Send,
            b"ACK" => Command::Ack,
            b"RECEIPT" => Command::Receipt,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"NACK" => Command::Nack,
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"CONNECTED" => Command::Connected,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// Whether this command's headers are never escaped (CONNECT, STOMP and CONNECTED).
    pub fn is_unescaped(self) -> bool {
        matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header: either ranges into the decoded header block, or owned strings.
#[derive(Clone)]
enum Entry {
    /// Byte ranges of the name and value inside [`Headers::block`].
    Block { name: (u32, u32), value: (u32, u32) },
    /// A header added by code, or one whose escapes were undone.
    Owned(ByteString, ByteString),
}

/// An ordered list of headers; repeated names are kept, and the first one wins on lookup.
///
/// Decoded headers are ranges into the frame's header block (one shared
/// buffer per frame, no allocation per header); headers added by code are
/// owned strings.
#[derive(Clone, Default)]
pub struct Headers {
    /// The decoded header block, valid UTF-8; empty for frames built by code.
    block: ByteString,
    entries: Vec<Entry>,
}

impl Headers {
    /// An empty header list.
    pub const fn new() -> Headers {
        Headers { block: ByteString::new(), entries: Vec::new() }
    }

    /// An empty header list with room for `n` entries.
    pub fn with_capacity(n: usize) -> Headers {
        Headers { block: ByteString::new(), entries: Vec::with_capacity(n) }
    }

    /// A header list over a decoded header block (the codec fills it with [`Headers::push_range`]).
    pub(crate) fn over_block(block: ByteString, capacity: usize) -> Headers {
        Headers { block, entries: Vec::with_capacity(capacity) }
    }

    /// Appends a header whose name and value are byte ranges of the block.
    /// The ranges must lie on character boundaries of the block (the codec cuts at ASCII bytes).
    pub(crate) fn push_range(&mut self, name: (usize, usize), value: (usize, usize)) {
        debug_assert!(self.block.get(name.0..name.1).is_some() && self.block.get(value.0..value.1).is_some());
        self.entries.push(Entry::Block { name: (name.0 as u32, name.1 as u32), value: (value.0 as u32, value.1 as u32) });
    }

    /// The text of one entry.
    fn text<'a>(&'a self, e: &'a Entry) -> (&'a str, &'a str) {
        match e {
            // Ranges were cut at ASCII bytes of a UTF-8 block, so slicing cannot fail;
            // an empty string is returned rather than panicking if that were ever untrue.
            Entry::Block { name, value } => {
                (self.block.get(name.0 as usize..name.1 as usize).unwrap_or_default(), self.block.get(value.0 as usize..value.1 as usize).unwrap_or_default())
            }
            Entry::Owned(k, v) => (k, v),
        }
    }

    /// The first entry called `name`.
    fn find(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| is_named(&self.block, e, name))
    }

    /// The value of the first header called `name`, as the spec requires for repeats.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).map(|e| self.text(e).1)
    }

    /// [`Headers::get`] as a string that shares the frame's buffer (no copy, no allocation).
    pub fn get_shared(&self, name: &str) -> Option<ByteString> {
        let entry = self.find(name)?;
        Some(match entry {
            Entry::Block { value, .. } => self.block.get(value.0 as usize..value.1 as usize).map_or_else(ByteString::new, |v| self.block.slice_ref(v)),
            Entry::Owned(_, v) => v.clone(),
        })
    }

    /// Appends a header, keeping any earlier one of the same name (which still wins).
    pub fn push(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        self.entries.push(Entry::Owned(name.into(), value.into()));
    }

    /// Sets a header: replaces the first one called `name` and drops later repeats, or appends.
    pub fn set(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        let name = name.into();
        self.remove(&name);
        self.entries.push(Entry::Owned(name, value.into()));
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        let block = &self.block;
        self.entries.retain(|e| !is_named(block, e, name));
    }

    /// Iterates over all headers in wire order, repeats included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|e| self.text(e))
    }

    /// The number of headers, repeats included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Whether `e` (an entry over `block`) is called `name`: compares the name only, no value is sliced.
fn is_named(block: &ByteString, e: &Entry, name: &str) -> bool {
    match e {
        Entry::Block { name: (a, b), .. } => block.as_bytes().get(*a as usize..*b as usize) == Some(name.as_bytes()),
        Entry::Owned(k, _) => &**k == name,
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

/// Header names whose values are secrets and never printed.
const SECRET_HEADERS: [&str; 1] = ["passcode"];

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in self.iter() {
            if SECRET_HEADERS.contains(&k) {
                m.entry(&k, &"<redacted>");
            } else {
                m.entry(&k, &v);
            }
        }
        m.finish()
    }
}

impl<K: Into<ByteString>, V: Into<ByteString>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Headers {
        Headers { block: ByteString::new(), entries: iter.into_iter().map(|(k, v)| Entry::Owned(k.into(), v.into())).collect() }
    }
}

/// One STOMP frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame asks for or reports.
    pub command: Command,
    /// Headers in wire order (without `content-length`, which the codec manages).
    pub headers: Headers,
    /// The body; may hold NULs when it travelled with `content-length`.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Frame {
        Frame { command, headers: Headers::new(), body: Bytes::new() }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) -> Frame {
        self.headers.push(name, value);
        self
    }

    /// Sets the body (builder style).
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Frame");
        d.field("command", &self.command).field("headers", &self.headers);
        match std::str::from_utf8(&self.body) {
            Ok(s) if s.len() <= 256 => d.field("body", &s),
            _ => d.field("body_len", &self.body.len()),
        };
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `set` replaces the first header of a name and drops its repeats, keeping the
    /// others in order; `remove` drops every header of a name, decoded or added.
    #[test]
    fn set_and_remove_keep_the_order_of_the_rest() {
        let mut h: Headers = [("a", "1"), ("b", "2"), ("a", "3"), ("c", "4")].into_iter().collect();
        h.set("a", "5");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("b", "2"), ("c", "4"), ("a", "5")]);
        assert_eq!((h.get("a"), h.get_shared("c").as_deref(), h.get("zz")), (Some("5"), Some("4"), None));
        for i in 0..1000 {
            h.set("receipt", i.to_string());
        }
        assert_eq!((h.len(), h.get("receipt")), (4, Some("999")));
        h.remove("b");
        h.remove("absent");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("c", "4"), ("a", "5"), ("receipt", "999")]);
        let mut decoded = Headers::over_block(ByteString::from_static("x:1\ny:2\nx:3\n"), 3);
        decoded.push_range((0, 1), (2, 3));
        decoded.push_range((4, 5), (6, 7));
        decoded.push_range((8, 9), (10, 11));
        assert_eq!((decoded.get("x"), decoded.get_shared("y").as_deref()), (Some("1"), Some("2")), "the first of repeats wins");
        decoded.set("x", "9");
        assert_eq!(decoded.iter().collect::<Vec<_>>(), [("y", "2"), ("x", "9")]);
    }
}
