//! Bounded text from untrusted bytes: the head of an HTTP body and the tail of a process's
//! output, cut to a byte budget on a UTF-8 boundary, with a mark where something was left out.

/// The first `limit` bytes of a body as text. `truncated` says more bytes followed.
pub(crate) fn head(bytes: &[u8], truncated: bool) -> String {
    let mut cut = bytes;
    if truncated {
        // Drop a character split by the cut rather than showing a replacement mark for it.
        if let Err(e) = std::str::from_utf8(cut) {
            if e.error_len().is_none() {
                cut = &cut[..e.valid_up_to()];
            }
        }
    }
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if truncated {
        s.push('…');
    }
    s
}

/// The last bytes of a stream, kept to a budget as the stream is read.
#[derive(Debug)]
pub(crate) struct Tail {
    buf: Vec<u8>,
    cap: usize,
    dropped: bool,
}

impl Tail {
    /// A tail that keeps the last `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            cap,
            dropped: false,
        }
    }

    /// Append bytes, forgetting the oldest past the budget (amortised: the buffer is trimmed
    /// when it reaches twice the budget).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - self.cap..]);
            self.dropped = true;
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 2 * self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
            self.dropped = true;
        }
    }

    /// The kept bytes as text, starting with `…` when older output was left out.
    pub(crate) fn text(&self) -> String {
        let start = self.buf.len().saturating_sub(self.cap);
        let dropped = self.dropped || start > 0;
        let mut bytes = &self.buf[start..];
        if dropped {
            // Skip the continuation bytes of a character split by the cut (at most three).
            let skip = bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count();
            bytes = &bytes[skip..];
        }
        let s = String::from_utf8_lossy(bytes);
        if dropped {
            format!("…{s}")
        } else {
            s.into_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_cuts_on_a_char_boundary_and_marks_the_cut() {
        assert_eq!(head(b"hello", false), "hello");
        let bytes = "aé".as_bytes(); // 'é' is two bytes
        assert_eq!(head(&bytes[..2], true), "a…");
        assert_eq!(head(b"ab", true), "ab…");
    }

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        assert_eq!(t.text(), "ab");
        t.push(b"cdef");
        assert_eq!(t.text(), "…cdef");
        for _ in 0..100 {
            t.push(b"xy");
        }
        assert_eq!(t.text(), "…xyxy");
        assert!(t.buf.len() <= 8, "bounded: {}", t.buf.len());
        t.push(b"0123456789");
        assert_eq!(t.text(), "…6789");
    }

    #[test]
    fn tail_skips_a_split_character() {
        let mut t = Tail::new(3);
        t.push("aéé".as_bytes()); // 5 bytes: a, é(2), é(2); the last 3 start inside an 'é'
        assert_eq!(t.text(), "…é");
    }
}
