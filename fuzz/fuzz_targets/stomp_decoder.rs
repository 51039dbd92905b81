//! The STOMP decoder (`core::stomp::codec`), fed a byte stream in arbitrary pieces.
//!
//! Input: one flags byte (version, small or default limits), one split seed,
//! then the stream. The stream is decoded twice, whole and in pieces whose
//! sizes come from the seed; both must yield the same frames and fail alike
//! (the incremental decoder must not depend on how the network cut the bytes).
//! Every decoded frame must re-encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use deploykit::stomp::codec::encode_frame;
use deploykit::stomp::{Frame, Incoming, Limits, StompCodec, Version};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// Small limits, so the limit paths are reached by small inputs.
const SMALL: Limits = Limits { max_frame_size: 256, max_headers: 4, max_header_len: 48 };

/// Decodes `chunks` fed one after another; returns the frames and whether decoding failed.
fn run<'a>(version: Version, limits: Limits, chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Frame>, bool) {
    let mut codec = StompCodec::with_limits(version, limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Incoming::Frame(f))) => frames.push(f),
                Ok(Some(Incoming::Heartbeat)) => {}
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let (Some(&flags), Some(&seed)) = (data.first(), data.get(1)) else { return };
    let stream = data.get(2..).unwrap_or_default();
    let version = Version::ALL[usize::from(flags % 3)];
    let limits = if flags & 0x80 != 0 { SMALL } else { Limits::default() };

    let (whole, whole_failed) = run(version, limits, std::iter::once(stream));

    // Piece sizes from a xorshift sequence seeded by `seed`: 1 to 16 bytes.
    let mut state = u32::from(seed) | 0x100;
    let mut pieces = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (state % 16 + 1) as usize;
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    let (split, split_failed) = run(version, limits, pieces.into_iter());
    assert_eq!(whole, split, "frames differ when the stream arrives in pieces");
    assert_eq!(whole_failed, split_failed, "only one of whole/pieces failed");

    for frame in &whole {
        if let Ok(bytes) = encode_frame(frame, version) {
            let mut codec = StompCodec::new(version);
            let mut buf = bytes.clone();
            match codec.decode(&mut buf) {
                Ok(Some(Incoming::Frame(back))) => assert_eq!(&back, frame, "re-encoded frame decodes differently: {bytes:?}"),
                other => panic!("re-encoded frame {bytes:?} does not decode: {other:?}"),
            }
        }
    }
});
