//! STOMP codec throughput: deploykit beside the `async-stomp` (0.7) and
//! `tokio-stomp-2` (0.3) crates, in one criterion run.
//!
//! Run with `./codec.sh` (writes the summary into README.md) or
//! `cargo bench --bench codec` in this directory.
//!
//! What each peer exposes publicly: both crates keep their frame parser private
//! (`mod frame;`) and publish a tokio-util `client::ClientCodec`, a `Decoder` of
//! `Message<FromServer>` and an `Encoder` of `Message<ToServer>`. That codec is
//! what their clients run on a socket, so it is what is measured here:
//!
//! - decode: the same bytes (MESSAGE frames as a broker sends them) through each
//!   `Decoder`, until the buffer is empty; the decoded items are dropped inside
//!   the measurement, as a client would after handling them.
//! - encode: a client-side codec cannot encode MESSAGE, so the comparison is on
//!   SEND frames with the same header set (the MESSAGE-only headers travel as
//!   custom headers). The peers' encoders take the message by value, so the
//!   inputs are built outside the timing (`iter_batched`) and dropped inside;
//!   deploykit is measured the same way ("by value") and through its `&Frame`
//!   encoder, which is what its client uses. deploykit's MESSAGE encoding (the
//!   embedded broker's path) is measured too.
//! - bytewise: one frame with a NUL-terminated body fed one byte at a time, a
//!   decode call after each byte. Linear decoders show a constant ns/byte
//!   whatever the body size; decoders that re-parse from the frame start on every
//!   call grow with the size. The peers run only up to 16 KiB: at 64 KiB one
//!   async-stomp iteration takes most of a second.

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use deploykit::stomp::{Command, Frame, StompCodec, Version};
use std::fmt::Debug;
use std::hint::black_box;
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

/// Frames per decode/encode iteration.
const FRAMES: usize = 1000;
/// Body sizes of the throughput cases.
const SIZES: [(&str, usize); 2] = [("64B", 64), ("1KiB", 1024)];
/// Body sizes of the byte-at-a-time case; peers only up to `PEER_BYTEWISE_MAX`.
const BYTEWISE_SIZES: [(&str, usize); 3] = [("4KiB", 4 << 10), ("16KiB", 16 << 10), ("64KiB", 64 << 10)];
const PEER_BYTEWISE_MAX: usize = 16 << 10;

/// A realistic header set of a delivered message (RabbitMQ-style ids, no
/// characters that need escaping so every codec reads the same values).
fn message_headers(i: usize) -> Vec<(String, String)> {
    vec![
        ("destination".into(), "/exchange/deploykit/deploy.production.web".into()),
        ("message-id".into(), format!("T_sub-0@@session-Qx1bJ0pW3yZt7Kd2LmNoPq@@{i}")),
        ("subscription".into(), "sub-0".into()),
        ("content-type".into(), "application/json".into()),
        ("ack".into(), format!("ack-{i}")),
        ("x-deploy-id".into(), format!("d-2026-11-25-{i:06}")),
        ("x-origin-host".into(), "build-07.ci.example.internal".into()),
    ]
}

/// A body of `n` printable bytes (JSON-ish, no NUL).
fn body(n: usize, i: usize) -> Vec<u8> {
    let pattern = format!("{{\"deploy\":{i},\"artifact\":\"web-frontend\",\"sha\":\"4f2a9c\"}}");
    pattern.bytes().cycle().take(n).collect()
}

fn message_frames(size: usize) -> Vec<Frame> {
    (0..FRAMES)
        .map(|i| {
            let mut f = Frame::new(Command::Message).with_body(body(size, i));
            for (k, v) in message_headers(i) {
                f.headers.push(k, v);
            }
            f
        })
        .collect()
}

/// SEND frames with the same header set (destination first, the rest custom).
fn send_frames(size: usize) -> Vec<Frame> {
    message_frames(size)
        .into_iter()
        .map(|mut f| {
            f.command = Command::Send;
            f
        })
        .collect()
}

/// A frame's headers other than `destination`, as the peers' SEND variants take them.
fn extra_headers(f: &Frame) -> Vec<(String, String)> {
    f.headers.iter().filter(|(k, _)| *k != "destination").map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

fn async_stomp_sends(frames: &[Frame]) -> Vec<async_stomp::ToServer> {
    frames
        .iter()
        .map(|f| async_stomp::ToServer::Send {
            destination: f.get("destination").unwrap().to_owned(),
            transaction: None,
            headers: Some(extra_headers(f)),
            body: Some(f.body.to_vec()),
        })
        .collect()
}

fn tokio_stomp_sends(frames: &[Frame]) -> Vec<tokio_stomp_2::ToServer> {
    frames
        .iter()
        .map(|f| tokio_stomp_2::ToServer::Send {
            destination: f.get("destination").unwrap().to_owned(),
            transaction: None,
            headers: Some(extra_headers(f)),
            body: Some(f.body.to_vec()),
        })
        .collect()
}

fn encode_wire(frames: &[Frame]) -> Vec<u8> {
    let mut codec = StompCodec::new(Version::V1_2);
    let mut dst = BytesMut::new();
    for f in frames {
        codec.encode(f, &mut dst).unwrap();
    }
    dst.to_vec()
}

/// Decodes everything in `buf`; returns the number of items.
fn decode_all<D: Decoder>(mut codec: D, mut buf: BytesMut) -> usize
where
    D::Error: Debug,
{
    let mut n = 0;
    while let Some(item) = codec.decode(&mut buf).unwrap() {
        black_box(item);
        n += 1;
    }
    assert!(buf.is_empty());
    n
}

/// Feeds `wire` one byte at a time, decoding after each; returns the number of items.
fn decode_bytewise<D: Decoder>(mut codec: D, wire: &[u8]) -> usize
where
    D::Error: Debug,
{
    let mut buf = BytesMut::with_capacity(wire.len());
    let mut n = 0;
    for &b in wire {
        buf.put_u8(b);
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            black_box(item);
            n += 1;
        }
    }
    n
}

/// Checks once, outside any timing, that every decoder reads the input fully
/// and sees the same bodies.
fn check_decoders(wire: &[u8], size: usize) {
    let mut ours = StompCodec::new(Version::V1_2);
    let mut buf = BytesMut::from(wire);
    let mut n = 0;
    while let Some(item) = ours.decode(&mut buf).unwrap() {
        let deploykit::stomp::Incoming::Frame(f) = item else { panic!("heart-beat in bench input") };
        assert_eq!(f.body.len(), size);
        assert_eq!(f.headers.len(), 7);
        n += 1;
    }
    assert_eq!(n, FRAMES);

    let mut peer = async_stomp::client::ClientCodec::new();
    let mut buf = BytesMut::from(wire);
    let mut n = 0;
    while let Some(m) = peer.decode(&mut buf).unwrap() {
        match m.content {
            async_stomp::FromServer::Message { body, headers, .. } => {
                assert_eq!(body.map(|b| b.len()), Some(size));
                assert!(headers.len() >= 4, "{headers:?}");
            }
            other => panic!("{other:?}"),
        }
        n += 1;
    }
    assert_eq!(n, FRAMES, "async-stomp");

    let mut peer = tokio_stomp_2::client::ClientCodec;
    let mut buf = BytesMut::from(wire);
    let mut n = 0;
    while let Some(m) = peer.decode(&mut buf).unwrap() {
        match m.content {
            tokio_stomp_2::FromServer::Message { body, .. } => assert_eq!(body.map(|b| b.len()), Some(size)),
            other => panic!("{other:?}"),
        }
        n += 1;
    }
    assert_eq!(n, FRAMES, "tokio-stomp-2");
}

fn decode(c: &mut Criterion) {
    for (label, size) in SIZES {
        let wire = encode_wire(&message_frames(size));
        check_decoders(&wire, size);
        let mut g = c.benchmark_group(format!("decode_{label}"));
        g.throughput(Throughput::ElementsAndBytes { elements: FRAMES as u64, bytes: wire.len() as u64 });
        g.bench_function("deploykit", |b| b.iter_batched(|| BytesMut::from(&wire[..]), |buf| decode_all(StompCodec::new(Version::V1_2), buf), BatchSize::LargeInput));
        g.bench_function("async-stomp", |b| b.iter_batched(|| BytesMut::from(&wire[..]), |buf| decode_all(async_stomp::client::ClientCodec::new(), buf), BatchSize::LargeInput));
        g.bench_function("tokio-stomp-2", |b| b.iter_batched(|| BytesMut::from(&wire[..]), |buf| decode_all(tokio_stomp_2::client::ClientCodec, buf), BatchSize::LargeInput));
        g.finish();
    }
}

/// Length of what an encoder writes for the given inputs.
fn encoded_len<T, E: Encoder<T>>(mut codec: E, items: Vec<T>) -> u64
where
    E::Error: Debug,
{
    let mut dst = BytesMut::new();
    for item in items {
        codec.encode(item, &mut dst).unwrap();
    }
    dst.len() as u64
}

fn to_async_stomp(sends: &[async_stomp::ToServer]) -> Vec<async_stomp::Message<async_stomp::ToServer>> {
    sends.iter().cloned().map(Into::into).collect()
}

fn to_tokio_stomp(sends: &[tokio_stomp_2::ToServer]) -> Vec<tokio_stomp_2::Message<tokio_stomp_2::ToServer>> {
    sends.iter().cloned().map(Into::into).collect()
}

fn encode(c: &mut Criterion) {
    for (label, size) in SIZES {
        let messages = message_frames(size);
        let sends = send_frames(size);
        let a_sends = async_stomp_sends(&sends);
        let t_sends = tokio_stomp_sends(&sends);
        let elements = FRAMES as u64;
        let ours_len = encoded_len(StompCodec::new(Version::V1_2), sends.clone());
        let msg_len = encoded_len(StompCodec::new(Version::V1_2), messages.clone());
        let a_len = encoded_len(async_stomp::client::ClientCodec::new(), to_async_stomp(&a_sends));
        let t_len = encoded_len(tokio_stomp_2::client::ClientCodec, to_tokio_stomp(&t_sends));
        let mut dst = BytesMut::with_capacity(2 * (ours_len.max(a_len).max(t_len).max(msg_len) as usize));

        let mut g = c.benchmark_group(format!("encode_{label}"));
        g.throughput(Throughput::ElementsAndBytes { elements, bytes: ours_len });
        g.bench_function("deploykit SEND &Frame", |b| {
            let mut codec = StompCodec::new(Version::V1_2);
            b.iter(|| {
                dst.clear();
                for f in &sends {
                    codec.encode(f, &mut dst).unwrap();
                }
                black_box(dst.len())
            })
        });
        g.bench_function("deploykit SEND by value", |b| {
            let mut codec = StompCodec::new(Version::V1_2);
            b.iter_batched(
                || sends.clone(),
                |frames| {
                    dst.clear();
                    for f in frames {
                        codec.encode(f, &mut dst).unwrap();
                    }
                    black_box(dst.len())
                },
                BatchSize::LargeInput,
            )
        });
        g.throughput(Throughput::ElementsAndBytes { elements, bytes: a_len });
        g.bench_function("async-stomp SEND by value", |b| {
            let mut codec = async_stomp::client::ClientCodec::new();
            b.iter_batched(
                || to_async_stomp(&a_sends),
                |msgs| {
                    dst.clear();
                    for m in msgs {
                        codec.encode(m, &mut dst).unwrap();
                    }
                    black_box(dst.len())
                },
                BatchSize::LargeInput,
            )
        });
        g.throughput(Throughput::ElementsAndBytes { elements, bytes: t_len });
        g.bench_function("tokio-stomp-2 SEND by value", |b| {
            let mut codec = tokio_stomp_2::client::ClientCodec;
            b.iter_batched(
                || to_tokio_stomp(&t_sends),
                |msgs| {
                    dst.clear();
                    for m in msgs {
                        codec.encode(m, &mut dst).unwrap();
                    }
                    black_box(dst.len())
                },
                BatchSize::LargeInput,
            )
        });
        g.throughput(Throughput::ElementsAndBytes { elements, bytes: msg_len });
        g.bench_function("deploykit MESSAGE &Frame", |b| {
            let mut codec = StompCodec::new(Version::V1_2);
            b.iter(|| {
                dst.clear();
                for f in &messages {
                    codec.encode(f, &mut dst).unwrap();
                }
                black_box(dst.len())
            })
        });
        g.finish();
    }
}

fn bytewise(c: &mut Criterion) {
    for (label, size) in BYTEWISE_SIZES {
        let mut wire = b"MESSAGE\ndestination:/queue/a\nmessage-id:007\nsubscription:0\n\n".to_vec();
        wire.extend(body(size, 0));
        wire.push(0);
        assert_eq!(decode_bytewise(StompCodec::new(Version::V1_2), &wire), 1);
        let mut g = c.benchmark_group(format!("bytewise_{label}"));
        g.throughput(Throughput::Bytes(wire.len() as u64));
        if size > PEER_BYTEWISE_MAX / 4 {
            // Fewer, longer samples: the re-parsing peers take tens of ms per iteration.
            g.sample_size(10);
        }
        g.bench_function("deploykit", |b| b.iter(|| decode_bytewise(StompCodec::new(Version::V1_2), &wire)));
        if size <= PEER_BYTEWISE_MAX {
            assert_eq!(decode_bytewise(async_stomp::client::ClientCodec::new(), &wire), 1);
            assert_eq!(decode_bytewise(tokio_stomp_2::client::ClientCodec, &wire), 1);
            g.bench_function("async-stomp", |b| b.iter(|| decode_bytewise(async_stomp::client::ClientCodec::new(), &wire)));
            g.bench_function("tokio-stomp-2", |b| b.iter(|| decode_bytewise(tokio_stomp_2::client::ClientCodec, &wire)));
        }
        g.finish();
    }
}

fn config() -> Criterion {
    // Modest run time: a 2-core machine shared with other work.
    Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, encode, bytewise
}
criterion_main!(benches);
