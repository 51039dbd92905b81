//! The byte searches the decoder runs over a frame's header block: line ends and
//! colons, and whether the block is ASCII and holds a backslash.
//!
//! On x86-64 they compare sixteen bytes at once in SSE2 registers (part of the
//! x86-64 baseline, so present on every such CPU); elsewhere eight at a time in a
//! general register. A MESSAGE's header block is ~160 bytes, searched once per
//! frame: byte-by-byte loops here were a tenth of a consumer's instructions.

/// The high bit of each byte of `word` that equals `byte` (exact: no false matches).
#[inline(always)]
fn eq_bits(word: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ (u64::from(byte) * 0x0101_0101_0101_0101);
    // A byte of `x` is zero exactly where `word` holds `byte`: its high bit stays clear
    // both after adding 0x7f to its low seven bits and in `x` itself.
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// SSE2 forms of the searches (x86-64 only).
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};

    /// The sixteen bytes of `chunk` in a register.
    #[inline(always)]
    fn load(chunk: &[u8; 16]) -> __m128i {
        // SAFETY: SSE2 is part of the x86-64 baseline; the load reads exactly the sixteen
        // bytes `chunk` borrows, and an unaligned address is allowed.
        unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) }
    }

    /// Bit `i` set where byte `i` of `chunk` is an LF (or, with `colon`, a colon).
    #[inline(always)]
    pub(super) fn marks(chunk: &[u8; 16], colon: bool) -> u32 {
        let v = load(chunk);
        // SAFETY: SSE2 is part of the x86-64 baseline; these only compute on registers.
        unsafe {
            let mut eq = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\n' as i8));
            if colon {
                eq = _mm_or_si128(eq, _mm_cmpeq_epi8(v, _mm_set1_epi8(b':' as i8)));
            }
            _mm_movemask_epi8(eq) as u32
        }
    }

    /// `(any byte ≥ 0x80, any backslash)` in `block`, `None` if it is shorter than sixteen bytes.
    #[inline(always)]
    pub(super) fn high_and_backslash(block: &[u8]) -> Option<(bool, bool)> {
        // The last sixteen bytes are read last, overlapping the whole chunks before them
        // when the length is not a multiple of sixteen: looking at a byte twice changes
        // neither answer, and the tail needs no byte loop.
        let last = block.last_chunk::<16>()?;
        // SAFETY: SSE2 is part of the x86-64 baseline; these only compute on registers.
        unsafe {
            let slash = _mm_set1_epi8(b'\\' as i8);
            let v = load(last);
            let (mut any, mut slashes) = (v, _mm_cmpeq_epi8(v, slash));
            for c in block.as_chunks::<16>().0 {
                let v = load(c);
                any = _mm_or_si128(any, v);
                slashes = _mm_or_si128(slashes, _mm_cmpeq_epi8(v, slash));
            }
            Some((_mm_movemask_epi8(any) != 0, _mm_movemask_epi8(slashes) != 0))
        }
    }
}

/// Index of the first LF in `buf` from `at` on, or with `colon` of the first LF or colon:
/// sixteen bytes at a time on x86-64, then eight, then the last few one by one.
#[inline]
pub(crate) fn next_mark(buf: &[u8], mut at: usize, colon: bool) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = buf.get(at..).and_then(<[u8]>::first_chunk::<16>) {
        let bits = sse2::marks(chunk, colon);
        if bits != 0 {
            return Some(at + bits.trailing_zeros() as usize);
        }
        at += 16;
    }
    while let Some(&word) = buf.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(word);
        let mut bits = eq_bits(w, b'\n');
        if colon {
            bits |= eq_bits(w, b':');
        }
        if bits != 0 {
            return Some(at + (bits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = buf.get(at..)?;
    rest.iter().position(|&b| b == b'\n' || (colon && b == b':')).map(|k| at + k)
}

/// What one pass over a header block found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockMarks {
    /// Every byte is ASCII (so the block is valid UTF-8).
    pub(crate) ascii: bool,
    /// Some byte is a backslash (so a header may hold an escape).
    pub(crate) backslash: bool,
}

/// Whether `block` is all ASCII and whether it holds a backslash, in one pass.
#[inline]
pub(crate) fn block_marks(block: &[u8]) -> BlockMarks {
    #[cfg(target_arch = "x86_64")]
    if let Some((high, backslash)) = sse2::high_and_backslash(block) {
        return BlockMarks { ascii: !high, backslash };
    }
    BlockMarks { ascii: block.is_ascii(), backslash: memchr::memchr(b'\\', block).is_some() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `eq_bits` marks exactly the bytes equal to its byte, for every byte value at every
    /// position, whatever the other bytes are (no carries between bytes).
    #[test]
    fn eq_bits_marks_exactly_the_matching_bytes() {
        for byte in 0..=255u8 {
            for at in 0..8 {
                for other in [byte ^ 0x80, byte.wrapping_add(1), byte.wrapping_sub(1), 0, 0xff] {
                    if other == byte {
                        continue;
                    }
                    let mut w = [other; 8];
                    w[at] = byte;
                    assert_eq!(eq_bits(u64::from_le_bytes(w), byte), 0x80 << (8 * at), "{byte} {at} {other}");
                    w[7 - at] = byte;
                    assert_eq!(eq_bits(u64::from_le_bytes(w), byte), (0x80 << (8 * at)) | (0x80 << (8 * (7 - at))), "{byte} {at} {other}");
                }
            }
        }
    }

    /// `next_mark` finds what a byte-by-byte search finds: every start, every length up to
    /// three vector chunks, a mark at every position, with and without colons wanted.
    #[test]
    fn next_mark_agrees_with_a_plain_search() {
        for len in 0..50 {
            for mark_at in 0..=len {
                for mark in [b'\n', b':'] {
                    let mut buf = vec![b'a'; len];
                    if let Some(b) = buf.get_mut(mark_at) {
                        *b = mark;
                    }
                    // Bytes that differ from the marks by one bit, or only in the high bit.
                    for (i, b) in buf.iter_mut().enumerate() {
                        if *b == b'a' && i % 3 == 0 {
                            *b = [b'\n' ^ 0x80, b':' ^ 0x80, b'\x0b', b';'][i % 4];
                        }
                    }
                    for at in 0..=len {
                        for colon in [false, true] {
                            let plain = buf.get(at..).and_then(|r| r.iter().position(|&b| b == b'\n' || (colon && b == b':'))).map(|k| at + k);
                            assert_eq!(next_mark(&buf, at, colon), plain, "len {len} mark {mark} at {mark_at} from {at} colon {colon}");
                        }
                    }
                }
            }
        }
        assert_eq!(next_mark(b"abc", 7, true), None, "a start past the end finds nothing");
    }

    /// `block_marks` answers like `is_ascii` and a backslash search for every length up to
    /// three vector chunks and every position of a high byte or a backslash, tail included.
    #[test]
    fn block_marks_sees_every_byte() {
        for len in 0..50 {
            assert_eq!(block_marks(&vec![b'x'; len]), BlockMarks { ascii: true, backslash: false }, "len {len}");
            for at in 0..len {
                for (byte, want) in [
                    (0x80u8, BlockMarks { ascii: false, backslash: false }),
                    (0xff, BlockMarks { ascii: false, backslash: false }),
                    (b'\\', BlockMarks { ascii: true, backslash: true }),
                    (b'\\' ^ 0x80, BlockMarks { ascii: false, backslash: false }),
                ] {
                    let mut block = vec![b'x'; len];
                    block[at] = byte;
                    assert_eq!(block_marks(&block), want, "len {len} at {at} byte {byte:#x}");
                }
            }
        }
    }
}
