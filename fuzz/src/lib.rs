//! Helpers shared by the fuzz targets: splitting one fuzz input into the
//! fields a parser is fed (destination, headers, body...), so seeds stay
//! readable text and the fuzzer can mutate each field.

/// Separates fields in a fuzz input: ASCII "unit separator" (0x1f), which no
/// real input needs and which seeds can write as `\x1f`.
pub const SEP: u8 = 0x1f;

/// A fuzz input read field by field; every read is total (an exhausted input yields empty fields and zero bytes).
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { rest: data }
    }

    /// The next byte, or 0 when the input is exhausted.
    pub fn byte(&mut self) -> u8 {
        match self.rest.split_first() {
            Some((b, rest)) => {
                self.rest = rest;
                *b
            }
            None => 0,
        }
    }

    /// The bytes up to the next [`SEP`] (consumed) or the end.
    pub fn field(&mut self) -> &'a [u8] {
        match self.rest.iter().position(|b| *b == SEP) {
            Some(i) => {
                let (field, rest) = self.rest.split_at(i);
                self.rest = rest.get(1..).unwrap_or_default();
                field
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    /// The next field as text (invalid UTF-8 replaced, as a decoder's caller that checks UTF-8 first would refuse it).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.field()).into_owned()
    }

    /// Whatever is left, separators included.
    pub fn rest(self) -> &'a [u8] {
        self.rest
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// `name:value` lines (split at the first `:`) into STOMP headers, in order; lines without `:` become a header with an empty value.
pub fn headers(text: &[u8]) -> deploykit::stomp::Headers {
    let mut headers = deploykit::stomp::Headers::new();
    for line in text.split(|b| *b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let line = String::from_utf8_lossy(line);
        match line.split_once(':') {
            Some((name, value)) => headers.push(name.to_owned(), value.to_owned()),
            None => headers.push(line.into_owned(), String::new()),
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_and_run_dry() {
        let mut i = Input::new(b"\x05a\x1fb:c\nd\x1f\x1f");
        assert_eq!(i.byte(), 5);
        assert_eq!(i.field(), b"a");
        let h = headers(i.field());
        assert_eq!(h.get("b"), Some("c"));
        assert_eq!(h.get("d"), Some(""));
        assert_eq!(i.field(), b"");
        assert!(i.is_empty());
        assert_eq!(i.field(), b"");
        assert_eq!(i.byte(), 0);
    }
}
