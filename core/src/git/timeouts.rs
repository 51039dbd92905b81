//! Network timeouts for libgit2's own transports (`git://`, `http(s)://`, `ssh://`):
//! without them a fetch whose server stops answering (a hung or overloaded git
//! server, a connection the server's full accept queue dropped, a blackholed
//! link) blocks its repository until TCP gives up, about 15 minutes.

use std::time::Duration;

/// How long a connect may take at most (or the I/O timeout, if shorter).
pub const CONNECT: Duration = Duration::from_secs(10);

/// Sets the process-wide connect timeout ([`CONNECT`], or `io` when shorter)
/// and the timeout of each read and write (`io`); `None` leaves libgit2's
/// defaults (no timeout). Call it before any thread uses libgit2: the options
/// are process-wide and unsynchronized.
pub fn set(io: Option<Duration>) {
    let Some(io) = io.filter(|d| !d.is_zero()) else { return };
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: called at start-up before other threads use libgit2 (see the doc
    // comment); the options only store an integer.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms(CONNECT.min(io)));
        let _ = git2::opts::set_server_timeout_in_milliseconds(ms(io));
    }
}
