//! Doorman's log output: standard error, with a way to write many lines at once.
//!
//! Every event is one line written to stderr as it happens, except inside [`batched`], where the
//! lines the current thread logs are gathered and written with one `write`. The audit writer
//! logs each batch of records that way: a busy gateway would otherwise make one system call per
//! tool call (and wake whatever reads its stderr, a journal or a container runtime, as often).
//!
//! [`PlainFields`] writes the fields of a human-readable line without colours, byte for byte as
//! `tracing-subscriber`'s own formatter does, at a fraction of its cost: every audit record is
//! such a line, with a dozen fields.

use std::{
    cell::RefCell,
    fmt,
    io::{self, Write},
};

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FormatFields, MakeWriter, format::Writer},
};

thread_local! {
    /// The lines gathered by the `batched` call running on this thread, if any.
    static GATHERED: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The `MakeWriter` given to the log formatter.
#[derive(Clone, Copy, Default)]
pub struct Stderr;

/// One event's writer (the formatter writes each line in one `write_all`).
pub struct LineWriter;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let gathered = GATHERED.with(|g| match g.borrow_mut().as_mut() {
            Some(buf) => {
                buf.extend_from_slice(line);
                true
            }
            None => false,
        });
        if gathered {
            Ok(line.len())
        } else {
            io::stderr().write(line)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Runs `f` (synchronous: nothing else runs on this thread meanwhile), writing the lines it logs
/// in one go at the end. Nested calls join the outer one.
pub fn batched<R>(f: impl FnOnce() -> R) -> R {
    let outer = GATHERED.with(|g| {
        let mut g = g.borrow_mut();
        if g.is_some() {
            return true;
        }
        *g = Some(Vec::with_capacity(64 * 1024));
        false
    });
    if outer {
        return f();
    }
    // Written even if `f` panics, so no line is lost or left for an unrelated caller.
    struct Flush;
    impl Drop for Flush {
        fn drop(&mut self) {
            if let Some(buf) = GATHERED.with(|g| g.borrow_mut().take())
                && !buf.is_empty()
            {
                let _ = io::stderr().lock().write_all(&buf);
            }
        }
    }
    let _flush = Flush;
    f()
}

/// The fields of a text line without colours: `message` as written, the rest `name=value`
/// with strings quoted (Rust's `Debug` escaping), separated by spaces; the same bytes
/// `DefaultFields` writes with ANSI off. Strings that need no escaping are copied as they are
/// instead of going through a formatter character by character.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let sanitize = writer.sanitizes_ansi_escapes();
        let mut v = PlainVisitor {
            writer,
            sanitize,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct PlainVisitor<'w> {
    writer: Writer<'w>,
    /// Terminal control characters in messages and errors are escaped (the writer's setting).
    sanitize: bool,
    first: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Starts a field: the separating space, then `name=` unless it is the message. `false`
    /// when an earlier write failed.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        let name = field.name();
        if name != "message" {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .result
                .and_then(|()| self.writer.write_str(name))
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }

    /// Text that may carry terminal control characters (a message, an error).
    fn sanitized(&mut self, s: &str) -> fmt::Result {
        if !self.sanitize || s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return self.writer.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.writer, "\\x{:02x}", ch as u32)?
                }
                '\u{80}'..='\u{9f}' => write!(self.writer, "\\u{{{:x}}}", ch as u32)?,
                _ => self.writer.write_char(ch)?,
            }
        }
        Ok(())
    }
}

/// Whether `Debug` prints `s` unchanged between its quotes: printable ASCII without `"` and `\`.
fn plain(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            self.sanitized(value)
        } else if plain(value) {
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        self.result = self.sanitized(&value.to_string());
        if let Some(mut source) = value.source() {
            // As `DefaultFields` writes it: the name unstripped, the sources as a list.
            let name = field.name();
            self.result = self
                .result
                .and_then(|()| write!(self.writer, " {name}.sources=["));
            let mut first = true;
            loop {
                if !std::mem::take(&mut first) {
                    self.result = self.result.and_then(|()| self.writer.write_str(", "));
                }
                self.result = self
                    .result
                    .and_then(|()| self.sanitized(&source.to_string()));
                match source.source() {
                    Some(next) => source = next,
                    None => break,
                }
            }
            self.result = self.result.and_then(|()| self.writer.write_char(']'));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" && self.sanitize {
            let text = format!("{value:?}");
            self.sanitized(&text)
        } else {
            write!(self.writer, "{value:?}")
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered_len() -> Option<usize> {
        GATHERED.with(|g| g.borrow().as_ref().map(Vec::len))
    }

    /// The lines `emit` logs, formatted without time or colours by `fields`.
    fn lines<N>(fields: N, emit: impl FnOnce()) -> String
    where
        N: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(fields)
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);
    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// Every kind of field, and strings that need escaping or sanitizing.
    fn every_kind_of_field() {
        let nested = Failure(
            "outer \x1b[31m",
            Some(Box::new(Failure(
                "inner",
                Some(Box::new(Failure("root", None))),
            ))),
        );
        let single = Failure("alone", None);
        tracing::info!(
            target: "doorman::audit",
            kind = %"tool_call",
            event = "call",
            person_id = Some("7f0c-\"quoted\"-\\"),
            person = None::<&str>,
            name = "tab\there\nnewline",
            r#type = "raw",
            unicode = "caf\u{e9} \u{85} \u{200b}",
            control = "\x1b[2J\x07",
            latency_us = 1234_i64,
            count = 99_u64,
            ratio = 0.25_f64,
            allowed = true,
            denied = false,
            error = &nested as &(dyn std::error::Error + 'static),
            cause = &single as &(dyn std::error::Error + 'static),
            list = ?vec!["a", "b"],
            "audit"
        );
        tracing::warn!("a message with \x1b[1m and \u{9b} in it: {}", "caf\u{e9}");
        tracing::error!(records = 3_u64, "lost");
        tracing::info!(message = "the message given as a field", after = 1_i64);
        tracing::info!(only = "fields, no message");
        tracing::info!(value = %"display, unquoted");
    }

    #[test]
    fn plain_fields_write_what_the_default_formatter_writes() {
        let ours = lines(PlainFields, every_kind_of_field);
        let theirs = lines(
            tracing_subscriber::fmt::format::DefaultFields::new(),
            every_kind_of_field,
        );
        assert_eq!(ours.lines().count(), 6, "{ours}");
        assert_eq!(ours, theirs);
        // What the comparison covers: quoting, escaping, sanitized messages and errors.
        assert!(ours.contains(r#"person_id="7f0c-\"quoted\"-\\""#), "{ours}");
        assert!(ours.contains(r#"type="raw""#), "{ours}");
        assert!(
            ours.contains("a message with \\x1b[1m and \\u{9b} in it"),
            "{ours}"
        );
        assert!(ours.contains("error.sources=[inner, root]"), "{ours}");
        assert!(
            !ours.contains('\x1b'),
            "no raw escape reaches the line: {ours}"
        );
    }

    #[test]
    fn lines_are_gathered_inside_a_batch_and_released_after() {
        assert_eq!(gathered_len(), None);
        batched(|| {
            LineWriter.write_all(b"one\n").unwrap();
            LineWriter.write_all(b"two\n").unwrap();
            assert_eq!(gathered_len(), Some(8));
            // A nested batch joins the outer one instead of writing early.
            batched(|| LineWriter.write_all(b"three\n").unwrap());
            assert_eq!(gathered_len(), Some(14));
        });
        assert_eq!(gathered_len(), None, "written out and released at the end");
    }
}
