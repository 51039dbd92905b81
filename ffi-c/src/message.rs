//! Received messages (`dk_message`): destination, headers, body, and the
//! deploykit kind core's decoder recognises (JSON v1 or legacy text).

use crate::error::{dk_error, dk_result};
use crate::ffi::{check_out, lossy_cstring, write_out, Opaque};
use deploykit::message::{self, Kind};
use deploykit::stomp;
use std::ffi::{c_char, CStr, CString};
use std::ptr;

/// A message received on a subscription. Immutable: its accessors may be
/// called from any thread. Strings and the body it returns are owned by it and
/// stay valid until dk_message_free(); a message passed to a callback is owned
/// by the library and valid only during that call (copy it with
/// dk_message_copy() to keep it).
#[allow(non_camel_case_types)]
pub struct dk_message {
    _private: [u8; 0],
}

/// A message with its strings converted for C once.
pub(crate) struct MessageData {
    pub(crate) msg: stomp::Message,
    destination: CString,
    headers: Vec<(CString, CString)>,
}

impl MessageData {
    pub(crate) fn new(msg: stomp::Message) -> MessageData {
        let destination = lossy_cstring(msg.destination());
        let headers = msg.headers.iter().map(|(k, v)| (lossy_cstring(k), lossy_cstring(v))).collect();
        MessageData { msg, destination, headers }
    }

    /// Core's reading of the message.
    fn decode(&self) -> Result<message::Message, message::MessageError> {
        message::decode(self.msg.destination(), &self.msg.headers, &self.msg.body)
    }
}

impl Opaque for dk_message {
    type Rust = MessageData;
}

/// What kind of deploykit message a message is (its `dk-type`, or the legacy
/// body format core recognised).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum dk_kind {
    /// Not a deploykit message, or one that does not decode (see dk_message_decode()).
    DK_KIND_UNKNOWN = 0,
    /// A push or SVN commit.
    DK_KIND_COMMIT = 1,
    /// A CI build's progress.
    DK_KIND_BUILD = 2,
    /// A package added to (or refused by) a Debian repository.
    DK_KIND_PACKAGE = 3,
    /// A one-line event.
    DK_KIND_EVENT = 4,
    /// A signed deploy request.
    DK_KIND_DEPLOY_REQUEST = 5,
    /// A deploy agent's reply.
    DK_KIND_DEPLOY_REPLY = 6,
    /// A deploy agent's announcement.
    DK_KIND_AGENT_ANNOUNCE = 7,
    /// The original deploykit's keepalive (a body of a single newline): ignore it.
    DK_KIND_KEEPALIVE = 8,
    /// A fetch daemon's result for one repository.
    DK_KIND_FETCH = 9,
}

impl dk_kind {
    fn of(decoded: &message::Message) -> dk_kind {
        match decoded.kind() {
            None => dk_kind::DK_KIND_KEEPALIVE,
            Some(Kind::Commit) => dk_kind::DK_KIND_COMMIT,
            Some(Kind::Build) => dk_kind::DK_KIND_BUILD,
            Some(Kind::Package) => dk_kind::DK_KIND_PACKAGE,
            Some(Kind::Event) => dk_kind::DK_KIND_EVENT,
            Some(Kind::DeployRequest) => dk_kind::DK_KIND_DEPLOY_REQUEST,
            Some(Kind::DeployReply) => dk_kind::DK_KIND_DEPLOY_REPLY,
            Some(Kind::AgentAnnounce) => dk_kind::DK_KIND_AGENT_ANNOUNCE,
            Some(Kind::Fetch) => dk_kind::DK_KIND_FETCH,
        }
    }
}

/// Borrows a message argument of an accessor (NULL gives `None`).
fn get<'a>(msg: *const dk_message) -> Option<&'a MessageData> {
    dk_message::try_ref(msg, "msg").ok()
}

/// The destination the message was sent to (owned by `msg`); NULL if `msg` is NULL.
#[no_mangle]
pub extern "C" fn dk_message_destination(msg: *const dk_message) -> *const c_char {
    ffi_panic_boundary! {
        get(msg).map_or(ptr::null(), |m| m.destination.as_ptr())
    }
}

/// The body (owned by `msg`; it may contain NUL bytes and is not
/// NUL-terminated), its length stored in `*len` when `len` is not NULL. Never
/// NULL for a valid message, even when empty; NULL (and `*len` = 0) if `msg` is NULL.
#[no_mangle]
pub extern "C" fn dk_message_body(msg: *const dk_message, len: *mut usize) -> *const u8 {
    ffi_panic_boundary! {
        let (p, n) = match get(msg) {
            Some(m) if m.msg.body.is_empty() => (c"".as_ptr().cast::<u8>(), 0),
            Some(m) => (m.msg.body.as_ptr(), m.msg.body.len()),
            None => (ptr::null(), 0),
        };
        if !len.is_null() {
            write_out(len, n);
        }
        p
    }
}

/// The value of the first header called `name` (owned by `msg`), or NULL if
/// the message has no such header (or an argument is NULL).
#[no_mangle]
pub extern "C" fn dk_message_header(msg: *const dk_message, name: *const c_char) -> *const c_char {
    ffi_panic_boundary! {
        let Some(m) = get(msg) else { return ptr::null() };
        if name.is_null() {
            return ptr::null();
        }
        // SAFETY: a non-NULL `name` is NUL-terminated (documented contract).
        let name = unsafe { CStr::from_ptr(name) };
        m.headers.iter().find(|(k, _)| k.as_c_str() == name).map_or(ptr::null(), |(_, v)| v.as_ptr())
    }
}

/// How many headers the message has (0 if `msg` is NULL).
#[no_mangle]
pub extern "C" fn dk_message_header_count(msg: *const dk_message) -> usize {
    ffi_panic_boundary! {
        get(msg).map_or(0, |m| m.headers.len())
    }
}

/// The `i`-th header (0-based, in wire order): its name and value (owned by
/// `msg`) stored in `*name` and `*value`. Returns DK_ERR_NULL_ARGUMENT if an
/// argument is NULL, DK_ERR_INVALID_ARGUMENT if `i` is not below
/// dk_message_header_count(); the out-parameters are written only on success.
#[no_mangle]
pub extern "C" fn dk_message_header_at(msg: *const dk_message, i: usize, name: *mut *const c_char, value: *mut *const c_char) -> dk_result {
    ffi_panic_boundary! {
        let Some(m) = get(msg) else { return dk_result::DK_ERR_NULL_ARGUMENT };
        if name.is_null() || value.is_null() {
            return dk_result::DK_ERR_NULL_ARGUMENT;
        }
        let Some((k, v)) = m.headers.get(i) else { return dk_result::DK_ERR_INVALID_ARGUMENT };
        write_out(name, k.as_ptr());
        write_out(value, v.as_ptr());
        dk_result::DK_OK
    }
}

/// The kind of deploykit message this is, read as every deploykit daemon reads
/// it (`dk-type` header, else the legacy text formats). DK_KIND_UNKNOWN for a
/// message that does not decode (dk_message_decode() says why) or a NULL `msg`.
#[no_mangle]
pub extern "C" fn dk_message_kind(msg: *const dk_message) -> dk_kind {
    ffi_panic_boundary! {
        get(msg).and_then(|m| m.decode().ok()).map_or(dk_kind::DK_KIND_UNKNOWN, |d| dk_kind::of(&d))
    }
}

/// Decodes the message as dk_message_kind() does, but reports why it does not
/// decode: DK_ERR_MESSAGE_VERSION, _TYPE, _JSON, _UNRECOGNISED or _INVALID, with
/// a message naming the destination and message id. On success stores the kind
/// in `*kind` (which may be NULL to only check).
#[no_mangle]
pub extern "C" fn dk_message_decode(msg: *const dk_message, kind: *mut dk_kind, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, {
        let m = dk_message::try_ref(msg, "msg")?;
        let decoded = m.decode()?;
        if !kind.is_null() {
            write_out(kind, dk_kind::of(&decoded));
        }
        Ok(())
    })
}

/// Copies a message (e.g. one received in a callback, to keep it after the
/// callback returns) into a new `dk_message` stored in `*out`; free it with
/// dk_message_free().
#[no_mangle]
pub extern "C" fn dk_message_copy(msg: *const dk_message, out: *mut *mut dk_message, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, {
        let m = dk_message::try_ref(msg, "msg")?;
        check_out(out, "out")?;
        write_out(out, dk_message::into_ptr(MessageData::new(m.msg.clone())));
        Ok(())
    })
}

/// Frees a message returned by dk_subscription_next() or dk_message_copy().
/// NULL is allowed. Call it once; never on the message a callback receives.
#[no_mangle]
pub extern "C" fn dk_message_free(msg: *mut dk_message) {
    ffi_panic_boundary! {
        drop(dk_message::take(msg));
    }
}
