//! Result codes (`dk_result`) and error objects (`dk_error`).
//!
//! Every fallible export returns a `dk_result` and, when its `dk_error **err`
//! argument is not NULL and the call fails, stores a `dk_error` with a
//! human-readable message there. Core's error kinds map to ranged codes here
//! and nowhere else.

use deploykit::message::publisher::PublishError;
use deploykit::message::MessageError;
use deploykit::stomp;
use std::ffi::{c_char, CString};
use std::ptr;

/// What a call did. `DK_OK` is 0; failures are grouped in ranges:
/// 1xxx argument and usage errors (nothing was attempted), 2xxx connection
/// errors, 3xxx protocol and broker errors, 4xxx message errors, 9999 a bug
/// in the library (an internal panic, caught at the boundary).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum dk_result {
    /// Success.
    DK_OK = 0,
    /// A required pointer argument (or a required field of a struct argument) was NULL.
    DK_ERR_NULL_ARGUMENT = 1001,
    /// A string argument (or field) was not valid UTF-8.
    DK_ERR_NOT_UTF8 = 1002,
    /// The broker URL is malformed or has an unsupported scheme or option.
    DK_ERR_INVALID_URL = 1003,
    /// An argument has a value outside its range: an unknown enum value, an
    /// index past the end, a polling call on a callback subscription.
    DK_ERR_INVALID_ARGUMENT = 1004,
    /// A blocking call was made from a deploykit callback, that is on the
    /// library's I/O thread, where it would deadlock. Nothing was done.
    DK_ERR_IN_CALLBACK = 1005,
    /// The combination asked for is not supported by this version.
    DK_ERR_UNSUPPORTED = 1006,
    /// No connection could be made to any broker (refused, unreachable, name
    /// not resolved, handshake failed) before the attempt limit.
    DK_ERR_CONNECT = 2001,
    /// TLS set-up or handshake failed.
    DK_ERR_TLS = 2002,
    /// Nothing answered in time (connect, receipt).
    DK_ERR_TIMEOUT = 2003,
    /// The client is closed (disconnected, or it gave up reconnecting).
    DK_ERR_CLOSED = 2004,
    /// The connection dropped before the broker's RECEIPT arrived: the broker may
    /// or may not have the message. Resend only if that is harmless.
    DK_ERR_RECEIPT_LOST = 2005,
    /// A local I/O error (starting the I/O thread, reading TLS files).
    DK_ERR_IO = 2006,
    /// The broker sent bytes that are not valid STOMP, or a frame could not be encoded.
    DK_ERR_PROTOCOL = 3001,
    /// The broker refused the session (bad login or passcode, unknown vhost, version).
    DK_ERR_REFUSED = 3002,
    /// The broker sent an ERROR frame on an open session.
    DK_ERR_SERVER = 3003,
    /// The request makes no sense in this state or protocol version (NACK on
    /// STOMP 1.0, ACK of a message from before a reconnect).
    DK_ERR_INVALID_REQUEST = 3004,
    /// A message field is invalid (e.g. an empty repo or refname).
    DK_ERR_MESSAGE_INVALID = 4001,
    /// A message's `dk-version` is not one this library reads.
    DK_ERR_MESSAGE_VERSION = 4002,
    /// A message's `dk-type` names no known kind.
    DK_ERR_MESSAGE_TYPE = 4003,
    /// A message's JSON body is broken or does not fit its schema.
    DK_ERR_MESSAGE_JSON = 4004,
    /// A body without `dk-type` that matches none of the legacy formats.
    DK_ERR_MESSAGE_UNRECOGNISED = 4005,
    /// An internal error (a Rust panic) was caught at the API boundary: a bug,
    /// please report it. The object involved should not be used any more except
    /// to free it.
    DK_ERR_PANIC = 9999,
}

use dk_result::*;

impl dk_result {
    /// A short, static description of the code.
    pub(crate) fn describe(code: u32) -> &'static str {
        match code {
            0 => "DK_OK: success\0",
            1001 => "DK_ERR_NULL_ARGUMENT: a required argument was NULL\0",
            1002 => "DK_ERR_NOT_UTF8: a string was not valid UTF-8\0",
            1003 => "DK_ERR_INVALID_URL: invalid broker URL\0",
            1004 => "DK_ERR_INVALID_ARGUMENT: an argument is out of range\0",
            1005 => "DK_ERR_IN_CALLBACK: blocking call from a deploykit callback\0",
            1006 => "DK_ERR_UNSUPPORTED: not supported\0",
            2001 => "DK_ERR_CONNECT: could not connect to any broker\0",
            2002 => "DK_ERR_TLS: TLS error\0",
            2003 => "DK_ERR_TIMEOUT: timed out\0",
            2004 => "DK_ERR_CLOSED: client is closed\0",
            2005 => "DK_ERR_RECEIPT_LOST: connection lost before the receipt arrived\0",
            2006 => "DK_ERR_IO: local I/O error\0",
            3001 => "DK_ERR_PROTOCOL: STOMP protocol error\0",
            3002 => "DK_ERR_REFUSED: broker refused the session\0",
            3003 => "DK_ERR_SERVER: broker error\0",
            3004 => "DK_ERR_INVALID_REQUEST: invalid request in this state\0",
            4001 => "DK_ERR_MESSAGE_INVALID: invalid message field\0",
            4002 => "DK_ERR_MESSAGE_VERSION: unsupported dk-version\0",
            4003 => "DK_ERR_MESSAGE_TYPE: unknown dk-type\0",
            4004 => "DK_ERR_MESSAGE_JSON: bad JSON body\0",
            4005 => "DK_ERR_MESSAGE_UNRECOGNISED: not a deploykit message\0",
            9999 => "DK_ERR_PANIC: internal error (bug)\0",
            _ => "unknown dk_result code\0",
        }
    }
}

/// An error: a code and a message. Returned through `dk_error **err`
/// arguments; free it with dk_error_free().
#[allow(non_camel_case_types)]
pub struct dk_error {
    _private: [u8; 0],
}

/// What a `dk_error` pointer really points to.
pub(crate) struct ErrorData {
    code: dk_result,
    message: CString,
}

/// A failed call inside the library, before it is handed to C.
#[derive(Debug)]
pub(crate) struct Failure {
    pub code: dk_result,
    pub message: String,
}

impl Failure {
    pub fn new(code: dk_result, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }

    /// A required argument was NULL.
    pub fn null(what: &str) -> Failure {
        Failure::new(DK_ERR_NULL_ARGUMENT, format!("argument `{what}` is NULL"))
    }

    /// A string argument was not UTF-8.
    pub fn not_utf8(what: &str) -> Failure {
        Failure::new(DK_ERR_NOT_UTF8, format!("argument `{what}` is not valid UTF-8"))
    }

    /// An argument is out of range.
    pub fn invalid(what: &str, why: impl std::fmt::Display) -> Failure {
        Failure::new(DK_ERR_INVALID_ARGUMENT, format!("argument `{what}`: {why}"))
    }

    /// A panic payload caught at the boundary.
    pub fn panic(payload: Box<dyn std::any::Any + Send>) -> Failure {
        let what = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into());
        Failure::new(DK_ERR_PANIC, format!("internal error in libdeploykit (please report it): {what}"))
    }

    /// Stores the failure in `*err` (if `err` is not NULL) and returns its code.
    pub fn report(self, err: *mut *mut dk_error) -> dk_result {
        let code = self.code;
        if !err.is_null() {
            // SAFETY: the caller passed a writable `dk_error *` slot (documented contract).
            unsafe { *err = new_error(self) };
        }
        code
    }
}

/// Allocates a `dk_error` for C.
pub(crate) fn new_error(f: Failure) -> *mut dk_error {
    let message = crate::ffi::lossy_cstring(f.message);
    Box::into_raw(Box::new(ErrorData { code: f.code, message })).cast::<dk_error>()
}

impl From<stomp::Error> for Failure {
    fn from(e: stomp::Error) -> Failure {
        let code = match e.root() {
            stomp::Error::Url(_) => DK_ERR_INVALID_URL,
            stomp::Error::Frame(_) => DK_ERR_PROTOCOL,
            stomp::Error::Connect { .. } => DK_ERR_CONNECT,
            stomp::Error::Tls { .. } => DK_ERR_TLS,
            stomp::Error::Refused { .. } => DK_ERR_REFUSED,
            stomp::Error::Server { .. } => DK_ERR_SERVER,
            stomp::Error::Timeout { .. } => DK_ERR_TIMEOUT,
            stomp::Error::ReceiptLost { .. } => DK_ERR_RECEIPT_LOST,
            // Only without a recorded last attempt (root() unwraps it otherwise).
            stomp::Error::GaveUp { .. } => DK_ERR_CONNECT,
            stomp::Error::Closed => DK_ERR_CLOSED,
            stomp::Error::Invalid(_) => DK_ERR_INVALID_REQUEST,
            stomp::Error::Io { .. } => DK_ERR_IO,
        };
        let message = match &e {
            stomp::Error::Server { details, .. } if !details.trim().is_empty() => {
                format!("{e}: {}", details.trim())
            }
            _ => e.to_string(),
        };
        Failure::new(code, message)
    }
}

impl From<MessageError> for Failure {
    fn from(e: MessageError) -> Failure {
        let code = match &e {
            MessageError::UnknownVersion { .. } => DK_ERR_MESSAGE_VERSION,
            MessageError::UnknownType { .. } => DK_ERR_MESSAGE_TYPE,
            MessageError::BadJson { .. } => DK_ERR_MESSAGE_JSON,
            MessageError::Unrecognised { .. } => DK_ERR_MESSAGE_UNRECOGNISED,
            MessageError::Invalid { .. } => DK_ERR_MESSAGE_INVALID,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<PublishError> for Failure {
    fn from(e: PublishError) -> Failure {
        match e {
            PublishError::Invalid(m) => m.into(),
            PublishError::Bus(b) => b.into(),
        }
    }
}

/// The message of an error, as a NUL-terminated UTF-8 string owned by `err`
/// (valid until dk_error_free(err)). Returns NULL if `err` is NULL.
#[no_mangle]
pub extern "C" fn dk_error_message(err: *const dk_error) -> *const c_char {
    ffi_panic_boundary! {
        // SAFETY: a non-NULL `err` came from this library (documented contract).
        match unsafe { err.cast::<ErrorData>().as_ref() } {
            Some(e) => e.message.as_ptr(),
            None => ptr::null(),
        }
    }
}

/// The code of an error; DK_OK if `err` is NULL.
#[no_mangle]
pub extern "C" fn dk_error_code(err: *const dk_error) -> dk_result {
    ffi_panic_boundary! {
        // SAFETY: as in dk_error_message.
        match unsafe { err.cast::<ErrorData>().as_ref() } {
            Some(e) => e.code,
            None => DK_OK,
        }
    }
}

/// Copies the message of `err` into `buf` (at most `len - 1` bytes, always
/// NUL-terminated when `len > 0`, cut at a byte boundary) and stores the full
/// message length, without the NUL, in `*out_n` when `out_n` is not NULL — so
/// `*out_n >= len` means the copy was cut, as with snprintf(). Returns
/// DK_ERR_NULL_ARGUMENT if `err` is NULL, or `buf` is NULL while `len > 0`.
#[no_mangle]
pub extern "C" fn dk_error_copy_message(err: *const dk_error, buf: *mut c_char, len: usize, out_n: *mut usize) -> dk_result {
    ffi_panic_boundary! {
        // SAFETY: as in dk_error_message.
        let Some(e) = (unsafe { err.cast::<ErrorData>().as_ref() }) else { return DK_ERR_NULL_ARGUMENT };
        if buf.is_null() && len > 0 {
            return DK_ERR_NULL_ARGUMENT;
        }
        let bytes = e.message.as_bytes();
        if len > 0 {
            let n = bytes.len().min(len - 1);
            // SAFETY: `buf` has room for `len` bytes (documented contract); n < len.
            unsafe {
                ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
                *buf.add(n) = 0;
            }
        }
        if !out_n.is_null() {
            // SAFETY: a non-NULL `out_n` is writable (documented contract).
            unsafe { *out_n = bytes.len() };
        }
        DK_OK
    }
}

/// Frees an error. NULL is allowed (nothing happens). Call it once per error.
#[no_mangle]
pub extern "C" fn dk_error_free(err: *mut dk_error) {
    ffi_panic_boundary! {
        if !err.is_null() {
            // SAFETY: `err` came from new_error() and is freed once (documented contract).
            drop(unsafe { Box::from_raw(err.cast::<ErrorData>()) });
        }
    }
}

/// A static, NUL-terminated description of a result code (e.g.
/// "DK_ERR_TIMEOUT: timed out"); never NULL, never to be freed. Unknown codes
/// give "unknown dk_result code".
#[no_mangle]
pub extern "C" fn dk_result_describe(code: u32) -> *const c_char {
    ffi_panic_boundary! {
        dk_result::describe(code).as_ptr().cast::<c_char>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_nul_terminated_and_named() {
        for code in [0, 1001, 1002, 1003, 1004, 1005, 1006, 2001, 2002, 2003, 2004, 2005, 2006, 3001, 3002, 3003, 3004, 4001, 4002, 4003, 4004, 4005, 9999, 7] {
            let d = dk_result::describe(code);
            assert!(d.ends_with('\0') && d[..d.len() - 1].find('\0').is_none(), "{d}");
        }
        assert!(dk_result::describe(DK_ERR_RECEIPT_LOST as u32).starts_with("DK_ERR_RECEIPT_LOST"));
    }

    #[test]
    fn stomp_errors_keep_their_kind() {
        let f: Failure = stomp::Error::Closed.into();
        assert_eq!(f.code, DK_ERR_CLOSED);
        let f: Failure = stomp::ClientConfig::new("http://x").unwrap_err().into();
        assert_eq!(f.code, DK_ERR_INVALID_URL);
        let f: Failure = stomp::Error::Server { message: "denied".into(), details: "no access to /queue/x\n".into() }.into();
        assert_eq!((f.code, f.message.as_str()), (DK_ERR_SERVER, "broker error: denied: no access to /queue/x"));
    }
}
