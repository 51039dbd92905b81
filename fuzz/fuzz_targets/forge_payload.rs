//! Forge webhooks (`core::forge`): the body (JSON or form-encoded `payload=`),
//! GitHub, GitLab and Gitea/Forgejo events, and the signature checks.
//!
//! Input: flags byte (forge, naming rule) `\x1f` event name `\x1f`
//! content-type `\x1f` signature/token header value `\x1f` body. The checks
//! run as dk-webhook runs them, with a fixed secret; a body's signature only
//! verifies when the fuzzer found the HMAC, which it cannot, so a "valid"
//! signature of an arbitrary value is a finding. A commit read from a payload
//! must pass `Commit::validate`, and its legacy text body must read back with
//! the same repo, ref and revision (no field injection through commit messages).
#![no_main]

use deploykit::forge::signature::{verify_hmac, verify_token, HookSecret};
use deploykit::forge::{gitea, github, gitlab, payload, Hook, Naming, RepoNameRule};
use deploykit::message::{decode, encode, Message, Wire};
use deploykit_fuzz::Input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let event = input.text();
    let content_type = input.text();
    let content_type = (!content_type.is_empty()).then_some(content_type.as_str());
    let signature = input.text();
    let signature = (!signature.is_empty()).then_some(signature.as_str());
    let body = input.rest();

    let secret = HookSecret::new(b"fuzz-secret".to_vec());
    let forge = flags % 3;
    let verdict = match forge {
        0 => verify_hmac(&secret, body, github::SIGNATURE_HEADER, signature, "sha256="),
        1 => verify_token(&secret, gitlab::TOKEN_HEADER, signature),
        _ => verify_hmac(&secret, body, gitea::SIGNATURE_HEADERS[0], signature, ""),
    };
    assert!(verdict.is_err() || signature == Some("fuzz-secret"), "forged signature accepted: {signature:?}");

    let rule = if flags & 0x10 != 0 { RepoNameRule::FullName } else { RepoNameRule::Name };
    let mut naming = Naming { rule, ..Naming::default() };
    if flags & 0x20 != 0 {
        naming.map.insert("org/site".into(), "site".into());
    }
    let Ok(value) = payload::parse(content_type, body) else { return };
    let hook = match forge {
        0 => github::parse(&event, &value, &naming),
        1 => gitlab::parse(&event, &value, &naming),
        _ => gitea::parse(&event, &value, &naming),
    };
    let Ok(Hook::Commit(commit)) = hook else { return };
    commit.validate().expect("a commit read from a forge payload is valid");
    let _ = encode(&commit, Wire::Json).expect("a forge commit encodes as JSON");
    let legacy = encode(&commit, Wire::Legacy).expect("a forge commit encodes as legacy text");
    match decode("/topic/deploykit.git.commits", &legacy.headers, &legacy.body) {
        Ok(Message::Commit(back)) => {
            assert_eq!((&back.repo, &back.refname, &back.newrev), (&commit.repo, &commit.refname, &commit.newrev), "legacy body reads back differently");
        }
        other => panic!("legacy body of a forge commit does not read back: {other:?}"),
    }
});
