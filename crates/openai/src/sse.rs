//! Server-sent events: an encoder and an incremental decoder.
//!
//! The decoder follows the WHATWG event-stream rules (lines end in LF, CRLF or CR; `:` starts a
//! comment; `data:` lines of one event are joined with `\n`; one space after the colon is dropped)
//! with one deliberate difference: a field it does not know is reported as
//! [`SseError::UnknownField`] instead of being ignored, because in the streams we read a line such
//! as `error: {...}` (llama.cpp) or a bare JSON line means the server broke the protocol, and the
//! caller wants to see that rather than a silently shorter reply.

use std::fmt::Write as _;

/// The `data` payload OpenAI-style streams send last.
pub const DONE: &str = "[DONE]";

/// Longest line or event the decoder buffers before giving up (1 MiB); a stream that never sends a
/// newline would otherwise grow memory without bound.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name; `None` means the default type `message`.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The `id:` field, if the event set one.
    pub id: Option<String>,
    /// The `retry:` field in milliseconds, if the event set one.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// An unnamed event carrying `data`.
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent { data: data.into(), ..Default::default() }
    }

    /// A named event (`event: NAME`) carrying `data`.
    pub fn named(event: impl Into<String>, data: impl Into<String>) -> Self {
        SseEvent { event: Some(event.into()), data: data.into(), ..Default::default() }
    }

    /// The `data: [DONE]` event that ends an OpenAI stream.
    pub fn done() -> Self {
        SseEvent::data(DONE)
    }

    /// True for the `data: [DONE]` terminator.
    pub fn is_done(&self) -> bool {
        self.data == DONE
    }

    /// The event on the wire, ending with the blank line that dispatches it. Multi-line data is
    /// split into one `data:` line per line so that the decoder gives back the same text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.data.len() + 16);
        if let Some(name) = &self.event {
            let _ = writeln!(out, "event: {}", one_line(name));
        }
        if let Some(id) = &self.id {
            let _ = writeln!(out, "id: {}", one_line(id));
        }
        if let Some(retry) = self.retry {
            let _ = writeln!(out, "retry: {retry}");
        }
        for line in split_lines(&self.data) {
            let _ = writeln!(out, "data: {line}");
        }
        out.push('\n');
        out
    }
}

/// A comment line (`: text`), used as a keep-alive that every client ignores.
pub fn encode_comment(text: &str) -> String {
    let mut out = String::new();
    for line in split_lines(text) {
        let _ = writeln!(out, ": {line}");
    }
    out
}

/// `data: [DONE]` followed by the blank line.
pub fn encode_done() -> String {
    SseEvent::done().encode()
}

// A name or id with a line break would start a new field on the wire; keep the first line only.
fn one_line(s: &str) -> &str {
    s.split(['\n', '\r']).next().unwrap_or("")
}

// Splits on LF, CRLF and CR, as the decoder does, so encode → decode is the identity.
fn split_lines(s: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let bytes = s.as_bytes();
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&s[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&s[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    lines.push(&s[start..]);
    lines
}

/// What the decoder found wrong with its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line is not valid UTF-8.
    #[error("event stream line {line} is not valid UTF-8 (bytes {bytes:02x?}); the server must send UTF-8 text")]
    InvalidUtf8 {
        /// 1-based line number in the stream.
        line: usize,
        /// The first bytes of the offending line.
        bytes: Vec<u8>,
    },
    /// A line names a field the protocol does not have (`event`, `data`, `id`, `retry`).
    #[error("event stream line {line} has unknown field `{field}` (value {value:?}); expected `data:`, `event:`, `id:`, `retry:` or a `:` comment")]
    UnknownField {
        /// 1-based line number in the stream.
        line: usize,
        /// The field name, i.e. the text before the first colon (the whole line if none).
        field: String,
        /// The value after the colon, so that a caller can still read e.g. an `error:` payload.
        value: String,
    },
    /// A line or an event grew past [`MAX_EVENT_BYTES`].
    #[error("event stream line {line}: event longer than {max} bytes without a blank line; the stream is not line-delimited SSE")]
    TooLong {
        /// 1-based line number in the stream.
        line: usize,
        /// The limit that was hit.
        max: usize,
    },
    /// The stream ended in the middle of an event.
    #[error("event stream ended inside an event ({pending_bytes} bytes not terminated by a blank line); the connection was probably cut")]
    Truncated {
        /// Bytes of the unfinished line plus the data buffered for the unfinished event.
        pending_bytes: usize,
    },
}

/// Incremental SSE decoder: [`push`](Self::push) bytes as they arrive (any split, even inside a
/// UTF-8 character or between CR and LF), then take events with [`next_event`](Self::next_event).
///
/// ```
/// use ulm_openai::sse::SseDecoder;
/// let mut dec = SseDecoder::new();
/// dec.push(b"event: ping\r\ndata: a\r\ndata: b\r\n\r\n: keep-alive\n\ndata: [DO");
/// let ev = dec.next_event().unwrap().unwrap();
/// assert_eq!((ev.event.as_deref(), ev.data.as_str()), (Some("ping"), "a\nb"));
/// assert!(dec.next_event().is_none()); // "[DO" is still incomplete
/// dec.push(b"NE]\n\n");
/// assert!(dec.next_event().unwrap().unwrap().is_done());
/// assert!(dec.finish().is_ok());
/// ```
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: Vec<u8>,            // raw bytes not yet split into lines
    pos: usize,              // how far `buf` has been scanned
    skip_lf: bool,           // the last line ended in CR: an LF right after it belongs to it
    started: bool,           // a BOM is only skipped at the very start
    line_no: usize,          // lines seen so far, for error messages
    event: Option<String>,   // fields of the event being assembled
    data: String,
    has_data: bool,
    id: Option<String>,
    retry: Option<u64>,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, an error for a malformed line, or `None` until more bytes arrive.
    /// After an error the offending line is consumed and decoding can go on.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, SseError>> {
        loop {
            let line = match self.take_line() {
                Some(Ok(line)) => line,
                Some(Err(e)) => return Some(Err(e)),
                None => {
                    if self.buf.len() + self.data.len() > MAX_EVENT_BYTES {
                        let line = self.line_no + 1;
                        self.buf.clear();
                        self.pos = 0;
                        self.reset_event();
                        return Some(Err(SseError::TooLong { line, max: MAX_EVENT_BYTES }));
                    }
                    return None;
                }
            };
            match self.process_line(&line) {
                Ok(Some(ev)) => return Some(Ok(ev)),
                Ok(None) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Convenience: push `bytes` and collect every event and error they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<SseEvent, SseError>> {
        self.push(bytes);
        std::iter::from_fn(|| self.next_event()).collect()
    }

    /// Ends the stream: `Ok` if it stopped between events, [`SseError::Truncated`] if a line or an
    /// event was still open (the spec drops such an event; we report it because for a chat stream
    /// it means the reply was cut).
    pub fn finish(&mut self) -> Result<(), SseError> {
        let pending = self.buf.len() + self.data.len();
        let open_line = !self.buf.is_empty();
        let open_event = self.has_data;
        self.buf.clear();
        self.pos = 0;
        self.reset_event();
        if open_line || open_event {
            Err(SseError::Truncated { pending_bytes: pending.max(1) })
        } else {
            Ok(())
        }
    }

    // Splits one line off `buf`; `None` if no line terminator has arrived yet.
    fn take_line(&mut self) -> Option<Result<String, SseError>> {
        if self.skip_lf && !self.buf.is_empty() {
            if self.buf[0] == b'\n' {
                self.buf.drain(..1);
            }
            self.skip_lf = false;
        }
        let end = self.buf[self.pos..].iter().position(|&b| b == b'\n' || b == b'\r');
        let Some(rel) = end else {
            self.pos = self.buf.len();
            return None;
        };
        let end = self.pos + rel;
        let mut consumed = end + 1;
        if self.buf[end] == b'\r' {
            match self.buf.get(end + 1) {
                Some(b'\n') => consumed += 1,
                Some(_) => {}
                None => self.skip_lf = true, // the LF may come in the next chunk
            }
        }
        let mut raw: Vec<u8> = self.buf.drain(..consumed).take(end).collect();
        self.pos = 0;
        self.line_no += 1;
        if !self.started {
            self.started = true;
            if raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
                raw.drain(..3);
            }
        }
        if raw.len() > MAX_EVENT_BYTES {
            return Some(Err(SseError::TooLong { line: self.line_no, max: MAX_EVENT_BYTES }));
        }
        match String::from_utf8(raw) {
            Ok(s) => Some(Ok(s)),
            Err(e) => {
                let bytes = e.into_bytes().into_iter().take(16).collect();
                Some(Err(SseError::InvalidUtf8 { line: self.line_no, bytes }))
            }
        }
    }

    fn process_line(&mut self, line: &str) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            // A blank line dispatches; an event without data is dropped, as the spec says.
            if !self.has_data {
                self.reset_event();
                return Ok(None);
            }
            let ev = SseEvent {
                event: self.event.take(),
                data: std::mem::take(&mut self.data),
                id: self.id.take(),
                retry: self.retry.take(),
            };
            self.has_data = false;
            return Ok(Some(ev));
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    self.reset_event();
                    return Err(SseError::TooLong { line: self.line_no, max: MAX_EVENT_BYTES });
                }
            }
            "event" => self.event = Some(value.to_string()),
            // The spec ignores an id holding NUL and a retry that is not all digits.
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            "id" => {}
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => {
                return Err(SseError::UnknownField {
                    line: self.line_no,
                    field: field.to_string(),
                    value: value.to_string(),
                });
            }
        }
        Ok(None)
    }

    fn reset_event(&mut self) {
        self.event = None;
        self.data.clear();
        self.has_data = false;
        self.id = None;
        self.retry = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(dec: &mut SseDecoder, bytes: &[u8]) -> Vec<SseEvent> {
        dec.feed(bytes).into_iter().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn encodes_data_named_and_done() {
        assert_eq!(SseEvent::data("{\"a\":1}").encode(), "data: {\"a\":1}\n\n");
        assert_eq!(SseEvent::named("opener", "hi").encode(), "event: opener\ndata: hi\n\n");
        assert_eq!(encode_done(), "data: [DONE]\n\n");
        assert_eq!(encode_comment("ping"), ": ping\n");
        let ev = SseEvent { id: Some("7".into()), retry: Some(300), ..SseEvent::data("x") };
        assert_eq!(ev.encode(), "id: 7\nretry: 300\ndata: x\n\n");
    }

    #[test]
    fn multi_line_data_round_trips() {
        for data in ["a\nb", "a\r\nb\rc", "", "\n", "trailing\n", " leading space"] {
            let wire = SseEvent::named("e", data).encode();
            let mut dec = SseDecoder::new();
            let got = all(&mut dec, wire.as_bytes());
            let want = data.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(got, vec![SseEvent::named("e", want)], "data {data:?}");
            dec.finish().unwrap();
        }
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        // CRLF, CR, LF, a comment, a BOM and a 4-byte UTF-8 character, cut at every byte.
        let wire = "\u{feff}: hello\r\nevent: a\r\ndata: héllo 🦀\r\n\r\ndata:x\rdata: y\r\rdata: [DONE]\n\n";
        let bytes = wire.as_bytes();
        let mut whole = SseDecoder::new();
        let want = all(&mut whole, bytes);
        assert_eq!(want.len(), 3);
        assert_eq!(want[0], SseEvent::named("a", "héllo 🦀"));
        assert_eq!(want[1], SseEvent::data("x\ny"));
        assert!(want[2].is_done());
        for cut in 0..=bytes.len() {
            let mut dec = SseDecoder::new();
            let mut got = all(&mut dec, &bytes[..cut]);
            got.extend(all(&mut dec, &bytes[cut..]));
            assert_eq!(got, want, "split at byte {cut}");
            dec.finish().unwrap();
        }
        // One byte at a time too.
        let mut dec = SseDecoder::new();
        let got: Vec<_> = bytes.iter().flat_map(|b| all(&mut dec, &[*b])).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn field_without_colon_and_without_space() {
        let mut dec = SseDecoder::new();
        // `data` alone is an empty data line; `data:x` has no space to strip; only one space goes.
        let got = all(&mut dec, b"data\ndata:x\ndata:  two\n\n");
        assert_eq!(got, vec![SseEvent::data("\nx\n two")]);
    }

    #[test]
    fn id_and_retry_are_kept_and_bad_retry_ignored() {
        let mut dec = SseDecoder::new();
        let got = all(&mut dec, b"id: 42\nretry: 1500\nretry: soon\ndata: x\n\n");
        assert_eq!(got[0].id.as_deref(), Some("42"));
        assert_eq!(got[0].retry, Some(1500));
    }

    #[test]
    fn event_without_data_is_dropped() {
        let mut dec = SseDecoder::new();
        assert!(all(&mut dec, b"event: lonely\n\ndata: x\n\n") == vec![SseEvent::data("x")]);
    }

    #[test]
    fn unknown_field_is_a_typed_error_with_the_value() {
        let mut dec = SseDecoder::new();
        let got = dec.feed(b"data: a\n\nerror: {\"message\":\"boom\"}\n\ndata: b\n\n");
        assert_eq!(got[0], Ok(SseEvent::data("a")));
        match &got[1] {
            Err(SseError::UnknownField { line, field, value }) => {
                assert_eq!((*line, field.as_str(), value.as_str()), (3, "error", "{\"message\":\"boom\"}"));
            }
            other => panic!("expected UnknownField, got {other:?}"),
        }
        // Decoding goes on after the error.
        assert_eq!(got[2], Ok(SseEvent::data("b")));
        // A bare JSON line is malformed too.
        let got = SseDecoder::new().feed(b"{\"choices\":[]}\n\n");
        assert!(matches!(got[0], Err(SseError::UnknownField { .. })), "{got:?}");
    }

    #[test]
    fn invalid_utf8_is_a_typed_error() {
        let got = SseDecoder::new().feed(b"data: \xff\xfe\n\n");
        assert!(matches!(got[0], Err(SseError::InvalidUtf8 { line: 1, .. })), "{got:?}");
        let msg = got[0].as_ref().unwrap_err().to_string();
        assert!(msg.contains("UTF-8"), "{msg}");
    }

    #[test]
    fn truncated_stream_is_reported() {
        let mut dec = SseDecoder::new();
        assert!(all(&mut dec, b"data: {\"choices\"").is_empty());
        assert!(matches!(dec.finish(), Err(SseError::Truncated { .. })));
        // A complete data line but no blank line: the event was never dispatched.
        let mut dec = SseDecoder::new();
        assert!(all(&mut dec, b"data: x\n").is_empty());
        assert!(matches!(dec.finish(), Err(SseError::Truncated { .. })));
        // A clean end.
        let mut dec = SseDecoder::new();
        all(&mut dec, b"data: x\n\n");
        assert_eq!(dec.finish(), Ok(()));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x0123_4567_89AB_CDEFu64;
        for round in 0..500 {
            let mut dec = SseDecoder::new();
            let mut bytes = Vec::new();
            for _ in 0..(round % 64) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                // Mostly protocol bytes, sometimes anything.
                let pick = b"data: event:\r\n\n:x\xff\xc3\xa9";
                bytes.push(if seed % 4 == 0 { (seed >> 8) as u8 } else { pick[(seed % pick.len() as u64) as usize] });
            }
            let cut = bytes.len() / 2;
            let _ = dec.feed(&bytes[..cut]);
            let _ = dec.feed(&bytes[cut..]);
            let _ = dec.finish();
        }
    }

    #[test]
    fn endless_line_is_bounded() {
        let mut dec = SseDecoder::new();
        let chunk = vec![b'a'; 64 * 1024];
        let mut err = None;
        for _ in 0..20 {
            for r in dec.feed(&chunk) {
                err = r.err().or(err);
            }
        }
        assert!(matches!(err, Some(SseError::TooLong { .. })));
    }
}
