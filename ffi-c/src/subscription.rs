//! Subscriptions (`dk_subscription`): polled with a timeout, or delivering to a
//! C callback on the library's I/O thread.

use crate::client::dk_client;
use crate::error::{dk_error, dk_result, Failure};
use crate::ffi::{arg_enum, arg_str, check_out, drop_blocking, not_in_callback, write_out, Opaque};
use crate::message::{dk_message, MessageData};
use deploykit::blocking::{BlockingSubscription, CallbackHandle, Next};
use deploykit::stomp::{AckMode, SubscribeOptions};
use std::ffi::{c_char, c_void};
use std::time::Duration;

/// How a subscription acknowledges messages: one of the `DK_ACK_*` values.
#[allow(non_camel_case_types)]
pub type dk_ack_mode = u32;
/// The broker considers a message acknowledged once delivered.
pub const DK_ACK_AUTO: dk_ack_mode = 0;
/// dk_subscription_ack() acknowledges a message and every earlier one.
pub const DK_ACK_CLIENT: dk_ack_mode = 1;
/// dk_subscription_ack() acknowledges one message.
pub const DK_ACK_CLIENT_INDIVIDUAL: dk_ack_mode = 2;

/// `timeout_ms` value for dk_subscription_next() that waits without limit.
pub const DK_TIMEOUT_INFINITE: u32 = u32::MAX;

/// A subscription: polled with dk_subscription_next() (from dk_client_subscribe())
/// or delivering to a callback (from dk_client_subscribe_callback()).
///
/// Thread-safety: a polled subscription may be used from any thread but by one
/// thread at a time (calls on it must not overlap). dk_subscription_free() must
/// be its last call.
#[allow(non_camel_case_types)]
pub struct dk_subscription {
    _private: [u8; 0],
}

/// What a `dk_subscription` holds.
pub(crate) enum SubscriptionData {
    Polling(BlockingSubscription),
    /// Held until freed: dropping it stops the callbacks.
    Callback(#[allow(dead_code)] CallbackHandle),
}

impl Opaque for dk_subscription {
    type Rust = SubscriptionData;
}

/// A callback receiving messages on the library's I/O thread. `msg` is owned by
/// the library and valid only during the call (dk_message_copy() keeps it);
/// `userdata` is what was given to dk_client_subscribe_callback().
#[allow(non_camel_case_types)]
pub type dk_message_callback = Option<unsafe extern "C" fn(msg: *const dk_message, userdata: *mut c_void)>;

fn ack_mode(value: dk_ack_mode) -> Option<AckMode> {
    match value {
        DK_ACK_AUTO => Some(AckMode::Auto),
        DK_ACK_CLIENT => Some(AckMode::Client),
        DK_ACK_CLIENT_INDIVIDUAL => Some(AckMode::ClientIndividual),
        _ => None,
    }
}

/// Subscribes to `destination` and returns once the broker confirmed it,
/// storing a polled subscription in `*out`; read it with dk_subscription_next().
/// The subscription survives reconnects (the client re-subscribes).
#[no_mangle]
pub extern "C" fn dk_client_subscribe(
    client: *const dk_client,
    destination: *const c_char,
    ack: dk_ack_mode,
    out: *mut *mut dk_subscription,
    err: *mut *mut dk_error,
) -> dk_result {
    ffi_result!(err, {
        let c = dk_client::try_ref(client, "client")?;
        let destination = arg_str(destination, "destination")?;
        let ack = arg_enum(ack, "ack", ack_mode)?;
        check_out(out, "out")?;
        not_in_callback("dk_client_subscribe")?;
        let sub = c.subscribe(destination, SubscribeOptions { ack, ..SubscribeOptions::default() })?;
        write_out(out, dk_subscription::into_ptr(SubscriptionData::Polling(sub)));
        Ok(())
    })
}

/// Userdata travelling to the I/O thread; the caller vouches for it (documented).
struct Userdata(*mut c_void);
// SAFETY: the API contract says userdata must be usable from the I/O thread.
unsafe impl Send for Userdata {}

/// Subscribes to `destination` and calls `callback(msg, userdata)` for every
/// message, on the library's I/O thread, one message at a time, in order.
/// Stores the subscription in `*out`; dk_subscription_free() stops the
/// callbacks and returns only once none is running, so `userdata` may be freed
/// after it.
///
/// In the callback: keep it short (it holds up the connection's I/O, heart-beats
/// included); read the message with the dk_message_* accessors; do not make
/// blocking calls (connect, send, publish, subscribe, next, ack, disconnect:
/// they fail with DK_ERR_IN_CALLBACK) — hand the work to another thread.
/// Only DK_ACK_AUTO is supported here (DK_ERR_UNSUPPORTED otherwise): use a
/// polled subscription to acknowledge messages yourself.
#[no_mangle]
pub extern "C" fn dk_client_subscribe_callback(
    client: *const dk_client,
    destination: *const c_char,
    ack: dk_ack_mode,
    callback: dk_message_callback,
    userdata: *mut c_void,
    out: *mut *mut dk_subscription,
    err: *mut *mut dk_error,
) -> dk_result {
    ffi_result!(err, {
        let c = dk_client::try_ref(client, "client")?;
        let destination = arg_str(destination, "destination")?;
        let ack = arg_enum(ack, "ack", ack_mode)?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        check_out(out, "out")?;
        if ack != AckMode::Auto {
            return Err(Failure::new(
                dk_result::DK_ERR_UNSUPPORTED,
                "callback subscriptions support only DK_ACK_AUTO (the library offers no way to acknowledge from a callback yet); use dk_client_subscribe() to acknowledge messages yourself",
            ));
        }
        not_in_callback("dk_client_subscribe_callback")?;
        let sub = c.subscribe(destination, SubscribeOptions { ack, ..SubscribeOptions::default() })?;
        let userdata = Userdata(userdata);
        let handle = sub.on_message(move |msg| {
            let userdata = &userdata;
            // Nothing Rust may unwind out of here into C, nor kill the delivery task.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let data = MessageData::new(msg);
                // SAFETY: a valid C function pointer given by the caller; the message
                // outlives the call.
                unsafe { callback(std::ptr::from_ref(&data).cast::<dk_message>(), userdata.0) };
            }));
        });
        write_out(out, dk_subscription::into_ptr(SubscriptionData::Callback(handle)));
        Ok(())
    })
}

/// The polled subscription behind a pointer, or why there is none.
fn polling<'a>(sub: *mut dk_subscription, function: &str) -> Result<&'a mut BlockingSubscription, Failure> {
    match dk_subscription::try_mut(sub, "sub")? {
        SubscriptionData::Polling(s) => Ok(s),
        SubscriptionData::Callback(_) => Err(Failure::invalid("sub", format!("{function} needs a subscription from dk_client_subscribe(), not a callback subscription"))),
    }
}

/// Waits up to `timeout_ms` milliseconds (DK_TIMEOUT_INFINITE: without limit;
/// 0: only what has already arrived) for the next message.
///
/// Returns DK_OK and stores a new message in `*out` (free it with
/// dk_message_free()), or DK_OK and stores NULL in `*out` when nothing arrived
/// in time. Returns DK_ERR_CLOSED once the client is closed for good.
#[no_mangle]
pub extern "C" fn dk_subscription_next(sub: *mut dk_subscription, timeout_ms: u32, out: *mut *mut dk_message, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, {
        let s = polling(sub, "dk_subscription_next")?;
        check_out(out, "out")?;
        not_in_callback("dk_subscription_next")?;
        let timeout = (timeout_ms != DK_TIMEOUT_INFINITE).then(|| Duration::from_millis(u64::from(timeout_ms)));
        match s.next(timeout) {
            Next::Message(m) => write_out(out, dk_message::into_ptr(MessageData::new(m))),
            Next::Timeout => write_out(out, std::ptr::null_mut()),
            Next::Closed => return Err(deploykit::stomp::Error::Closed.into()),
        }
        Ok(())
    })
}

/// Acknowledges `msg`, received on `sub` (DK_ACK_CLIENT: and every earlier
/// message), and waits for the broker's receipt. Messages of a DK_ACK_AUTO
/// subscription need no acknowledgement.
#[no_mangle]
pub extern "C" fn dk_subscription_ack(sub: *mut dk_subscription, msg: *const dk_message, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, { acknowledge(sub, msg, "dk_subscription_ack", BlockingSubscription::ack) })
}

/// Rejects `msg`, received on `sub`; the broker may redeliver it (STOMP 1.1 and
/// later: DK_ERR_INVALID_REQUEST on 1.0).
#[no_mangle]
pub extern "C" fn dk_subscription_nack(sub: *mut dk_subscription, msg: *const dk_message, err: *mut *mut dk_error) -> dk_result {
    ffi_result!(err, { acknowledge(sub, msg, "dk_subscription_nack", BlockingSubscription::nack) })
}

/// The shared body of ack and nack: check the arguments, then call `how` on the subscription.
fn acknowledge(
    sub: *mut dk_subscription,
    msg: *const dk_message,
    func: &'static str,
    how: fn(&BlockingSubscription, &deploykit::stomp::Message) -> Result<(), deploykit::stomp::Error>,
) -> Result<(), Failure> {
    let s = polling(sub, func)?;
    let m = dk_message::try_ref(msg, "msg")?;
    not_in_callback(func)?;
    Ok(how(s, &m.msg)?)
}

/// Unsubscribes (without waiting for a receipt) and frees the subscription.
/// For a callback subscription, stops the callbacks and returns only once none
/// is running; called from inside that subscription's own callback, the
/// callbacks stop after the current one returns. NULL is allowed. Call it once.
#[no_mangle]
pub extern "C" fn dk_subscription_free(sub: *mut dk_subscription) {
    ffi_panic_boundary! {
        if let Some(s) = dk_subscription::take(sub) {
            drop_blocking(s);
        }
    }
}
