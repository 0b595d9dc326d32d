//! Where log lines go (SPEC §11): formatted on the request's thread, handed to a bounded
//! in-memory queue, written to standard error by one writer thread. A full queue (a reader that
//! stopped reading, a full pipe) drops the line and counts it — a request never waits on the log.
//! `tollgate_log_lines_dropped_total` reports the count. The writer thread writes through a
//! buffer that it flushes whenever the queue runs empty, and after each flush it lingers
//! ([`LINGER`]) before it looks at the queue again: lines that arrive meanwhile go out together
//! in the next `write`, and the requests that queued them wake nobody. Without the linger a
//! queue that ran empty between two requests cost each line a wake-up of the writer thread and
//! a `write` of its own (a system call per line cost `/auth` about a third of its throughput on
//! two cores; at token-issuance rates, where the queue empties after every line, the writer's
//! wake-ups were most of the server's 8% system time). A line is out at most `LINGER` later.
//! The decision line of each request is formatted by `decision`, by hand; every other event by
//! `tracing-subscriber`.

pub mod decision;

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines the queue holds before new ones are dropped.
const QUEUED_LINES: usize = 16_384;

/// Bytes the writer thread gathers before it writes (it also writes when the queue is empty).
const WRITE_BUFFER: usize = 64 * 1024;

/// How long the writer thread waits after a flush before it takes the next lines.
pub const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// The writer thread's writer: buffered, and after each flush that wrote something it waits
/// `linger`, so that the lines queued meanwhile are written together.
struct Lingering<W: std::io::Write> {
    buffer: std::io::BufWriter<W>,
    linger: std::time::Duration,
}

impl<W: std::io::Write> std::io::Write for Lingering<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let wrote = !self.buffer.buffer().is_empty();
        self.buffer.flush()?;
        if wrote {
            // The log's own thread, never a runtime's: waiting here is what gathers lines.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(self.linger);
        }
        Ok(())
    }
}

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread; dropping it writes out what is queued. Hold it until exit.
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Installs the global subscriber: `filter` (an `EnvFilter` directive, e.g. `info`), JSON or
/// text lines, through the non-blocking writer.
pub fn init(filter: &str, json: bool) -> LogGuard {
    // A directive on a span (`target[span]=level`) makes a call site's answer depend on the
    // span it is in: then decision lines ask every time.
    let remembered = !filter.contains('[');
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("tollgate-log")
        .finish(Lingering {
            buffer: std::io::BufWriter::with_capacity(WRITE_BUFFER, std::io::stderr()),
            linger: LINGER,
        });
    let _ = DROPPED.set(writer.error_counter());
    let _ = decision::SINK.set(decision::Sink {
        writer: writer.clone(),
        json,
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    // From here on the filter is the process's.
    decision::REMEMBERED.store(remembered, std::sync::atomic::Ordering::Relaxed);
    LogGuard { _writer: guard }
}

/// Log lines dropped because the queue was full, since start.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::Lingering;

    /// A flush writes out everything buffered before it returns (the linger comes after).
    #[test]
    fn a_lingering_flush_writes_out_every_line_first() {
        let mut writer = Lingering {
            buffer: std::io::BufWriter::with_capacity(1024, Vec::new()),
            linger: std::time::Duration::ZERO,
        };
        writer.write_all(b"one\n").unwrap();
        writer.write_all(b"two\n").unwrap();
        assert!(
            writer.buffer.get_ref().is_empty(),
            "buffered until the flush"
        );
        writer.flush().unwrap();
        assert_eq!(writer.buffer.get_ref().as_slice(), b"one\ntwo\n");
        writer.flush().unwrap();
        assert_eq!(writer.buffer.get_ref().as_slice(), b"one\ntwo\n");
    }
}
