//! The log queue (SPEC §11): log lines go from the threads that write them, through a bounded
//! in-memory queue, to one writer thread that writes them to standard error. A request's thread
//! never waits on it: when the queue holds [`QUEUED_LINES`] lines (a reader that stopped
//! reading, a full pipe), new lines are dropped and each one is counted.
//!
//! The public listener's worker threads gather their lines in a batch of the thread's own and
//! hand it over whole, when it reaches [`BATCH_BYTES`] and whenever the worker's runtime is
//! about to wait for work ([`send_batch`] as its park hook), so that a line waits for no more
//! than the requests already in hand. One hand-over per batch instead of one per line: a line
//! handed over alone was a buffer allocated by the request's thread and freed by the writer's,
//! and under load those frees fought the request threads for the allocator's lock (measured as
//! `futex` calls). Every other thread hands over each line at once. A batch goes over in the
//! thread's own buffer, and the thread goes on in one the writer has written out and sent
//! back ([`SPARE_BUFFERS`] go round): in the steady state no buffer is allocated
//! or freed for the log. When none has come back (a writer that is behind), the thread hands
//! over a copy of the batch's size instead, so a stalled writer holds lines, not buffers.
//!
//! A thread that gathers holds a [`Gathering`] for as long as it does: dropping it hands the
//! thread's last lines over, and [`Queue::close`] (at exit) waits for every such thread to have
//! done so before it stops the writer. A worker ends after the listener drained, and it need
//! not have parked since its last request's line: without the wait, a worker slower to end
//! than the main thread lost those lines (seen as a decision line missing at exit).
//!
//! The writer thread writes through a buffer that it flushes whenever the queue runs empty,
//! and after each flush it lingers ([`LINGER`]) before it looks at the queue again: lines that
//! arrive meanwhile go out together in the next `write`, and the threads that queued them wake
//! nobody. A line is out at most `LINGER` after it was handed over.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// Lines the queue holds before new ones are dropped.
pub const QUEUED_LINES: usize = 16_384;

/// A worker thread's batch is handed over once it holds this many bytes.
pub const BATCH_BYTES: usize = 4096;

/// Batch buffers that go round between the threads that gather and the writer thread: enough
/// for the hand-overs of one of its write-and-linger turns under load (two workers hand a
/// batch over about every 100 µs each when they park often).
const SPARE_BUFFERS: usize = 64;

/// Bytes the writer thread gathers before it writes (it also writes when the queue is empty).
const WRITE_BUFFER: usize = 64 * 1024;

/// How long the writer thread waits after a flush before it takes the next lines.
pub const LINGER: Duration = Duration::from_millis(1);

/// What goes through the queue.
enum Message {
    /// Whole lines, newlines included, and how many.
    Lines(Vec<u8>, usize),
    /// Write out what came before, then say so.
    Stop(Sender<()>),
}

/// The sending side of the queue.
pub(super) struct Queue {
    sender: Sender<Message>,
    /// Batch buffers the writer thread has written out, emptied, for the next batches.
    spare: Receiver<Vec<u8>>,
    counts: Arc<Counts>,
    limit: usize,
    /// Threads gathering lines for this queue that have not handed their last ones over.
    gathering: Mutex<usize>,
    /// Told each time one of them has.
    gathered: Condvar,
}

/// What the senders and the writer thread share.
#[derive(Default)]
struct Counts {
    /// Lines handed over and not yet taken by the writer thread.
    queued: AtomicUsize,
    /// Lines dropped because the queue was full, or lost to a write that failed.
    dropped: AtomicU64,
}

impl Queue {
    /// A queue of `limit` lines and its writer thread, writing to `out`.
    pub(super) fn start<W: std::io::Write + Send + 'static>(
        out: W,
        limit: usize,
        linger: Duration,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = crossbeam_channel::bounded(limit.max(1));
        let (give_back, spare) = crossbeam_channel::bounded(SPARE_BUFFERS);
        // The buffers that go round (untouched until used); a copy handed over is of its
        // lines' size and does not come back.
        for _ in 0..SPARE_BUFFERS {
            let _ = give_back.try_send(Vec::with_capacity(2 * BATCH_BYTES));
        }
        let counts = Arc::new(Counts::default());
        let writer_counts = Arc::clone(&counts);
        std::thread::Builder::new()
            .name("tollgate-log".to_owned())
            .spawn(move || write_out(&receiver, &give_back, &writer_counts, out, linger))?;
        Ok(Self {
            sender,
            spare,
            counts,
            limit,
            gathering: Mutex::new(0),
            gathered: Condvar::new(),
        })
    }

    /// Hands `lines` lines over, or drops and counts them when the queue is full.
    fn send(&self, bytes: Vec<u8>, lines: usize) {
        let queued = self.counts.queued.fetch_add(lines, Ordering::Relaxed);
        if queued + lines > self.limit
            || self.sender.try_send(Message::Lines(bytes, lines)).is_err()
        {
            self.counts.queued.fetch_sub(lines, Ordering::Relaxed);
            self.counts
                .dropped
                .fetch_add(u64::try_from(lines).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    }

    /// Lines dropped since the start.
    pub(super) fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Relaxed)
    }

    /// Waits, at most `wait`, until every thread gathering lines for this queue has handed its
    /// last ones over (dropped its [`Gathering`]), then [`stop`](Self::stop)s the writer (at
    /// most twice `wait` more).
    pub(super) fn close(&self, wait: Duration) {
        let gathering = self
            .gathering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .gathered
            .wait_timeout_while(gathering, wait, |gathering| *gathering > 0);
        self.stop(wait);
    }

    /// Asks the writer thread to write out everything queued before this call and waits for
    /// it, at most `wait` (a writer stuck on a full pipe is given up on).
    pub(super) fn stop(&self, wait: Duration) {
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.sender.send_timeout(Message::Stop(done), wait).is_ok() {
            let _ = finished.recv_timeout(wait);
        }
    }
}

/// The writer thread: takes what is queued, writes it, flushes when the queue is empty, then
/// lingers; ends when asked to or when every sender is gone. Batch buffers go back to the
/// threads that gather through `give_back`.
fn write_out<W: std::io::Write>(
    receiver: &Receiver<Message>,
    give_back: &Sender<Vec<u8>>,
    counts: &Counts,
    out: W,
    linger: Duration,
) {
    let mut out = Out::new(out);
    while let Ok(first) = receiver.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Lines(mut bytes, lines) => {
                    out.write(&bytes, counts);
                    counts.queued.fetch_sub(lines, Ordering::Relaxed);
                    if (BATCH_BYTES..=8 * BATCH_BYTES).contains(&bytes.capacity()) {
                        bytes.clear();
                        let _ = give_back.try_send(bytes);
                    }
                }
                Message::Stop(done) => {
                    out.flush(counts);
                    let _ = done.send(());
                    return;
                }
            }
            next = receiver.try_recv().ok();
        }
        out.flush(counts);
        // The log's own thread, never a runtime's: waiting here is what gathers lines.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(linger);
    }
    out.flush(counts);
}

/// Standard error behind a buffer of [`WRITE_BUFFER`] bytes. A write that fails (standard
/// error closed, or a full pipe that does not block) loses the lines it did not write: each is
/// counted as dropped, the metric being the one place left to say so. The end of a line it
/// began is kept and written first next time, so the log never holds half a line run into the
/// next.
struct Out<W: std::io::Write> {
    out: W,
    buffer: Vec<u8>,
    /// Whether what reached `out` last ended inside a line (a write cut short): the buffer
    /// then begins with that line's rest.
    mid_line: bool,
}

impl<W: std::io::Write> Out<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            buffer: Vec::with_capacity(WRITE_BUFFER),
            mid_line: false,
        }
    }

    fn write(&mut self, bytes: &[u8], counts: &Counts) {
        if self.buffer.len() + bytes.len() > WRITE_BUFFER {
            self.flush(counts);
        }
        self.buffer.extend_from_slice(bytes);
    }

    fn flush(&mut self, counts: &Counts) {
        let mut written = 0;
        let failed = loop {
            if written == self.buffer.len() {
                break false;
            }
            match self.out.write(&self.buffer[written..]) {
                Ok(0) => break true,
                Ok(count) => written += count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if written > 0 {
            self.mid_line = self.buffer[written - 1] != b'\n';
        }
        let mut kept = written;
        if failed {
            // The rest of a line begun (in this write or an earlier one) is kept; every line
            // after it is lost.
            if self.mid_line {
                kept = memchr::memchr(b'\n', &self.buffer[written..])
                    .map_or(self.buffer.len(), |at| written + at + 1);
            }
            let lost = memchr::memchr_iter(b'\n', &self.buffer[kept..]).count();
            counts
                .dropped
                .fetch_add(u64::try_from(lost).unwrap_or(u64::MAX), Ordering::Relaxed);
        } else {
            let _ = self.out.flush();
        }
        self.buffer.copy_within(written..kept, 0);
        self.buffer.truncate(kept - written);
        self.buffer.shrink_to(WRITE_BUFFER);
    }
}

/// The queue, once `logging::init` started it.
pub(super) static QUEUE: std::sync::OnceLock<Queue> = std::sync::OnceLock::new();

/// One thread's lines not yet handed over.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    lines: usize,
    /// Whether this thread gathers lines (a worker whose runtime calls [`send_batch`]).
    gathers: bool,
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

/// Makes this thread gather its lines into batches until the returned [`Gathering`] is
/// dropped; meanwhile it must call [`send_batch`] whenever it may go idle (its runtime's park
/// hook). Hold it until the thread ends. Before `logging::init` it does nothing.
#[must_use = "the thread gathers lines only while it is held"]
pub fn gather_lines_on_this_thread() -> Gathering {
    Gathering::on(QUEUE.get())
}

/// A thread gathering its lines for a queue; dropping it hands the last ones over, and the
/// queue waits for that when it closes at exit.
pub struct Gathering(
    Option<&'static Queue>,
    /// Not `Send`: it stands for the thread that made it (its batch is that thread's).
    std::marker::PhantomData<*const ()>,
);

impl Gathering {
    fn on(queue: Option<&'static Queue>) -> Self {
        if let Some(queue) = queue {
            *queue
                .gathering
                .lock()
                .unwrap_or_else(PoisonError::into_inner) += 1;
            BATCH.with(|batch| batch.borrow_mut().gathers = true);
        }
        Self(queue, std::marker::PhantomData)
    }
}

impl Drop for Gathering {
    fn drop(&mut self) {
        let Some(queue) = self.0 else { return };
        send_batch_to(queue);
        let _ = BATCH.try_with(|batch| {
            if let Ok(mut batch) = batch.try_borrow_mut() {
                batch.gathers = false;
            }
        });
        let mut gathering = queue
            .gathering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *gathering = gathering.saturating_sub(1);
        queue.gathered.notify_all();
    }
}

/// Hands this thread's gathered lines over to the queue (a worker runtime's park hook).
pub fn send_batch() {
    if let Some(queue) = QUEUE.get() {
        send_batch_to(queue);
    }
}

fn send_batch_to(queue: &Queue) {
    let _ = BATCH.try_with(|batch| {
        let Ok(mut batch) = batch.try_borrow_mut() else {
            return;
        };
        if batch.lines > 0 {
            hand_over(queue, &mut batch);
        }
    });
}

/// Hands `batch`'s lines over: in the batch's buffer when the writer has sent one back to go on
/// with, else as a copy of their size, the thread keeping its buffer for the next ones (unless
/// one unusually long line grew it).
fn hand_over(queue: &Queue, batch: &mut Batch) {
    let bytes = match queue.spare.try_recv() {
        Ok(spare) => std::mem::replace(&mut batch.bytes, spare),
        Err(_) => {
            let bytes = batch.bytes.clone();
            batch.bytes.clear();
            if batch.bytes.capacity() > 8 * BATCH_BYTES {
                batch.bytes = Vec::with_capacity(2 * BATCH_BYTES);
            }
            bytes
        }
    };
    queue.send(bytes, std::mem::take(&mut batch.lines));
}

/// Adds one line to the queue: `write` appends it, newline included, to the buffer it is
/// given. False, and nothing written, before `logging::init`.
pub(super) fn line(write: impl FnOnce(&mut Vec<u8>)) -> bool {
    let Some(queue) = QUEUE.get() else {
        return false;
    };
    line_to(queue, write);
    true
}

/// Adds one line to `queue`, through this thread's batch when it gathers.
fn line_to(queue: &Queue, write: impl FnOnce(&mut Vec<u8>)) {
    let mut write = Some(write);
    let _ = BATCH.try_with(|batch| {
        let Ok(mut batch) = batch.try_borrow_mut() else {
            return;
        };
        let Some(write) = write.take() else { return };
        write(&mut batch.bytes);
        batch.lines += 1;
        if !batch.gathers || batch.bytes.len() >= BATCH_BYTES {
            hand_over(queue, &mut batch);
        }
    });
    // A thread being torn down (its batch gone) hands its line over alone.
    if let Some(write) = write {
        let mut bytes = Vec::new();
        write(&mut bytes);
        queue.send(bytes, 1);
    }
}

/// `tracing-subscriber`'s writer: each event it formats is one line of the queue.
#[derive(Clone, Copy)]
pub(super) struct Lines;

impl std::io::Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if !line(|buffer| buffer.extend_from_slice(bytes)) {
            // No writer thread could be started.
            std::io::stderr().write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

#[cfg(test)]
mod tests;
