//! Signed deploy requests and replies as an agent or a controller reads them
//! from the bus: `message::decode` of `DeployRequest`/`DeployReply`, then
//! `keys::PublicKey::parse` of `dk-signer` and `verify` of `dk-signature` over
//! the exact body, then what an agent does with a verified request (filters,
//! identity regexes, tag name).
//!
//! Input: flags byte `\x1f` headers (`name:value` lines) `\x1f` body.
//! Flags: bit 0 signs the body with the fuzz key (its public half is the one
//! trusted), bit 1 then flips a body byte, bit 2 adds `dk-type: deploy-request`,
//! bit 3 `dk-type: deploy-reply` (with `dk-version: 1`).
//! Checks: the trusted key verifies exactly the bodies it signed; nothing
//! else the fuzzer writes verifies.
#![no_main]

use deploykit::deploy::agent::repo::validate_name;
use deploykit::deploy::filters::{self, Candidate};
use deploykit::deploy::keys::{PublicKey, SecretKey, SIGNATURE_HEADER, SIGNER_HEADER};
use deploykit::message::{decode, Message};
use deploykit_fuzz::{headers, Input};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A fixed Ed25519 key (fuzzing only), so runs and corpora are reproducible.
const FUZZ_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHAURC+KhCQu7BxumaWcCo/grpUHxeksgr5k0f3rrl6M\n-----END PRIVATE KEY-----\n";

fn key() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("dk-fuzz-key-{}.pem", std::process::id()));
        std::fs::write(&path, FUZZ_KEY).expect("write the fuzz key");
        let key = SecretKey::load(&path).expect("load the fuzz key");
        let _ = std::fs::remove_file(&path);
        key
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let mut hdrs = headers(input.field());
    let mut body = input.rest().to_vec();
    let key = key();
    let trusted = key.public();
    let signed_by_us = flags & 1 != 0;
    if signed_by_us {
        hdrs.set(SIGNER_HEADER, trusted.to_string());
        hdrs.set(SIGNATURE_HEADER, key.sign(&body));
    }
    let tampered = signed_by_us && flags & 2 != 0 && !body.is_empty();
    if tampered {
        let last = body.len() - 1;
        body[last] ^= 0x01;
    }
    if flags & 4 != 0 {
        hdrs.set("dk-type", "deploy-request");
        hdrs.set("dk-version", "1");
    } else if flags & 8 != 0 {
        hdrs.set("dk-type", "deploy-reply");
        hdrs.set("dk-version", "1");
    }

    // Signature check first, as the agent should: any signer header, any signature.
    let mut verified = false;
    if let (Some(signer), Some(sig)) = (hdrs.get(SIGNER_HEADER), hdrs.get(SIGNATURE_HEADER)) {
        if let Ok(claimed) = PublicKey::parse(signer) {
            let ok = claimed.verify(&body, sig).is_ok();
            if claimed == trusted {
                assert_eq!(ok, signed_by_us && !tampered, "trusted key: verify({signer:?}, {sig:?}) = {ok}");
                verified = ok;
            }
            let _ = claimed.to_string();
        }
    }

    match decode("/topic/deploykit.deploy", &hdrs, &body) {
        Ok(Message::DeployRequest(req)) => {
            if let Some(tag) = &req.tag {
                let _ = validate_name(tag);
            }
            // An agent compiles filters only for a verified request; the fuzzer compiles them always.
            let _ = filters::validate(&req.filters);
            let facts = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
            let classes = ["web".to_owned()];
            let me = Candidate { identity: "web01.example", classes: &classes, facts: &facts };
            let _ = filters::matches(&req.filters, me);
            let _ = (verified, serde_json::to_string(&req));
        }
        Ok(Message::DeployReply(reply)) => {
            let _ = serde_json::to_string(&reply);
        }
        _ => {}
    }
});
