//! Every bus message decoder (`core::message::decode`): JSON v1 of each kind
//! (`dk-type` + `dk-version` headers) and every legacy text body (commit,
//! build, package, event), for any destination and headers.
//!
//! Input: destination `\x1f` headers (`name:value` lines) `\x1f` body. The
//! first byte, if it is below 0x10, picks a `dk-type` to add (so JSON bodies of
//! every kind are reached without guessing the header). A decoded message must
//! serialise (what dk-web and the tools print), and a JSON message that
//! re-encodes must decode again as the same kind.
#![no_main]

use deploykit::message::{decode, encode, Message, Wire};
use deploykit_fuzz::{headers, Input};
use libfuzzer_sys::fuzz_target;

const KINDS: [&str; 8] = ["commit", "build", "package", "event", "deploy-request", "deploy-reply", "agent-announce", "fetch"];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let pick = data.first().copied().filter(|b| *b < 0x10);
    if pick.is_some() {
        input.byte();
    }
    let destination = input.text();
    let mut hdrs = headers(input.field());
    if let Some(kind) = pick.and_then(|b| KINDS.get(usize::from(b & 7))) {
        hdrs.push("dk-type", *kind);
        hdrs.push("dk-version", "1");
    }
    let body = input.rest();
    let Ok(msg) = decode(&destination, &hdrs, body) else { return };
    let _ = serde_json::to_string(&msg);
    let wire = if pick.is_some() { Wire::Json } else { Wire::Legacy };
    let out = match &msg {
        Message::Commit(m) => encode(m, wire),
        Message::Build(m) => encode(m, wire),
        Message::Package(m) => encode(m, wire),
        Message::Event(m) => encode(m, wire),
        Message::DeployRequest(m) => encode(m, wire),
        Message::DeployReply(m) => encode(m, wire),
        Message::AgentAnnounce(m) => encode(m, wire),
        Message::Fetch(m) => encode(m, wire),
        Message::Keepalive => return,
    };
    if wire == Wire::Json {
        let out = out.expect("a decoded message encodes");
        // What a tool re-publishes must be readable by the next one.
        let back = decode(&destination, &out.headers, &out.body).expect("an encoded message decodes");
        assert_eq!(back.kind(), msg.kind(), "JSON round trip changed the message's kind");
    }
});
