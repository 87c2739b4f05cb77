//! W3C trace context (`traceparent`) carried from an enqueue to every attempt of the job, so a
//! tracing backend can show enqueue → attempts as one trace. mend stores the header's text
//! with the job; an exporter (see `mend-server`'s `otel`) turns it into parent and link.

use std::fmt;

/// A parsed `traceparent`: version 00, trace id, parent span id, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TraceParent {
    /// Parses a `traceparent` header value; `None` when it is not valid (the W3C rule: an
    /// invalid header is ignored, not an error).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; later versions may append more.
        if version == "ff" || hex_bytes::<1>(version).is_none() {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id = hex_bytes::<16>(trace)?;
        let span_id = hex_bytes::<8>(span)?;
        let [flags] = hex_bytes::<1>(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new random span in the same trace.
    pub fn child(&self) -> Self {
        TraceParent {
            span_id: random_span_id(),
            ..*self
        }
    }

    /// A new trace (random ids, sampled).
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        while trace_id == [0; 16] {
            trace_id = fastrand::u128(..).to_be_bytes();
        }
        TraceParent {
            trace_id,
            span_id: random_span_id(),
            flags: 1,
        }
    }
}

fn random_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            self.flags
        )
    }
}

/// What an exporter does to make a span continue a stored trace: `(span, traceparent, link)`.
pub type ContinueHook = fn(&tracing::Span, &str, bool);

static CONTINUE_HOOK: std::sync::OnceLock<ContinueHook> = std::sync::OnceLock::new();

/// Installs the exporter's hook (`mend-server`'s `otel` does, when it exports spans); the
/// first one installed stays. The core stays free of any tracing backend this way.
pub fn set_continue_hook(hook: ContinueHook) {
    let _ = CONTINUE_HOOK.set(hook);
}

/// Makes `span` (created, not yet entered) a child of `traceparent` and, with `link`, link
/// to it — when an exporter installed a hook; otherwise nothing happens.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, link: bool) {
    if let (Some(hook), Some(tp)) = (CONTINUE_HOOK.get(), traceparent) {
        hook(span, tp, link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_nonsense() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(s).unwrap();
        assert_eq!(tp.to_string(), s);
        assert_eq!(tp.flags, 1);
        let child = tp.child();
        assert_eq!(child.trace_id, tp.trace_id);
        assert_ne!(child.span_id, tp.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-xyz-00f067aa0ba902b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad:?}");
        }
        assert!(TraceParent::parse(&TraceParent::new_root().to_string()).is_some());
    }
}
