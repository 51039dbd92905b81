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

/// One header: either offsets into the decoded header block, or owned strings.
#[derive(Clone)]
enum Entry {
    /// In [`Headers::block`]: the name is `start..colon`, the value `colon + 1..end`.
    Block { start: u32, colon: u32, end: u32 },
    /// A header added by code, or one whose escapes were undone (boxed: sixteen bytes an entry).
    Owned(Box<(ByteString, ByteString)>),
}

/// How many decoded headers a [`Headers`] holds without allocating: a MESSAGE from
/// RabbitMQ or dk-broker has four or five besides `content-length`.
const INLINE: usize = 6;

/// Where a [`Headers`] keeps its entries.
#[derive(Clone)]
enum Entries {
    /// Up to [`INLINE`] decoded lines, as `(start, colon, end)` offsets into the block:
    /// no allocation per decoded frame (the allocator's slow paths were ~10 % of a
    /// consumer's instructions), and small enough that a frame is still cheap to move.
    Lines { len: u8, at: [[u16; 3]; INLINE] },
    /// Everything else: more lines, lines past 64 KiB of block, owned headers.
    List(Vec<Entry>),
}

impl Entries {
    /// The inline lines and the list: one of the two is empty.
    fn parts(&self) -> (&[[u16; 3]], &[Entry]) {
        match self {
            Entries::Lines { len, at } => (at.get(..usize::from(*len)).unwrap_or_default(), &[]),
            Entries::List(v) => (&[], v),
        }
    }

    /// The entries as a list, moving inline lines into one first.
    fn list(&mut self) -> &mut Vec<Entry> {
        if let Entries::Lines { .. } = self {
            let (lines, _) = self.parts();
            let mut v = Vec::with_capacity(lines.len() + 2);
            v.extend(lines.iter().map(|&[start, colon, end]| Entry::Block { start: start.into(), colon: colon.into(), end: end.into() }));
            *self = Entries::List(v);
        }
        match self {
            Entries::List(v) => v,
            Entries::Lines { .. } => unreachable!("converted above"),
        }
    }
}

/// Where the first header of a name was found.
enum Found<'a> {
    /// Its value is `start..end` of the block.
    Block(usize, usize),
    /// Its value is owned.
    Owned(&'a ByteString),
}

/// An ordered list of headers; repeated names are kept, and the first one wins on lookup.
///
/// Decoded headers are ranges into the frame's header block (one shared
/// buffer per frame; up to six of them kept inline, so decoding allocates
/// nothing for them); headers added by code are owned strings.
#[derive(Clone)]
pub struct Headers {
    /// The decoded header block, valid UTF-8; empty for frames built by code.
    block: ByteString,
    entries: Entries,
}

impl Default for Headers {
    fn default() -> Headers {
        Headers::new()
    }
}

impl Headers {
    /// An empty header list.
    pub const fn new() -> Headers {
        Headers { block: ByteString::new(), entries: Entries::Lines { len: 0, at: [[0; 3]; INLINE] } }
    }

    /// An empty header list with room for `n` entries.
    pub fn with_capacity(n: usize) -> Headers {
        Headers { block: ByteString::new(), entries: Entries::List(Vec::with_capacity(n)) }
    }

    /// A header list over a decoded header block of `lines` header lines (the codec fills it with [`Headers::push_line`]).
    #[inline]
    pub(crate) fn over_block(block: ByteString, lines: usize) -> Headers {
        let entries = if lines <= INLINE { Entries::Lines { len: 0, at: [[0; 3]; INLINE] } } else { Entries::List(Vec::with_capacity(lines)) };
        Headers { block, entries }
    }

    /// Appends the header on the block's line `start..end` whose colon is at `colon`.
    /// The offsets must lie on character boundaries of the block (the codec cuts at ASCII bytes).
    #[inline]
    pub(crate) fn push_line(&mut self, start: usize, colon: usize, end: usize) {
        debug_assert!(self.block.get(start..colon).is_some() && self.block.get(colon + 1..end).is_some());
        if let Entries::Lines { len, at } = &mut self.entries {
            if let (Some(slot), Ok(end16)) = (at.get_mut(usize::from(*len)), u16::try_from(end)) {
                // `start < colon < end`, so the two others fit as well.
                *slot = [start as u16, colon as u16, end16];
                *len += 1;
                return;
            }
        }
        self.entries.list().push(Entry::Block { start: start as u32, colon: colon as u32, end: end as u32 });
    }

    /// `start..end` of the block as text (empty if not a character range, which the codec never makes).
    fn slice(&self, start: usize, end: usize) -> &str {
        self.block.get(start..end).unwrap_or_default()
    }

    /// The name and value of the block's line `start..end` whose colon is at `colon`.
    fn line(&self, start: usize, colon: usize, end: usize) -> (&str, &str) {
        (self.slice(start, colon), self.slice(colon + 1, end))
    }

    /// The text of one entry.
    fn text<'a>(&'a self, e: &'a Entry) -> (&'a str, &'a str) {
        match e {
            Entry::Block { start, colon, end } => self.line(*start as usize, *colon as usize, *end as usize),
            Entry::Owned(pair) => (&pair.0, &pair.1),
        }
    }

    /// The first header called `name`.
    #[inline]
    fn find(&self, name: &str) -> Option<Found<'_>> {
        let (lines, list) = self.entries.parts();
        let block = self.block.as_bytes();
        for &[start, colon, end] in lines {
            if names(block, start.into(), colon.into(), name) {
                return Some(Found::Block(usize::from(colon) + 1, usize::from(end)));
            }
        }
        list.iter().find(|e| is_named(&self.block, e, name)).map(|e| match e {
            Entry::Block { colon, end, .. } => Found::Block(*colon as usize + 1, *end as usize),
            Entry::Owned(pair) => Found::Owned(&pair.1),
        })
    }

    /// The value of the first header called `name`, as the spec requires for repeats.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&str> {
        Some(match self.find(name)? {
            Found::Block(start, end) => self.slice(start, end),
            Found::Owned(v) => v,
        })
    }

    /// [`Headers::get`] as a string that shares the frame's buffer (no copy, no allocation).
    #[inline]
    pub fn get_shared(&self, name: &str) -> Option<ByteString> {
        Some(match self.find(name)? {
            Found::Block(start, end) => self.block.get(start..end).map_or_else(ByteString::new, |v| self.block.slice_ref(v)),
            Found::Owned(v) => v.clone(),
        })
    }

    /// Appends a header, keeping any earlier one of the same name (which still wins).
    pub fn push(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        self.entries.list().push(Entry::Owned(Box::new((name.into(), value.into()))));
    }

    /// Sets a header: replaces the first one called `name` and drops later repeats, or appends.
    pub fn set(&mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) {
        let name = name.into();
        self.remove(&name);
        self.entries.list().push(Entry::Owned(Box::new((name, value.into()))));
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        if self.find(name).is_none() {
            return;
        }
        let Headers { block, entries } = self;
        entries.list().retain(|e| !is_named(block, e, name));
    }

    /// Iterates over all headers in wire order, repeats included.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let (lines, list) = self.entries.parts();
        let lines = lines.iter().map(|&[start, colon, end]| self.line(start.into(), colon.into(), end.into()));
        lines.chain(list.iter().map(|e| self.text(e)))
    }

    /// The number of headers, repeats included.
    pub fn len(&self) -> usize {
        let (lines, list) = self.entries.parts();
        lines.len() + list.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `e` (an entry over `block`) is called `name`: compares the name only, no value is sliced.
fn is_named(block: &ByteString, e: &Entry, name: &str) -> bool {
    match e {
        Entry::Block { start, colon, .. } => names(block.as_bytes(), *start as usize, *colon as usize, name),
        Entry::Owned(pair) => &*pair.0 == name,
    }
}

/// Whether the block's line starting at `start`, with its colon at `colon`, is the header `name`.
#[inline]
fn names(block: &[u8], start: usize, colon: usize, name: &str) -> bool {
    block.get(start..colon) == Some(name.as_bytes())
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
        Headers { block: ByteString::new(), entries: Entries::List(iter.into_iter().map(|(k, v)| Entry::Owned(Box::new((k.into(), v.into())))).collect()) }
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
    #[inline]
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
        decoded.push_line(0, 1, 3);
        decoded.push_line(4, 5, 7);
        decoded.push_line(8, 9, 11);
        assert_eq!((decoded.get("x"), decoded.get_shared("y").as_deref()), (Some("1"), Some("2")), "the first of repeats wins");
        decoded.set("x", "9");
        assert_eq!(decoded.iter().collect::<Vec<_>>(), [("y", "2"), ("x", "9")]);
    }

    /// Decoded lines are kept inline up to `INLINE`, then in a list: past that count,
    /// past 64 KiB of header block, or once code adds a header; order, lookups and
    /// repeats are the same either way.
    #[test]
    fn decoded_headers_move_to_a_list_and_keep_their_order() {
        let text: String = (0..9).map(|i| format!("h{i}:{i}\n")).collect();
        let lines: Vec<(usize, usize, usize)> = (0..9).map(|i| (i * 5, i * 5 + 2, i * 5 + 4)).collect();
        let want: Vec<(String, String)> = (0..9).map(|i| (format!("h{i}"), i.to_string())).collect();
        let of = |h: &Headers| h.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect::<Vec<_>>();
        for n in [0, 1, INLINE, INLINE + 1, 9] {
            let mut h = Headers::over_block(ByteString::from(text.clone()), n);
            for &(start, colon, end) in &lines[..n] {
                h.push_line(start, colon, end);
            }
            assert_eq!((of(&h), h.len(), h.is_empty()), (want[..n].to_vec(), n, n == 0), "{n} lines");
            h.push("added", "yes");
            assert_eq!(of(&h).last().map(|(k, v)| (k.as_str(), v.as_str())), Some(("added", "yes")));
            assert_eq!(of(&h)[..n], want[..n], "{n} lines, then one added");
            if n > 0 {
                assert_eq!((h.get("h0"), h.get_shared("h0").as_deref()), (Some("0"), Some("0")));
            }
        }
        // A line beyond 64 KiB of block does not fit the inline offsets.
        let far = format!("{}\nfar:away\nnear:by\n", "x".repeat(70_000));
        let mut h = Headers::over_block(ByteString::from(far), 2);
        h.push_line(70_001, 70_004, 70_009);
        h.push_line(70_010, 70_014, 70_017);
        assert_eq!(h.iter().collect::<Vec<_>>(), [("far", "away"), ("near", "by")]);
        h.remove("far");
        assert_eq!((h.get("far"), h.get("near"), h.len()), (None, Some("by"), 1));
    }
}
