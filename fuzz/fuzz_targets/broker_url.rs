//! Broker URL parsing (`core::stomp::url`): `stomp://`, `stomp+ssl://`, the
//! Ruby/ActiveMQ `failover:(…)?options` form, and `redact` for logs.
//!
//! Checks: no panic; an endpoint's password never survives `redact`; the
//! reconnect delay is computable for any attempt number.
#![no_main]

use deploykit::stomp::url::{redact, BrokerUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let redacted = redact(text);
    if let Ok(url) = BrokerUrl::parse(text) {
        for endpoint in &url.endpoints {
            let _ = endpoint.addr();
            if let Some(pass) = &endpoint.passcode {
                // A passcode of a few characters may occur elsewhere in the URL by chance.
                if pass.expose().len() >= 8 && !text.replacen(pass.expose(), "", 1).contains(pass.expose()) {
                    assert!(!redacted.contains(pass.expose()), "redact({text:?}) = {redacted:?} shows the password");
                }
            }
        }
        for attempt in [0, 1, 2, 10, 63, 64, 1000, u32::MAX] {
            let _ = url.options.delay(attempt);
        }
    }
});
