//! The STOMP layer's public error type; bindings map its kinds to their own.

use super::codec::FrameError;
use super::url::UrlError;

/// Everything that can go wrong on the bus, as one enum whose variants callers can match.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker URL is malformed.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// Bytes on the wire were not valid STOMP, or a frame could not be encoded.
    #[error("protocol error: {0}")]
    Frame(#[from] FrameError),
    /// A TCP connection could not be made.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint tried (password redacted).
        endpoint: String,
        /// The underlying socket error.
        source: std::io::Error,
    },
    /// TLS set-up or handshake failed.
    #[error("TLS error with {endpoint}: {why}")]
    Tls {
        /// The endpoint tried (password redacted).
        endpoint: String,
        /// What failed.
        why: String,
    },
    /// The broker refused the session (bad login, unknown vhost, unsupported version).
    #[error("broker {endpoint} refused the connection: {message}")]
    Refused {
        /// The endpoint tried (password redacted).
        endpoint: String,
        /// The broker's `message` header and body.
        message: String,
    },
    /// The broker sent an ERROR frame on an open session.
    #[error("broker error: {message}")]
    Server {
        /// The broker's `message` header.
        message: String,
        /// The ERROR frame's body, often with details.
        details: String,
    },
    /// Nothing answered in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// The connection dropped before a RECEIPT arrived: the broker may or may not have the frame.
    #[error("connection lost before receipt {receipt} arrived; the broker may or may not have processed the frame, resend if it is idempotent")]
    ReceiptLost {
        /// The receipt id that never came.
        receipt: String,
    },
    /// Every broker of the failover list failed and the attempt limit is reached.
    #[error("{reason}")]
    GaveUp {
        /// What happened, with the last connection error's text.
        reason: String,
        /// The last connection attempt's error, when there was one (see [`Error::root`]).
        last: Option<std::sync::Arc<Error>>,
    },
    /// The client was closed (DISCONNECT or dropped).
    #[error("client is closed")]
    Closed,
    /// The request makes no sense in this state or version (e.g. NACK on STOMP 1.0).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Reading TLS material or another local file failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the connection was already gone or going (closed, given up, receipt
    /// lost, no answer): closing or unsubscribing then has nothing left to undo.
    pub fn is_connection_gone(&self) -> bool {
        matches!(self, Error::Closed | Error::GaveUp { .. } | Error::ReceiptLost { .. } | Error::Timeout { .. })
    }

    /// A stable short name of the kind of error that decided the outcome (see
    /// [`Error::root`]): `invalid-url`, `protocol`, `connect`, `tls`, `refused`,
    /// `server`, `timeout`, `receipt-lost`, `closed`, `invalid-request` or `io`.
    /// Bindings put it in their exceptions.
    pub fn kind(&self) -> &'static str {
        match self.root() {
            Error::Url(_) => "invalid-url",
            Error::Frame(_) => "protocol",
            Error::Connect { .. } | Error::GaveUp { .. } => "connect",
            Error::Tls { .. } => "tls",
            Error::Refused { .. } => "refused",
            Error::Server { .. } => "server",
            Error::Timeout { .. } => "timeout",
            Error::ReceiptLost { .. } => "receipt-lost",
            Error::Closed => "closed",
            Error::Invalid(_) => "invalid-request",
            Error::Io { .. } => "io",
        }
    }

    /// The error that decided the outcome: for [`Error::GaveUp`], the last
    /// connection attempt's error (refused login, TLS, timeout…); otherwise itself.
    /// Bindings map this one to their error kinds.
    pub fn root(&self) -> &Error {
        match self {
            Error::GaveUp { last: Some(last), .. } => last.root(),
            other => other,
        }
    }
}

/// The STOMP layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
