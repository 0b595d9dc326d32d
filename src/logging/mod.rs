//! Where log lines go (SPEC §11): formatted on the request's thread, handed to a bounded
//! in-memory queue, written to standard error by one writer thread. A full queue (a reader that
//! stopped reading, a full pipe) drops the line and counts it — a request never waits on the log.
//! `tollgate_log_lines_dropped_total` reports the count. The writer thread writes through a
//! buffer that it flushes whenever the queue runs empty: under load one `write` carries many
//! lines (a system call per line cost `/auth` about a third of its throughput on two cores),
//! and when idle a line is out at once. The decision line of each request is formatted by
//! `decision`, by hand; every other event by `tracing-subscriber`.

pub mod decision;

use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

/// Lines the queue holds before new ones are dropped.
const QUEUED_LINES: usize = 16_384;

/// Bytes the writer thread gathers before it writes (it also writes when the queue is empty).
const WRITE_BUFFER: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread; dropping it writes out what is queued. Hold it until exit.
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Installs the global subscriber: `filter` (an `EnvFilter` directive, e.g. `info`), JSON or
/// text lines, through the non-blocking writer.
pub fn init(filter: &str, json: bool) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("tollgate-log")
        .finish(std::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            std::io::stderr(),
        ));
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
    LogGuard { _writer: guard }
}

/// Log lines dropped because the queue was full, since start.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}
