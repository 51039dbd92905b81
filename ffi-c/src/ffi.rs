//! Pointer and string conversion at the boundary: NULL checks, UTF-8 checks,
//! opaque handle casts. Nothing here knows about STOMP or messages.

use crate::error::{dk_result, Failure};
use std::ffi::{c_char, CStr, CString};

/// The library's result type inside exports.
pub(crate) type FfiResult<T> = Result<T, Failure>;

/// An opaque C type standing for a Rust type owned in a `Box`.
pub(crate) trait Opaque {
    /// What the pointer really points to.
    type Rust;

    /// Hands a value to C.
    fn into_ptr(value: Self::Rust) -> *mut Self
    where
        Self: Sized,
    {
        Box::into_raw(Box::new(value)).cast::<Self>()
    }

    /// Borrows the value behind a pointer C passed in; NULL is an error naming `what`.
    fn try_ref<'a>(ptr: *const Self, what: &str) -> FfiResult<&'a Self::Rust>
    where
        Self: Sized,
    {
        // SAFETY: a non-NULL pointer of this type came from into_ptr() and is
        // not freed yet (the documented contract of every export).
        unsafe { ptr.cast::<Self::Rust>().as_ref() }.ok_or_else(|| Failure::null(what))
    }

    /// Borrows the value mutably; the caller guarantees no concurrent use (documented per type).
    fn try_mut<'a>(ptr: *mut Self, what: &str) -> FfiResult<&'a mut Self::Rust>
    where
        Self: Sized,
    {
        // SAFETY: as in try_ref, plus exclusive use (documented per type).
        unsafe { ptr.cast::<Self::Rust>().as_mut() }.ok_or_else(|| Failure::null(what))
    }

    /// Takes ownership back from C (for `_free`); `None` for NULL.
    fn take(ptr: *mut Self) -> Option<Self::Rust>
    where
        Self: Sized,
    {
        if ptr.is_null() {
            return None;
        }
        // SAFETY: the pointer came from into_ptr() and is freed once (documented contract).
        Some(*unsafe { Box::from_raw(ptr.cast::<Self::Rust>()) })
    }
}

/// A required NUL-terminated UTF-8 string.
pub(crate) fn arg_str<'a>(ptr: *const c_char, what: &str) -> FfiResult<&'a str> {
    opt_str(ptr, what)?.ok_or_else(|| Failure::null(what))
}

/// An optional NUL-terminated UTF-8 string (NULL is `None`).
pub(crate) fn opt_str<'a>(ptr: *const c_char, what: &str) -> FfiResult<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: a non-NULL string argument is NUL-terminated and outlives the call (documented contract).
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map(Some).map_err(|_| Failure::not_utf8(what))
}

/// An optional string as an owned `Option<String>`.
pub(crate) fn opt_string(ptr: *const c_char, what: &str) -> FfiResult<Option<String>> {
    Ok(opt_str(ptr, what)?.map(str::to_owned))
}

/// A string field where NULL means empty.
pub(crate) fn str_or_empty(ptr: *const c_char, what: &str) -> FfiResult<String> {
    Ok(opt_str(ptr, what)?.unwrap_or_default().to_owned())
}

/// A `(pointer, length)` array; NULL is allowed only with length 0.
pub(crate) fn arg_slice<'a, T>(ptr: *const T, len: usize, what: &str) -> FfiResult<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: the caller passes `len` readable elements (documented contract).
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A required struct argument passed by pointer.
pub(crate) fn arg_ref<'a, T>(ptr: *const T, what: &str) -> FfiResult<&'a T> {
    // SAFETY: a non-NULL pointer points to a valid, initialised struct (documented contract).
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(what))
}

/// An optional struct argument passed by pointer (NULL is `None`).
pub(crate) fn opt_ref<'a, T>(ptr: *const T) -> Option<&'a T> {
    // SAFETY: as in arg_ref.
    unsafe { ptr.as_ref() }
}

/// Checks that an out-parameter is not NULL.
pub(crate) fn check_out<T>(out: *mut T, what: &str) -> FfiResult<()> {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    Ok(())
}

/// Writes an out-parameter checked by [`check_out`] (only on success).
pub(crate) fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: checked non-NULL before; writable by the documented contract.
    unsafe { out.write(value) };
}

/// Whether the calling thread is one of the library's I/O threads (a callback runs there).
fn in_io_thread() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// Refuses a blocking call made from a callback, where it would deadlock or panic.
pub(crate) fn not_in_callback(function: &str) -> FfiResult<()> {
    if in_io_thread() {
        return Err(Failure::new(
            dk_result::DK_ERR_IN_CALLBACK,
            format!("{function} was called from a deploykit callback (the library's I/O thread), where blocking calls are not allowed; call it from another thread"),
        ));
    }
    Ok(())
}

/// Drops a value that may block while dropping (stopping callbacks, the I/O
/// runtime). From a callback, where blocking would deadlock, the drop is
/// finished on a short-lived thread instead.
pub(crate) fn drop_blocking<T: Send + 'static>(value: T) {
    if in_io_thread() {
        // If no thread can be started, the closure (and the value) is dropped
        // here; a blocking drop then panics and the export's boundary catches it.
        let _ = std::thread::Builder::new().name("deploykit-free".into()).spawn(move || drop(value));
    } else {
        drop(value);
    }
}

/// A C string from Rust text; an interior NUL (impossible in STOMP headers,
/// possible in error texts) ends the string there.
pub(crate) fn lossy_cstring(s: impl Into<Vec<u8>>) -> CString {
    let mut bytes = s.into();
    if let Some(nul) = bytes.iter().position(|&b| b == 0) {
        bytes.truncate(nul);
    }
    CString::new(bytes).unwrap_or_default()
}

/// A `u32` enum argument (C passes any value): converts it or names it as invalid.
pub(crate) fn arg_enum<T>(value: u32, what: &str, convert: impl FnOnce(u32) -> Option<T>) -> FfiResult<T> {
    convert(value).ok_or_else(|| Failure::invalid(what, format!("{value} is not a valid value")))
}
