//! Connections (`dk_client`): connect, send with headers, disconnect, free.

use crate::error::{dk_error, dk_result};
use crate::ffi::{arg_slice, arg_str, check_out, drop_blocking, not_in_callback, opt_ref, opt_str, write_out, FfiResult, Opaque};
use deploykit::blocking::BlockingClient;
use deploykit::stomp::url::Secret;
use deploykit::stomp::{ClientConfig, Headers, HeartbeatConfig, SendOptions};
use std::ffi::c_char;
use std::time::Duration;

/// A connection to a broker (with failover and reconnects, as the URL says).
///
/// Thread-safety: a `dk_client` may be shared by several threads; every call
/// taking it may run concurrently with the others, except dk_client_disconnect()
/// and dk_client_free(), which must be the last call on it, made once, when no
/// other call on it is running. Subscriptions and messages it produced stay
/// valid (and must still be freed) after it is freed.
#[allow(non_camel_case_types)]
pub struct dk_client {
    _private: [u8; 0],
}

impl Opaque for dk_client {
    type Rust = BlockingClient;
}

/// `heartbeat_ms` value that turns heart-beats off (none offered, none emulated).
pub const DK_HEARTBEAT_OFF: u32 = u32::MAX;

/// Options for dk_client_connect(). Zero-initialise it (`dk_connect_options o = {0};`)
/// and set what you need: every NULL pointer and every 0 means "the default".
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_connect_options {
    /// The virtual host sent in CONNECT's `host` header. NULL: "/" (what RabbitMQ expects).
    pub vhost: *const c_char,
    /// STOMP login, overriding the URL's. NULL: the URL's, if any.
    pub login: *const c_char,
    /// STOMP passcode, overriding the URL's. NULL: the URL's, if any.
    pub passcode: *const c_char,
    /// Heart-beat interval both ways in milliseconds, negotiated (or emulated
    /// with a broker that negotiates none). 0: 10000. DK_HEARTBEAT_OFF: none.
    pub heartbeat_ms: u32,
    /// How long TCP connect, TLS and the STOMP handshake may take, per attempt,
    /// in milliseconds. 0: 10000.
    pub connect_timeout_ms: u32,
    /// How long to wait for a broker RECEIPT (sends with a receipt, subscribe,
    /// disconnect, publish), in milliseconds. 0: 10000.
    pub receipt_timeout_ms: u32,
    /// How many connection attempts dk_client_connect() makes (over the whole
    /// failover list) before failing with DK_ERR_CONNECT. 0: what the URL says
    /// (`startupMaxReconnectAttempts` / `maxReconnectAttempts` of a
    /// `failover:(…)?…` URL), which by default is to retry forever.
    pub connect_attempts: u32,
}

/// One header of a message to send.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_header {
    /// Header name (UTF-8, not NULL).
    pub name: *const c_char,
    /// Header value (UTF-8, not NULL).
    pub value: *const c_char,
}

/// One body of dk_client_send_many(): `len` bytes at `data` (any bytes; NULL allowed when `len` is 0).
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct dk_body {
    /// The bytes.
    pub data: *const u8,
    /// How many.
    pub len: usize,
}

/// A duration option: 0 keeps the default.
fn millis(ms: u32) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(u64::from(ms)))
}

/// Turns a URL and the C options into core's configuration.
fn config(url: &str, opts: Option<&dk_connect_options>) -> FfiResult<ClientConfig> {
    let mut config = ClientConfig::new(url)?;
    let Some(o) = opts else { return Ok(config) };
    if let Some(vhost) = opt_str(o.vhost, "opts->vhost")? {
        config = config.vhost(vhost);
    }
    if let Some(login) = opt_str(o.login, "opts->login")? {
        config.handshake.login = Some(login.to_owned());
    }
    if let Some(passcode) = opt_str(o.passcode, "opts->passcode")? {
        config.handshake.passcode = Some(Secret::new(passcode));
    }
    match o.heartbeat_ms {
        0 => {}
        DK_HEARTBEAT_OFF => config = config.heartbeat(HeartbeatConfig::off()),
        ms => config = config.heartbeat(HeartbeatConfig::every(Duration::from_millis(u64::from(ms)))),
    }
    if let Some(t) = millis(o.connect_timeout_ms) {
        config.handshake.timeout = t;
    }
    if let Some(t) = millis(o.receipt_timeout_ms) {
        config.receipt_timeout = t;
    }
    if o.connect_attempts != 0 {
        config.url.options.startup_max_reconnect_attempts = Some(o.connect_attempts);
    }
    Ok(config)
}

/// Connects to the broker(s) of `url` (`stomp://[login:passcode@]host[:port]`,
/// `stomp+ssl://…`, or `failover:(url1,url2)?options`) and returns once the
/// session is ready, storing a new client in `*out`. `opts` may be NULL.
///
/// Errors: DK_ERR_NULL_ARGUMENT, DK_ERR_NOT_UTF8, DK_ERR_INVALID_URL;
/// DK_ERR_CONNECT when no attempt succeeded within `connect_attempts` — whatever
/// failed (connection refused, timeout, TLS handshake, a broker refusing the
/// login or vhost), the message gives the last attempt's error; DK_ERR_TLS or
/// DK_ERR_IO for TLS settings that cannot be used (found before connecting);
/// DK_ERR_IN_CALLBACK.
#[no_mangle]
pub extern "C" fn dk_client_connect(url: *const c_char, opts: *const dk_connect_options, out: *mut *mut dk_client, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, {
        let url = arg_str(url, "url")?;
        check_out(out, "out")?;
        let config = config(url, opt_ref(opts))?;
        not_in_callback("dk_client_connect")?;
        let client = BlockingClient::connect(config)?;
        write_out(out, dk_client::into_ptr(client));
        Ok(())
    })
}

/// Sends DISCONNECT, waits for the broker's receipt (so every message sent
/// before is with the broker), and frees the client — also when it fails (the
/// result then says the goodbye was not confirmed). NULL is allowed (DK_OK).
/// Called from a callback it returns DK_ERR_IN_CALLBACK and does nothing.
#[no_mangle]
pub extern "C" fn dk_client_disconnect(client: *mut dk_client, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, {
        if client.is_null() {
            return Ok(());
        }
        not_in_callback("dk_client_disconnect")?;
        match dk_client::take(client) {
            Some(c) => Ok(c.disconnect()?),
            None => Ok(()),
        }
    })
}

/// Frees a client without the DISCONNECT handshake (the connection is closed;
/// messages sent without a receipt may be lost). NULL is allowed. Call it once.
#[no_mangle]
pub extern "C" fn dk_client_free(client: *mut dk_client) {
    ffi_panic_boundary! {
        if let Some(c) = dk_client::take(client) {
            drop_blocking(c);
        }
    }
}

/// Converts C headers into core's.
fn headers(list: &[dk_header]) -> FfiResult<Headers> {
    let mut out = Headers::with_capacity(list.len());
    for (i, h) in list.iter().enumerate() {
        let name = arg_str(h.name, &format!("headers[{i}].name"))?;
        let value = arg_str(h.value, &format!("headers[{i}].value"))?;
        out.push(name.to_owned(), value.to_owned());
    }
    Ok(out)
}

/// Sends `len` bytes of `body` (any bytes, NUL included; NULL allowed when
/// `len` is 0) to `destination` with `n_headers` extra headers (`headers` may be
/// NULL when `n_headers` is 0). With `receipt`, waits for the broker's RECEIPT
/// (DK_ERR_TIMEOUT, DK_ERR_RECEIPT_LOST); without, returns once the frame is
/// queued for the connection.
#[no_mangle]
pub extern "C" fn dk_client_send(
    client: *const dk_client,
    destination: *const c_char,
    body: *const u8,
    len: usize,
    headers: *const dk_header,
    n_headers: usize,
    receipt: bool,
    err: *mut *mut dk_error,
) -> dk_result {
    ffi_result!(err, {
        let body = arg_slice(body, len, "body")?;
        let (c, destination, opts) = send_args(client, destination, headers, n_headers, receipt, "dk_client_send")?;
        c.send(destination, body.to_vec(), opts)?;
        Ok(())
    })
}

/// Sends each of the `n_bodies` `bodies` to `destination`, in order, with the same
/// `n_headers` extra headers: many SENDs per turn of the client's lock, for a
/// publisher with many messages ready (one call instead of one `dk_client_send` each).
/// With `receipt`, only the last SEND asks for a RECEIPT and the call waits for it;
/// the broker answers it after the others, so it confirms them all. No bodies is
/// DK_OK and sends nothing. Every body is checked before anything is sent: a NULL
/// `data` with a non-zero `len` is DK_ERR_NULL_ARGUMENT naming `bodies[i]`, and then
/// nothing is sent. Each body is copied as it is queued, so the caller may reuse
/// the bodies as soon as the call returns.
#[no_mangle]
pub extern "C" fn dk_client_send_many(
    client: *const dk_client,
    destination: *const c_char,
    bodies: *const dk_body,
    n_bodies: usize,
    headers: *const dk_header,
    n_headers: usize,
    receipt: bool,
    err: *mut *mut dk_error,
) -> dk_result {
    ffi_result!(err, {
        let bodies = arg_slice(bodies, n_bodies, "bodies")?;
        let bodies = bodies.iter().enumerate().map(|(i, b)| arg_slice(b.data, b.len, &format!("bodies[{i}].data"))).collect::<FfiResult<Vec<&[u8]>>>()?;
        let (c, destination, opts) = send_args(client, destination, headers, n_headers, receipt, "dk_client_send_many")?;
        c.send_many(destination, bodies, &opts)?;
        Ok(())
    })
}

/// What dk_client_send and dk_client_send_many check alike: the client, the destination,
/// the headers, and that `call` is not made from a callback; the options they make.
fn send_args<'a>(
    client: *const dk_client,
    destination: *const c_char,
    headers: *const dk_header,
    n_headers: usize,
    receipt: bool,
    call: &str,
) -> FfiResult<(&'a BlockingClient, &'a str, SendOptions)> {
    let c = dk_client::try_ref(client, "client")?;
    let destination = arg_str(destination, "destination")?;
    let headers = self::headers(arg_slice(headers, n_headers, "headers")?)?;
    not_in_callback(call)?;
    Ok((c, destination, SendOptions { headers, receipt, ..SendOptions::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_map_to_core() {
        let o = dk_connect_options {
            vhost: c"v".as_ptr(),
            login: c"u".as_ptr(),
            passcode: std::ptr::null(),
            heartbeat_ms: DK_HEARTBEAT_OFF,
            connect_timeout_ms: 1500,
            receipt_timeout_ms: 0,
            connect_attempts: 2,
        };
        let c = config("stomp://127.0.0.1:1", Some(&o)).unwrap();
        assert_eq!(c.handshake.vhost, "v");
        assert_eq!(c.handshake.login.as_deref(), Some("u"));
        assert_eq!(c.handshake.heartbeat, HeartbeatConfig::off());
        assert_eq!(c.handshake.timeout, Duration::from_millis(1500));
        assert_eq!(c.receipt_timeout, ClientConfig::new("stomp://x").unwrap().receipt_timeout);
        assert_eq!(c.url.options.startup_max_reconnect_attempts, Some(2));
        let e = config("nope://x", None).unwrap_err();
        assert_eq!(e.code, dk_result::DK_ERR_INVALID_URL);
    }
}
