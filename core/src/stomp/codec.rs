//! The STOMP wire codec: bytes to [`Frame`]s and back, for STOMP 1.0, 1.1 and 1.2.
//!
//! Decoding is incremental: the decoder remembers how far it has scanned, so a
//! frame that arrives one byte at a time costs linear, not quadratic, work.

use super::frame::{ByteString, Command, Frame, Headers};
use super::scan::{block_marks, next_mark};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;
use tokio_util::codec::{Decoder, Encoder};

/// A STOMP protocol version; it decides how header values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no heart-beats, no NACK.
    V1_0,
    /// STOMP 1.1: escapes `\n`, `:` and `\\`; heart-beats.
    V1_1,
    /// STOMP 1.2: also escapes `\r`; `id` header on ACK/NACK.
    V1_2,
}

impl Version {
    /// All versions, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses `1.0`, `1.1` or `1.2`.
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds on what the decoder accepts, so a hostile peer cannot exhaust memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame (command, headers and body) in bytes.
    pub max_frame_size: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest single header line in bytes.
    pub max_header_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_frame_size: 16 * 1024 * 1024, max_headers: 1000, max_header_len: 64 * 1024 }
    }
}

impl Limits {
    /// Small limits for a peer that has not logged in yet: 8 KiB frames, 32 headers of at most 4 KiB.
    pub const fn pre_login() -> Limits {
        Limits { max_frame_size: 8 * 1024, max_headers: 32, max_header_len: 4 * 1024 }
    }
}

/// Why bytes could not be decoded into a frame, or a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed underneath the codec.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The first line is not a STOMP command.
    #[error("unknown STOMP command {0:?}")]
    UnknownCommand(String),
    /// The frame is larger than [`Limits::max_frame_size`].
    #[error("frame of at least {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Bytes seen or announced so far.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The frame has more headers than [`Limits::max_headers`].
    #[error("frame has more than {limit} headers")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// A header line is longer than [`Limits::max_header_len`].
    #[error("header line exceeds the limit of {limit} bytes")]
    HeaderTooLong {
        /// The configured limit.
        limit: usize,
    },
    /// A header line has no `:`.
    #[error("malformed header line {0:?} (no ':')")]
    MalformedHeader(String),
    /// A header holds a backslash sequence the version does not define.
    #[error("undefined escape sequence {0:?} in header")]
    BadEscape(String),
    /// The `content-length` header is not a number.
    #[error("invalid content-length {0:?}")]
    BadContentLength(String),
    /// The byte after a `content-length` body is not NUL.
    #[error("frame body of content-length {0} is not followed by NUL")]
    MissingNul(usize),
    /// A command or header is not UTF-8.
    #[error("frame header is not valid UTF-8")]
    NotUtf8,
    /// A header cannot be written in this version (e.g. a newline under STOMP 1.0).
    #[error("header {name:?} cannot be encoded in STOMP {version}: {why}")]
    Unencodable {
        /// The header's name.
        name: String,
        /// The version in force.
        version: Version,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// What the decoder yields: a frame, or a heart-beat (one or more bare EOLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete frame.
    Frame(Frame),
    /// One or more EOLs between frames: the peer is alive.
    Heartbeat,
}

/// An EOL heart-beat to write between frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat;

/// Where the decoder stands within the frame being read.
#[derive(Debug)]
enum State {
    /// Looking for the blank line that ends the headers.
    Head {
        /// Bytes already scanned for a newline.
        scanned: usize,
        /// Start of the line being scanned.
        line_start: usize,
        /// Offset of the first colon seen on that line, or [`NO_COLON`].
        colon: usize,
    },
    /// Headers parsed; waiting for the body.
    Body {
        /// The parsed command.
        command: Command,
        /// The parsed headers, `content-length` removed.
        headers: Headers,
        /// Length of the header block already split off (for the size limit).
        head_len: usize,
        /// The announced body length, if any.
        content_length: Option<usize>,
        /// Bytes of body already scanned for the NUL terminator.
        scanned: usize,
    },
}

impl Default for State {
    fn default() -> State {
        State::Head { scanned: 0, line_start: 0, colon: NO_COLON }
    }
}

/// [`Line::colon`] of a line without one.
const NO_COLON: usize = usize::MAX;

/// Where one line of the header block being read lies in the buffer (its CR, if any, left out).
#[derive(Debug, Clone, Copy)]
struct Line {
    /// Offset of the line's first byte.
    start: usize,
    /// Offset of its first colon (the end of a header's name), or [`NO_COLON`].
    colon: usize,
    /// Offset just past its last byte, before the CR LF or LF.
    end: usize,
}

/// How many line records the decoder keeps room for between frames; a frame with
/// more lines (up to the header limit) grows the buffer, and the next frame shrinks it back.
const MOST_LINES_KEPT: usize = 64;

/// The STOMP codec: a tokio-util `Decoder` of [`Incoming`] and `Encoder` of [`Frame`] and [`Heartbeat`].
#[derive(Debug, Default)]
pub struct StompCodec {
    version: Option<Version>,
    limits: Limits,
    state: State,
    /// The lines of the header block being read, as `scan_head` finds them, so that
    /// `parse_head` need not look for them again (reused from frame to frame).
    lines: Vec<Line>,
}

impl StompCodec {
    /// A codec for `version` (escaping rules) with default limits.
    pub fn new(version: Version) -> StompCodec {
        StompCodec { version: Some(version), ..StompCodec::default() }
    }

    /// A codec with explicit limits.
    pub fn with_limits(version: Version, limits: Limits) -> StompCodec {
        StompCodec { version: Some(version), limits, state: State::default(), lines: Vec::new() }
    }

    /// The version whose escaping rules are in force (1.2 until negotiated).
    pub fn version(&self) -> Version {
        self.version.unwrap_or(Version::V1_2)
    }

    /// Switches escaping rules once a version is negotiated.
    pub fn set_version(&mut self, version: Version) {
        self.version = Some(version);
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Changes the limits from the next frame on (e.g. the broker's small pre-login limits, then the normal ones).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }
}

/// Index of the first NUL in `buf`.
fn find_nul(buf: &[u8]) -> Option<usize> {
    memchr::memchr(0, buf)
}

impl Decoder for StompCodec {
    type Item = Incoming;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        if let State::Head { scanned: 0, .. } = self.state {
            // Heart-beats: EOLs between frames.
            let mut eols = 0;
            loop {
                match buf.get(eols) {
                    Some(b'\n') => eols += 1,
                    Some(b'\r') => match buf.get(eols + 1) {
                        Some(b'\n') => eols += 2,
                        Some(_) => break,
                        None if eols == 0 => return Ok(None),
                        None => break,
                    },
                    _ => break,
                }
            }
            if eols > 0 {
                buf.advance(eols);
                return Ok(Some(Incoming::Heartbeat));
            }
        }
        let limit = self.limits.max_frame_size;
        if let State::Body { head_len, content_length, scanned, .. } = &mut self.state {
            // A head read by an earlier call, waiting for its body: only new bytes are searched.
            let Some(end) = body_end(buf, *head_len, *content_length, scanned, limit)? else {
                return Ok(None);
            };
            let State::Body { command, headers, .. } = std::mem::take(&mut self.state) else { unreachable!() };
            return Ok(Some(finish_frame(buf, command, headers, end)));
        }
        let Some(head_end) = self.scan_head(buf)? else {
            return Ok(None);
        };
        // The next frame's scan starts afresh.
        self.state = State::default();
        // The header block is split off and frozen: headers become slices of it.
        let head = buf.split_to(head_end).freeze();
        let (command, headers, content_length) = parse_head(head, self.version(), &self.lines)?;
        if let Some(len) = content_length {
            let size = head_end.saturating_add(len);
            if size > limit {
                return Err(FrameError::FrameTooLarge { size, limit });
            }
            buf.reserve((len + 1).saturating_sub(buf.len()));
        }
        // Usually the body is already there: the frame is made without keeping its head.
        let mut scanned = 0;
        match body_end(buf, head_end, content_length, &mut scanned, limit)? {
            Some(end) => Ok(Some(finish_frame(buf, command, headers, end))),
            None => {
                self.state = State::Body { command, headers, head_len: head_end, content_length, scanned };
                Ok(None)
            }
        }
    }
}

/// Where a body ends (at its NUL) once all of it is in `buf`, `None` while it is not;
/// `scanned`: how much of a NUL-terminated body earlier calls searched already.
fn body_end(buf: &[u8], head_len: usize, content_length: Option<usize>, scanned: &mut usize, limit: usize) -> Result<Option<usize>, FrameError> {
    let end = match content_length {
        Some(len) if buf.len() > len => {
            if buf[len] != 0 {
                return Err(FrameError::MissingNul(len));
            }
            len
        }
        Some(_) => return Ok(None),
        None => match find_nul(&buf[*scanned..]) {
            Some(i) => *scanned + i,
            None => {
                *scanned = buf.len();
                if head_len + buf.len() > limit {
                    return Err(FrameError::FrameTooLarge { size: head_len + buf.len(), limit });
                }
                return Ok(None);
            }
        },
    };
    if head_len + end > limit {
        return Err(FrameError::FrameTooLarge { size: head_len + end, limit });
    }
    Ok(Some(end))
}

/// Splits off a frame's body (`end` bytes, then its NUL and any EOLs after it) and makes the frame.
fn finish_frame(buf: &mut BytesMut, command: Command, headers: Headers, end: usize) -> Incoming {
    let body: Bytes = buf.split_to(end).freeze();
    // The NUL, then any EOLs after it: they belong to this frame (STOMP 1.2 grammar).
    let mut skip = 1;
    while let Some(&b) = buf.get(skip) {
        match b {
            b'\n' => skip += 1,
            b'\r' if buf.get(skip + 1) == Some(&b'\n') => skip += 2,
            _ => break,
        }
    }
    buf.advance(skip);
    Incoming::Frame(Frame { command, headers, body })
}

impl StompCodec {
    /// Scans for the blank line ending the headers; returns the body offset once found.
    /// Each line's end and first colon are found in the same pass and kept in `lines`.
    fn scan_head(&mut self, buf: &BytesMut) -> Result<Option<usize>, FrameError> {
        let limits = self.limits;
        let State::Head { scanned, line_start, colon } = &mut self.state else { unreachable!() };
        if *scanned == 0 {
            // A new frame: forget the last one's lines, and the room a long one took.
            self.lines.clear();
            self.lines.shrink_to(MOST_LINES_KEPT);
        }
        let (mut at, mut start, mut first_colon) = (*scanned, *line_start, *colon);
        loop {
            // Until the line has a colon, its first colon and its end are looked for together.
            let Some(i) = next_mark(buf, at, first_colon == NO_COLON) else {
                (*scanned, *line_start, *colon) = (buf.len(), start, first_colon);
                // A line of exactly the limit may be waiting for the LF after its CR.
                let cr = usize::from(buf.last() == Some(&b'\r'));
                if buf.len() - start > limits.max_header_len + cr {
                    return Err(FrameError::HeaderTooLong { limit: limits.max_header_len });
                }
                return Ok(None);
            };
            at = i + 1;
            if buf[i] == b':' {
                first_colon = i;
                continue;
            }
            let end = if i > start && buf[i - 1] == b'\r' { i - 1 } else { i };
            if end - start > limits.max_header_len {
                return Err(FrameError::HeaderTooLong { limit: limits.max_header_len });
            }
            if start == end && !self.lines.is_empty() {
                return Ok(Some(i + 1));
            }
            self.lines.push(Line { start, colon: first_colon, end });
            if self.lines.len() > limits.max_headers + 1 {
                return Err(FrameError::TooManyHeaders { limit: limits.max_headers });
            }
            if i + 1 > limits.max_frame_size {
                return Err(FrameError::FrameTooLarge { size: i + 1, limit: limits.max_frame_size });
            }
            (start, first_colon) = (i + 1, NO_COLON);
        }
    }
}

/// Parses the command line and header lines of a frame (`head` ends with the blank line;
/// `lines` are where [`StompCodec::scan_head`] found its lines, the command line first).
fn parse_head(head: Bytes, version: Version, lines: &[Line]) -> Result<(Command, Headers, Option<usize>), FrameError> {
    let marks = block_marks(&head);
    let head = if marks.ascii {
        debug_assert!(std::str::from_utf8(&head).is_ok(), "block_marks called a non-ASCII block ASCII");
        // SAFETY: ASCII is valid UTF-8. Header blocks are nearly always ASCII, and the
        // vector pass that found so costs a fraction of `str::from_utf8`'s byte-wise ends.
        unsafe { ByteString::from_bytes_unchecked(head) }
    } else {
        ByteString::try_from(head).map_err(|_| FrameError::NotUtf8)?
    };
    let raw: &[u8] = head.as_bytes();
    let line_of = |l: &Line| raw.get(l.start..l.end).unwrap_or_default();
    let (cmd_line, header_lines) = match lines.split_first() {
        Some((first, rest)) => (line_of(first), rest),
        None => (&b""[..], &[][..]),
    };
    let command = Command::from_bytes(cmd_line).ok_or_else(|| FrameError::UnknownCommand(String::from_utf8_lossy(cmd_line).into_owned()))?;
    // Most frames have no escapes at all; the pass that checked the block for ASCII looked for backslashes too.
    let escaped = version != Version::V1_0 && !command.is_unescaped() && marks.backslash;
    let mut headers = Headers::over_block(head.clone(), header_lines.len());
    let mut content_length = None;
    for l in header_lines {
        // `scan_head` found the first colon; a line without one has `NO_COLON`, past its end.
        if l.colon >= l.end {
            return Err(FrameError::MalformedHeader(String::from_utf8_lossy(line_of(l)).into_owned()));
        }
        let (start, colon, end) = (l.start, l.colon, l.end);
        // The name's length first: a fixed-size compare the compiler inlines.
        if colon - start == 14 && raw.get(start..colon) == Some(&b"content-length"[..]) {
            if content_length.is_none() {
                let text = head.get(colon + 1..end).unwrap_or_default();
                let n = parse_length(text).ok_or_else(|| FrameError::BadContentLength(text.to_owned()))?;
                content_length = Some(n);
            }
            continue;
        }
        // The line, split at its colon, when it holds an escape to undo.
        let to_unescape = escaped.then(|| line_of(l)).filter(|line| memchr::memchr(b'\\', line).is_some());
        match to_unescape.and_then(|line| line.split_at_checked(colon - start)) {
            Some((name, value)) => headers.push(unescape(name, version)?, unescape(value.get(1..).unwrap_or_default(), version)?),
            None => headers.push_line(start, colon, end),
        }
    }
    Ok((command, headers, content_length))
}

/// A `content-length` value: plain ASCII digits take a short loop; anything else
/// (spaces, a sign) goes through `str::parse` as before, so both accept the same values.
fn parse_length(text: &str) -> Option<usize> {
    let digits = text.as_bytes();
    if (1..=9).contains(&digits.len()) {
        // Nine digits fit any usize of 32 bits or more, so no step can overflow.
        let n = digits.iter().try_fold(0usize, |n, &d| {
            let digit = d.wrapping_sub(b'0');
            (digit <= 9).then(|| n * 10 + usize::from(digit))
        });
        if n.is_some() {
            return n;
        }
    }
    text.trim().parse::<usize>().ok()
}

/// Undoes the version's escapes in a header name or value.
fn unescape(raw: &[u8], version: Version) -> Result<ByteString, FrameError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match it.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'c') => out.push(b':'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'r') if version >= Version::V1_2 => out.push(b'\r'),
            Some(&other) => return Err(FrameError::BadEscape(format!("\\{}", other as char))),
            None => return Err(FrameError::BadEscape("\\".into())),
        }
    }
    String::from_utf8(out).map(ByteString::from).map_err(|_| FrameError::NotUtf8)
}

/// The bytes a header escapes (`\n`, `:`, `\\`, `\r`), as a table.
const ESCAPED: [bool; 256] = {
    let mut t = [false; 256];
    t[b'\n' as usize] = true;
    t[b':' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'\r' as usize] = true;
    t
};

/// Whether `bytes` holds none of the four bytes a header escapes. Most values hold
/// none. A short one (a destination, an id) is looked up byte by byte without early
/// exit, which costs less than setting up `memchr` twice; a long one takes memchr's
/// vectorised passes.
#[inline]
fn is_plain(bytes: &[u8]) -> bool {
    if bytes.len() <= 64 {
        return !bytes.iter().fold(false, |seen, &b| seen | ESCAPED[b as usize]);
    }
    memchr::memchr3(b'\n', b':', b'\\', bytes).is_none() && memchr::memchr(b'\r', bytes).is_none()
}

/// Writes a header name or value with the version's escapes (none when `escaped`
/// is false: STOMP 1.0 and CONNECT/CONNECTED); the reason when it cannot be written.
/// On error `dst` may hold a partial write: callers truncate.
pub(crate) fn escape_header(dst: &mut BytesMut, s: &str, escaped: bool, version: Version, is_name: bool) -> Result<(), &'static str> {
    let bytes = s.as_bytes();
    if is_plain(bytes) {
        dst.put_slice(bytes);
        return Ok(());
    }
    if !escaped {
        if memchr::memchr(b'\n', bytes).is_some() {
            return Err("contains a newline");
        }
        if is_name && memchr::memchr(b':', bytes).is_some() {
            return Err("name contains ':'");
        }
        if bytes.last() == Some(&b'\r') {
            return Err("ends with a carriage return");
        }
        dst.put_slice(bytes);
        return Ok(());
    }
    for &b in bytes {
        match b {
            b'\n' => dst.put_slice(b"\\n"),
            b':' => dst.put_slice(b"\\c"),
            b'\\' => dst.put_slice(b"\\\\"),
            b'\r' if version >= Version::V1_2 => dst.put_slice(b"\\r"),
            b'\r' => return Err("contains a carriage return"),
            _ => dst.put_u8(b),
        }
    }
    Ok(())
}

/// [`escape_header`] with the codec's error type.
fn put_escaped(dst: &mut BytesMut, s: &str, name: &str, escaped: bool, version: Version, is_name: bool) -> Result<(), FrameError> {
    escape_header(dst, s, escaped, version, is_name).map_err(|why| FrameError::Unencodable { name: name.to_owned(), version, why })
}

/// The parts of a client SEND, encoded by [`encode_send`] without building a [`Frame`].
pub(crate) struct SendParts<'a> {
    /// `destination` header.
    pub destination: &'a str,
    /// `content-type` header, if any.
    pub content_type: Option<&'a str>,
    /// Whether to add `persistent:true`.
    pub persistent: bool,
    /// Extra headers, after the above.
    pub headers: &'a Headers,
    /// `transaction` header, if any.
    pub transaction: Option<&'a str>,
    /// `receipt` header, if any (it replaces a `receipt` among `headers`).
    pub receipt: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

impl SendParts<'_> {
    /// Whether the SEND has no headers of its own, no transaction and no receipt (what `send()` sends).
    pub(crate) fn is_plain(&self) -> bool {
        self.headers.is_empty() && self.transaction.is_none() && self.receipt.is_none()
    }
}

/// Appends a SEND to `dst`, byte for byte as `Encoder<&Frame>` encodes the equivalent frame;
/// on error `dst` is left as it was.
pub(crate) fn encode_send(dst: &mut BytesMut, version: Version, p: &SendParts<'_>) -> Result<(), FrameError> {
    dst.reserve(64 + p.destination.len() + p.body.len());
    encode_send_head(dst, version, p)?;
    finish_send(dst, p.body);
    Ok(())
}

/// Appends a SEND's command and headers up to, not including, `content-length`
/// (`p.body` is not used): what every SEND of a run with the same parts shares.
/// On error `dst` is left as it was.
#[inline]
pub(crate) fn encode_send_head(dst: &mut BytesMut, version: Version, p: &SendParts<'_>) -> Result<(), FrameError> {
    let escaped = version != Version::V1_0;
    let start = dst.len();
    dst.put_slice(b"SEND\ndestination:");
    let result = (|| {
        put_escaped(dst, p.destination, "destination", escaped, version, false)?;
        dst.put_u8(b'\n');
        if let Some(ct) = p.content_type {
            dst.put_slice(b"content-type:");
            put_escaped(dst, ct, "content-type", escaped, version, false)?;
            dst.put_u8(b'\n');
        }
        if p.persistent {
            dst.put_slice(b"persistent:true\n");
        }
        for (name, value) in p.headers.iter() {
            if name == "content-length" || (p.receipt.is_some() && name == "receipt") {
                continue;
            }
            put_escaped(dst, name, name, escaped, version, true)?;
            dst.put_u8(b':');
            put_escaped(dst, value, name, escaped, version, false)?;
            dst.put_u8(b'\n');
        }
        if let Some(tx) = p.transaction {
            dst.put_slice(b"transaction:");
            put_escaped(dst, tx, "transaction", escaped, version, false)?;
            dst.put_u8(b'\n');
        }
        if let Some(r) = p.receipt {
            dst.put_slice(b"receipt:");
            put_escaped(dst, r, "receipt", escaped, version, false)?;
            dst.put_u8(b'\n');
        }
        Ok(())
    })();
    if result.is_err() {
        dst.truncate(start);
    }
    result
}

/// Ends a SEND begun by [`encode_send_head`]: `content-length`, the blank line, `body` and the NUL.
#[inline]
pub(crate) fn finish_send(dst: &mut BytesMut, body: &[u8]) {
    put_length_line(dst, body.len());
    dst.put_slice(body);
    dst.put_u8(0);
}

/// Writes `content-length:N` and the blank line that ends a head.
fn put_length_line(dst: &mut impl BufMut, len: usize) {
    dst.put_slice(b"content-length:");
    dst.put_slice(itoa::Buffer::new().format(len).as_bytes());
    dst.put_slice(b"\n\n");
}

/// A SEND's head encoded once for a run of bodies (`encode_send_head`'s output), with
/// the `content-length` line of the last body's length after it: a body of the same
/// length (the usual case in a run) is written as one copy of the head, the body and NUL.
#[derive(Debug)]
pub(crate) struct SendHead {
    /// The head, then the length line for `length`.
    bytes: Vec<u8>,
    /// Where the length line starts.
    head_len: usize,
    /// The body length the length line is for.
    length: Option<usize>,
}

impl SendHead {
    /// Encodes the head `parts` share at `version`.
    pub(crate) fn new(version: Version, parts: &SendParts<'_>) -> Result<SendHead, FrameError> {
        let mut head = BytesMut::with_capacity(64 + parts.destination.len());
        encode_send_head(&mut head, version, parts)?;
        Ok(SendHead { head_len: head.len(), bytes: head.into(), length: None })
    }

    /// Writes a whole SEND of `body` under this head: what `encode_send` writes.
    pub(crate) fn put(&mut self, dst: &mut BytesMut, body: &[u8]) {
        if self.length != Some(body.len()) {
            self.bytes.truncate(self.head_len);
            put_length_line(&mut self.bytes, body.len());
            self.length = Some(body.len());
        }
        dst.reserve(self.bytes.len() + body.len() + 1);
        dst.extend_from_slice(&self.bytes);
        dst.extend_from_slice(body);
        dst.put_u8(0);
        prefetch_spare(dst, self.bytes.len() + body.len() + 1);
    }
}

/// The most of a buffer's spare room [`prefetch_spare`] brings in.
const PREFETCH_AT_MOST: usize = 4096;

/// Asks the CPU to bring the first `len` bytes of `dst`'s spare room into its cache: the
/// next SEND is copied there, and the outbox lock's release (a full fence on x86) waits for
/// every store before it; stores to lines already cached drain at once (bench/README.md,
/// "Batched: the lock's release waited for the copy").
#[inline]
fn prefetch_spare(dst: &mut BytesMut, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let spare = dst.spare_capacity_mut();
        // A large frame's copy streams past the cache anyway: only a small one's lines are fetched.
        let n = len.min(spare.len()).min(PREFETCH_AT_MOST);
        let base = spare.as_ptr().cast::<i8>();
        for off in (0..n).step_by(64) {
            // SAFETY: a prefetch reads nothing the program sees and cannot fault; `off < n <=
            // spare.len()`, so the address is inside the buffer's allocation.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(off)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (dst, len);
}

impl Encoder<&Frame> for StompCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let version = self.version();
        let escaped = version != Version::V1_0 && !frame.command.is_unescaped();
        let start = dst.len();
        let estimate = 16 + frame.body.len() + frame.headers.iter().map(|(k, v)| k.len() + v.len() + 2).sum::<usize>();
        dst.reserve(estimate + 24);
        dst.put_slice(frame.command.as_str().as_bytes());
        dst.put_u8(b'\n');
        let result = (|| {
            for (name, value) in frame.headers.iter() {
                if name == "content-length" {
                    continue;
                }
                put_escaped(dst, name, name, escaped, version, true)?;
                dst.put_u8(b':');
                put_escaped(dst, value, name, escaped, version, false)?;
                dst.put_u8(b'\n');
            }
            Ok(())
        })();
        if let Err(e) = result {
            dst.truncate(start);
            return Err(e);
        }
        if !frame.body.is_empty() || matches!(frame.command, Command::Send | Command::Message | Command::Error) {
            dst.put_slice(b"content-length:");
            dst.put_slice(itoa::Buffer::new().format(frame.body.len()).as_bytes());
            dst.put_u8(b'\n');
        }
        dst.put_u8(b'\n');
        dst.put_slice(&frame.body);
        dst.put_u8(0);
        Ok(())
    }
}

impl Encoder<Frame> for StompCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<Heartbeat> for StompCodec {
    type Error = FrameError;

    fn encode(&mut self, _: Heartbeat, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.put_u8(b'\n');
        Ok(())
    }
}

/// Encodes one frame into a fresh buffer (convenience for tests and tools).
pub fn encode_frame(frame: &Frame, version: Version) -> Result<BytesMut, FrameError> {
    let mut dst = BytesMut::new();
    StompCodec::new(version).encode(frame, &mut dst)?;
    Ok(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `encode_send` writes exactly what the frame encoder writes for the same SEND.
    #[test]
    fn encode_send_matches_the_frame_encoder() {
        let extra: Headers = [("x-a", "1"), ("receipt", "theirs"), ("content-length", "99"), ("k:y", "v\nw")].into_iter().collect();
        for version in Version::ALL {
            for (ct, persistent, tx, receipt) in [(None, false, None, None), (Some("text/plain"), true, Some("tx-1"), Some("dk-r-7"))] {
                for headers in [Headers::new(), extra.clone()] {
                    let parts = SendParts { destination: "/queue/a:b", content_type: ct, persistent, headers: &headers, transaction: tx, receipt, body: b"hello\0" };
                    let mut frame = Frame::new(Command::Send).header("destination", "/queue/a:b").with_body(&b"hello\0"[..]);
                    if let Some(ct) = ct {
                        frame.headers.push("content-type", ct);
                    }
                    if persistent {
                        frame.headers.push("persistent", "true");
                    }
                    for (k, v) in headers.iter() {
                        frame.headers.push(k, v);
                    }
                    if let Some(tx) = tx {
                        frame.headers.push("transaction", tx);
                    }
                    if let Some(r) = receipt {
                        frame.headers.set("receipt", r);
                    }
                    let mut ours = BytesMut::from(&b"before"[..]);
                    let expected = encode_frame(&frame, version);
                    match (encode_send(&mut ours, version, &parts), expected) {
                        (Ok(()), Ok(e)) => assert_eq!(&ours[6..], &e[..], "{version}"),
                        (Err(_), Err(_)) => assert_eq!(&ours[..], b"before", "left as it was on error"),
                        (a, b) => panic!("{version}: {a:?} vs {b:?}"),
                    }
                }
            }
        }
    }

    /// `get_shared` returns what `get` returns, sharing the decoded header block
    /// (a slice of the input, no copy) unless escapes were undone.
    #[test]
    fn get_shared_slices_the_header_block() {
        let wire = b"MESSAGE\ndestination:/topic/a.b\nx-esc:a\\cb\ndestination:/topic/second\ncontent-length:2\n\nhi\0";
        let mut buf = BytesMut::from(&wire[..]);
        let start = buf.as_ptr() as usize;
        let Ok(Some(Incoming::Frame(frame))) = StompCodec::new(Version::V1_2).decode(&mut buf) else { panic!("no frame") };
        let dest = frame.headers.get_shared("destination").expect("destination");
        assert_eq!((&*dest, frame.get("destination")), ("/topic/a.b", Some("/topic/a.b")), "the first of repeats wins");
        let at = dest.as_ptr() as usize;
        assert!(at >= start && at < start + wire.len(), "destination was copied out of the frame's buffer");
        assert_eq!(frame.headers.get_shared("x-esc").as_deref(), Some("a:b"), "escapes undone");
        assert_eq!(frame.headers.get_shared("absent"), None);
        let built = Frame::new(Command::Send).header("destination", "/queue/x");
        assert_eq!(built.headers.get_shared("destination").as_deref(), Some("/queue/x"));
    }

    /// A frame with many header lines grows the decoder's line records; the next frame
    /// gives that room back, so a peer cannot leave a large buffer behind on every connection.
    #[test]
    fn many_header_lines_leave_no_large_line_buffer_behind() {
        let mut codec = StompCodec::new(Version::V1_2);
        let mut wire = b"MESSAGE\n".to_vec();
        for i in 0..900 {
            wire.extend_from_slice(format!("x-{i}:{i}\n").as_bytes());
        }
        wire.extend_from_slice(b"\nbig\0MESSAGE\r\nx-a:1\r\nx-b\\c:2\n\nsmall\0");
        let mut buf = BytesMut::from(&wire[..]);
        let Ok(Some(Incoming::Frame(big))) = codec.decode(&mut buf) else { panic!("no first frame") };
        assert_eq!((big.headers.len(), big.get("x-899"), &big.body[..]), (900, Some("899"), &b"big"[..]));
        assert!(codec.lines.capacity() >= 901);
        let Ok(Some(Incoming::Frame(small))) = codec.decode(&mut buf) else { panic!("no second frame") };
        assert_eq!(small.headers.iter().collect::<Vec<_>>(), [("x-a", "1"), ("x-b:", "2")]);
        assert_eq!(&small.body[..], b"small");
        assert!(codec.lines.capacity() <= MOST_LINES_KEPT, "kept room for {} lines", codec.lines.capacity());
    }

    /// `is_plain` finds each escaped byte at every position, in short and long values.
    #[test]
    fn is_plain_finds_every_escaped_byte_anywhere() {
        for len in 0..=130 {
            let clean = vec![b'a'; len];
            assert!(is_plain(&clean), "{len}");
            for at in 0..len {
                for special in [b'\n', b':', b'\\', b'\r'] {
                    let mut v = clean.clone();
                    v[at] = special;
                    assert!(!is_plain(&v), "{len} {at} {special}");
                }
            }
        }
    }

    /// The one-pass scan finds each line's end and first colon as a plain search would:
    /// names and values of every length across the scan's 16- and 8-byte windows, LF or CR LF, more
    /// colons in the value, and the frame arriving in two pieces split anywhere.
    #[test]
    fn header_lines_are_found_like_a_plain_search() {
        for name_len in 1..12 {
            for value_len in 0..20 {
                for eol in ["\n", "\r\n"] {
                    let name = "n".repeat(name_len);
                    let value: String = (0..value_len).map(|i| if i % 5 == 2 { ':' } else { 'v' }).collect();
                    let wire = format!("SEND{eol}a:1{eol}{name}:{value}{eol}zz:{eol}{eol}body\0");
                    let want = [("a", "1"), (name.as_str(), value.as_str()), ("zz", "")];
                    for split in 0..=wire.len() {
                        let mut codec = StompCodec::new(Version::V1_2);
                        let mut buf = BytesMut::from(&wire.as_bytes()[..split]);
                        let mut got = codec.decode(&mut buf).unwrap();
                        if got.is_none() {
                            buf.extend_from_slice(&wire.as_bytes()[split..]);
                            got = codec.decode(&mut buf).unwrap();
                        }
                        let Some(Incoming::Frame(f)) = got else { panic!("no frame: {wire:?} split at {split}") };
                        assert_eq!(f.headers.iter().collect::<Vec<_>>(), want, "{wire:?} split at {split}");
                        assert_eq!(&f.body[..], b"body");
                    }
                }
            }
        }
    }

    /// A `content-length` is read the same whether it takes the short loop or `str::parse`.
    #[test]
    fn content_lengths_parse_as_before() {
        for text in
            ["0", "7", "1024", "000123", "999999999999999999", "18446744073709551615", "18446744073709551616", " 5", "5 ", "+5", "-5", "", "1a", "١٢", "12345678901234567890123"]
        {
            assert_eq!(parse_length(text), text.trim().parse::<usize>().ok(), "{text:?}");
        }
    }
}
