//! The panic boundary: no Rust panic ever unwinds into C.
//!
//! Every export runs its body inside one of two macros:
//! - `ffi_panic_boundary! { … }` for functions returning a plain value: on a
//!   panic it returns the type's [`PanicFallback`] (`DK_ERR_PANIC`, NULL, 0,
//!   `false`, `DK_KIND_UNKNOWN`, nothing).
//! - `ffi_result!(err, { … })` for functions returning `dk_result` with a
//!   `dk_error **err`: the body returns `Result<(), Failure>`; an `Err` or a
//!   panic is stored in `*err` (when not NULL) and its code returned.

use crate::error::dk_result;
use crate::message::dk_kind;

/// The value an export returns when its body panicked.
pub(crate) trait PanicFallback {
    fn panic_fallback() -> Self;
}

impl PanicFallback for dk_result {
    fn panic_fallback() -> Self {
        dk_result::DK_ERR_PANIC
    }
}

impl<T> PanicFallback for *const T {
    fn panic_fallback() -> Self {
        std::ptr::null()
    }
}

impl<T> PanicFallback for *mut T {
    fn panic_fallback() -> Self {
        std::ptr::null_mut()
    }
}

impl PanicFallback for () {
    fn panic_fallback() -> Self {}
}

impl PanicFallback for bool {
    fn panic_fallback() -> Self {
        false
    }
}

impl PanicFallback for usize {
    fn panic_fallback() -> Self {
        0
    }
}

impl PanicFallback for dk_kind {
    fn panic_fallback() -> Self {
        dk_kind::DK_KIND_UNKNOWN
    }
}

/// Runs the body, turning a panic into the return type's fallback value.
macro_rules! ffi_panic_boundary {
    ($($body:tt)*) => {{
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(_) => $crate::panic::PanicFallback::panic_fallback(),
        }
    }};
}

/// Runs a body returning `Result<(), Failure>` and turns it into a `dk_result`,
/// storing the failure (or a caught panic) in `*err` when `err` is not NULL.
macro_rules! ffi_result {
    ($err:expr, $body:block) => {{
        let err: *mut *mut $crate::error::dk_error = $err;
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| -> ::std::result::Result<(), $crate::error::Failure> { $body })) {
            Ok(Ok(())) => $crate::error::dk_result::DK_OK,
            Ok(Err(failure)) => failure.report(err),
            Err(payload) => $crate::error::Failure::panic(payload).report(err),
        }
    }};
}

#[cfg(test)]
mod tests {
    use crate::error::{dk_error, dk_error_code, dk_error_free, dk_error_message, dk_result};
    use std::ffi::CStr;

    fn panics(err: *mut *mut dk_error) -> dk_result {
        ffi_result!(err, {
            if err.is_null() {
                return Ok(());
            }
            panic!("boom {}", 42)
        })
    }

    fn null_on_panic() -> *const u8 {
        ffi_panic_boundary! { panic!("boom") }
    }

    #[test]
    fn panics_become_codes_and_messages() {
        let mut err: *mut dk_error = std::ptr::null_mut();
        assert_eq!(panics(&mut err), dk_result::DK_ERR_PANIC);
        assert_eq!(dk_error_code(err), dk_result::DK_ERR_PANIC);
        let msg = unsafe { CStr::from_ptr(dk_error_message(err)) }.to_str().unwrap().to_owned();
        assert!(msg.contains("boom 42"), "{msg}");
        dk_error_free(err);
        assert!(null_on_panic().is_null());
        assert_eq!(panics(std::ptr::null_mut()), dk_result::DK_OK);
    }
}
