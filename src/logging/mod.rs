//! Where log lines go (SPEC §11): formatted on the thread that writes them and handed to a
//! bounded in-memory queue (`queue`), written to standard error by one writer thread. A full
//! queue (a reader that stopped reading, a full pipe) drops the line and counts it — a request
//! never waits on the log. `tollgate_log_lines_dropped_total` reports the count. The writer
//! thread lingers after each flush, so that lines go out in few `write`s and the threads that
//! queue them rarely wake it: without the linger a queue that ran empty between two requests
//! cost each line a wake-up of the writer thread and a `write` of its own (a system call per
//! line cost `/auth` about a third of its throughput on two cores; at token-issuance rates,
//! where the queue empties after every line, the writer's wake-ups were most of the server's 8%
//! system time). The decision line of each request is formatted by `decision`, by hand; every
//! other event by `tracing-subscriber`.

pub mod decision;
mod queue;

pub use queue::{Gathering, gather_lines_on_this_thread, send_batch};

/// Keeps the writer thread; dropping it writes out what is queued, once the threads that
/// gather lines (the listener's workers, ending as the process does) have handed theirs over.
/// It waits at most a second for them, then at most two for the writer (a second to hand it
/// the stop, a second for it to write out). Hold it until exit.
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        queue::send_batch();
        if let Some(queue) = queue::QUEUE.get() {
            queue.close(std::time::Duration::from_secs(1));
        }
    }
}

/// Installs the global subscriber: `filter` (an `EnvFilter` directive, e.g. `info`), JSON or
/// text lines, through the non-blocking writer.
pub fn init(filter: &str, json: bool) -> LogGuard {
    // A directive on a span (`target[span]=level`) makes a call site's answer depend on the
    // span it is in: then decision lines ask every time.
    let remembered = !filter.contains('[');
    // A filter `EnvFilter` refuses falls back to `info` below: nothing to report then.
    if tracing_subscriber::EnvFilter::try_new(filter).is_ok() && !enables_tollgate(filter) {
        // Written straight away: the filter may let no warning of Tollgate's through.
        eprintln!(
            "tollgate: TOLLGATE_LOG={:?} turns on no level for Tollgate's own lines (decisions, \
             errors): a word that is not a level (`trace`, `debug`, `info`, `warn`, `error`, \
             `off`) names a module; did you mean `warn`?",
            crate::untrusted::bounded(filter)
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match queue::Queue::start(std::io::stderr(), queue::QUEUED_LINES, queue::LINGER) {
        Ok(started) => {
            let _ = queue::QUEUE.set(started);
        }
        // Writing in place would make every request wait on standard error (a log reader
        // that stopped reading would stall the gateway): not started at all.
        Err(error) => {
            // Not `eprintln!`, which panics when standard error is a closed pipe.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("tollgate: cannot start the log writer thread ({error}); exiting\n")
                    .as_bytes(),
            );
            std::process::exit(1);
        }
    }
    let _ = decision::SINK.set(decision::Sink { json });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(queue::Lines);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    // From here on the filter is the process's.
    decision::REMEMBERED.store(remembered, std::sync::atomic::Ordering::Relaxed);
    LogGuard(())
}

/// Log lines dropped because the queue was full, since start.
pub fn dropped_lines() -> u64 {
    queue::QUEUE.get().map_or(0, queue::Queue::dropped)
}

/// Whether `filter` lets some of Tollgate's own lines through: it is `off` (asked for) or empty
/// (`tracing`'s default, errors), or one
/// of its directives is a level other than `off`, names a `tollgate` target, or names a span
/// (whose lines cannot be told here). `warning` (a word that is no level names a target, at
/// `trace`) lets none through, and nothing says so but [`init`].
fn enables_tollgate(filter: &str) -> bool {
    const LEVELS: [&str; 5] = ["trace", "debug", "info", "warn", "error"];
    if filter.trim().is_empty() || filter.trim().eq_ignore_ascii_case("off") {
        return true;
    }
    let directives = || filter.split(',').map(str::trim);
    let off = |directive: &str| directive.to_ascii_lowercase().ends_with("=off");
    let named = |directive: &str| {
        let target = directive.split(['=', '[']).next().unwrap_or_default();
        target.starts_with("tollgate") || directive.starts_with('[')
    };
    // `tollgate=off` turns off what a bare level turned on.
    let all_off = directives()
        .any(|directive| directive.split('=').next() == Some("tollgate") && off(directive));
    directives().any(|directive| named(directive) && !off(directive))
        || (!all_off
            && directives().any(|directive| {
                LEVELS
                    .iter()
                    .any(|level| directive.eq_ignore_ascii_case(level))
            }))
}

#[cfg(test)]
mod tests {
    use super::enables_tollgate;

    #[test]
    fn a_filter_that_turns_every_line_of_tollgate_off_is_told_apart() {
        for on in [
            "info",
            "WARN",
            "error,hyper=debug",
            "tollgate=debug",
            "tollgate::proxy=trace,warn",
            "tollgate",
            "hyper=debug, info",
            "[request]=debug",
            "info,tollgate=off,tollgate::proxy=debug",
            "off",
            "",
        ] {
            assert!(enables_tollgate(on), "{on}");
        }
        for off in [
            "warning",
            "fatal",
            "notice",
            "hyper=debug",
            "tollgate=off",
            "info,tollgate=off",
        ] {
            assert!(!enables_tollgate(off), "{off}");
        }
    }
}
