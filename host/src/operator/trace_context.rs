//! W3C Trace Context (`traceparent`): received from a client or created at the API, carried
//! with the job through the queue to the worker, and with its completion back, so that the
//! logs and spans of one request on several hosts share a trace id. When OTLP export is on
//! (`otlp`), the ids are the exported spans' own.
//!
//! `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`; a header that is not
//! that (zero ids, upper case, a bad length) is ignored and a new trace begins, as the
//! specification asks. Later versions are read by their first four fields.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The `sampled` flag, passed on as received.
    pub sampled: bool,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // Never all zeros (invalid in the specification); the OS's generator cannot fail
    // without the machine being unusable for TLS too.
    while out.iter().all(|&b| b == 0) {
        getrandom::fill(&mut out).expect("the operating system's random source");
    }
    out
}

impl TraceContext {
    /// Reads a `traceparent` header; `None` for anything not valid.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut fields = header.split('-');
        let version = fields.next()?;
        let trace = fields.next()?;
        let span = fields.next()?;
        let flags = fields.next()?;
        let version: [u8; 1] = hex(version)?;
        // Version ff is invalid; version 00 has exactly four fields.
        if version[0] == 0xff || (version[0] == 0 && fields.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex(trace)?;
        let span_id: [u8; 8] = hex(span)?;
        let flags: [u8; 1] = hex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// A new trace, sampled.
    pub fn root() -> Self {
        Self {
            trace_id: random(),
            span_id: random(),
            sampled: true,
        }
    }

    /// A span of the same trace whose parent is this one.
    pub fn child(&self) -> Self {
        Self {
            span_id: random(),
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn span_id_hex(&self) -> String {
        self.span_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The `traceparent` header naming this span as the parent.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            u8::from(self.sampled)
        )
    }
}

/// The context of `span`, a child of `parent` (or a new trace): the exported span's ids
/// when OTLP export is on (its parent set to `parent`), else fresh ones.
pub fn enter(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
    let own = parent.map_or_else(TraceContext::root, |p| p.child());
    let ctx = super::otlp::adopt(span, parent).unwrap_or(own);
    span.record("trace_id", ctx.trace_id_hex());
    span.record("span_id", ctx.span_id_hex());
    if let Some(p) = parent {
        span.record("parent_id", p.span_id_hex());
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specifications_example_reads_and_writes_back() {
        let c = TraceContext::parse(EXAMPLE).unwrap();
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id_hex(), "00f067aa0ba902b7");
        assert!(c.sampled);
        assert_eq!(c.to_string(), EXAMPLE);
    }

    #[test]
    fn invalid_headers_are_ignored() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        // A later version may add fields; its first four are read.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let c = TraceContext::parse(later).unwrap();
        assert!(!c.sampled);
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_its_own_span() {
        let root = TraceContext::root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(TraceContext::root().trace_id, root.trace_id);
        assert_eq!(TraceContext::parse(&child.to_string()), Some(child));
    }
}
