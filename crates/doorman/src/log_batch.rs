//! Doorman's log output: standard error, with a way to write many lines at once.
//!
//! Every event is one line written to stderr as it happens, except inside [`batched`], where the
//! lines the current thread logs are gathered and written with one `write`. The audit writer
//! logs each batch of records that way: a busy gateway would otherwise make one system call per
//! tool call (and wake whatever reads its stderr, a journal or a container runtime, as often).

use std::{
    cell::RefCell,
    io::{self, Write},
};

use tracing_subscriber::fmt::MakeWriter;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered_len() -> Option<usize> {
        GATHERED.with(|g| g.borrow().as_ref().map(Vec::len))
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
