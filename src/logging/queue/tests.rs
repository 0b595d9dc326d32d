//! The log queue against a writer that keeps what it is given, or is held still: order, whole
//! lines, and a count of every line a full queue drops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use super::{Batch, Gathering, Queue, hand_over, line_to};

/// A writer that keeps what it was given, and can be made to block until released.
#[derive(Clone, Default)]
struct Kept {
    bytes: Arc<Mutex<Vec<u8>>>,
    gate: Arc<Mutex<()>>,
    entered: Arc<AtomicBool>,
}

impl std::io::Write for Kept {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.entered.store(true, Ordering::SeqCst);
        let _open = self.gate.lock().unwrap();
        self.bytes.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn batch_of(lines: &[&str]) -> Batch {
    let mut batch = Batch::default();
    for line in lines {
        batch.bytes.extend_from_slice(line.as_bytes());
        batch.lines += 1;
    }
    batch
}

/// Lines handed over in batches and alone come out whole, in the order they were handed over,
/// once the queue is stopped; nothing is counted as dropped.
#[test]
fn lines_come_out_whole_and_in_order() {
    let out = Kept::default();
    let queue = Queue::start(out.clone(), 100, Duration::ZERO).unwrap();
    hand_over(&queue, &mut batch_of(&["one\n", "two\n"]));
    queue.send(b"three\n".to_vec(), 1);
    hand_over(&queue, &mut batch_of(&["four\n"]));
    queue.stop(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap(),
        "one\ntwo\nthree\nfour\n"
    );
    assert_eq!(queue.dropped(), 0);
}

/// With the writer stuck (a pipe nobody reads), the queue takes lines up to its limit and then
/// drops and counts every line of each batch that does not fit, never waiting; once the writer
/// moves again, exactly the lines that were taken come out.
#[test]
fn a_full_queue_counts_every_line_it_drops() {
    let out = Kept::default();
    let stuck = out.gate.lock().unwrap();
    let queue = Queue::start(out.clone(), 10, Duration::ZERO).unwrap();
    // The writer thread takes the first batch and blocks writing it: 3 lines out of the queue.
    hand_over(&queue, &mut batch_of(&["a\n", "b\n", "c\n"]));
    while !out.entered.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    assert_eq!(queue.counts.queued.load(Ordering::Relaxed), 0);
    // 4 + 4 lines fit in the queue's 10; the next 4 do not, nor does the line after them.
    hand_over(&queue, &mut batch_of(&["d\n", "e\n", "f\n", "g\n"]));
    hand_over(&queue, &mut batch_of(&["h\n", "i\n", "j\n", "k\n"]));
    hand_over(&queue, &mut batch_of(&["x\n", "x\n", "x\n", "x\n"]));
    assert_eq!(queue.dropped(), 4);
    queue.send(b"y\n".to_vec(), 1);
    queue.send(b"z\n".to_vec(), 1);
    assert_eq!(queue.dropped(), 4, "two single lines still fit");
    queue.send(b"x\n".to_vec(), 1);
    assert_eq!(queue.dropped(), 5);
    drop(stuck);
    queue.stop(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap(),
        "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\ny\nz\n"
    );
}

/// A batch handed over leaves the thread's buffer empty and ready, and a batch grown by one
/// very long line does not keep its memory.
#[test]
fn handing_over_empties_the_batch() {
    let out = Kept::default();
    let queue = Queue::start(out.clone(), 100, Duration::ZERO).unwrap();
    let mut batch = batch_of(&["one\n"]);
    hand_over(&queue, &mut batch);
    assert!(batch.bytes.is_empty());
    assert_eq!(batch.lines, 0);
    let long = "x".repeat(20 * super::BATCH_BYTES) + "\n";
    let mut batch = batch_of(&[&long]);
    hand_over(&queue, &mut batch);
    assert!(batch.bytes.capacity() <= 8 * super::BATCH_BYTES);
    queue.stop(Duration::from_secs(5));
    assert_eq!(out.bytes.lock().unwrap().len(), 4 + long.len());
}

/// A batch goes over in the thread's buffer, which the writer sends back once written out for
/// another batch to go on in; with none sent back (a writer that is behind), the batch goes
/// over as a copy and the thread keeps its buffer.
#[test]
fn written_out_buffers_come_back_for_the_next_batches() {
    let out = Kept::default();
    let queue = Queue::start(out.clone(), 100, Duration::ZERO).unwrap();
    let ready = queue.spare.len();
    assert!(ready > 0, "the queue starts with buffers to go round");
    let mut batch = Batch::default();
    batch.bytes.reserve(2 * super::BATCH_BYTES);
    batch.bytes.extend_from_slice(b"one\n");
    batch.lines = 1;
    hand_over(&queue, &mut batch);
    assert_eq!(
        queue.spare.len(),
        ready - 1,
        "the batch went on in a spare buffer"
    );
    assert!(batch.bytes.is_empty() && batch.bytes.capacity() >= super::BATCH_BYTES);

    // Every spare taken: the next batch goes over as a copy.
    let taken: Vec<Vec<u8>> = queue.spare.try_iter().collect();
    let own = batch.bytes.as_ptr();
    batch.bytes.extend_from_slice(b"two\n");
    batch.lines = 1;
    hand_over(&queue, &mut batch);
    assert_eq!(batch.bytes.as_ptr(), own, "the thread kept its buffer");
    queue.stop(Duration::from_secs(5));
    assert_eq!(*out.bytes.lock().unwrap(), b"one\ntwo\n");
    // The first batch's buffer came back; the copy, of its lines' size, did not.
    assert_eq!(queue.spare.len(), 1);
    assert!(queue.spare.try_recv().unwrap().is_empty());
    drop(taken);
}

/// A thread that gathers lines and ends only after the queue was asked to close (a worker
/// whose runtime is still being dropped at exit): closing waits for it, and its last line,
/// still in its batch when closing began, comes out.
#[test]
fn closing_waits_for_the_last_lines_of_a_thread_that_gathers() {
    let out = Kept::default();
    let queue: &'static Queue = Box::leak(Box::new(
        Queue::start(out.clone(), 100, Duration::ZERO).unwrap(),
    ));
    let (logged, was_logged) = mpsc::channel();
    let (end, ended) = mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        let _gathering = Gathering::on(Some(queue));
        line_to(queue, |bytes| bytes.extend_from_slice(b"last\n"));
        logged.send(()).unwrap();
        let _ = ended.recv();
    });
    was_logged.recv().unwrap();
    assert!(
        out.bytes.lock().unwrap().is_empty(),
        "the line waits in the thread's batch"
    );
    let (closed, was_closed) = mpsc::channel();
    let closer = std::thread::spawn(move || {
        queue.close(Duration::from_secs(30));
        closed.send(()).unwrap();
    });
    assert!(
        was_closed.recv_timeout(Duration::from_millis(200)).is_err(),
        "the queue closed while a thread still held lines"
    );
    drop(end);
    was_closed.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap(),
        "last\n"
    );
    worker.join().unwrap();
    closer.join().unwrap();
}

/// Standard error closed (or a full pipe that does not block): every write fails. Each line
/// the writer could not write is counted as dropped; none was lost uncounted.
#[test]
fn lines_a_failed_write_lost_are_counted_as_dropped() {
    struct Closed;
    impl std::io::Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }
    let queue = Queue::start(Closed, 100_000, Duration::ZERO).unwrap();
    let line = format!("{}\n", "x".repeat(99));
    for _ in 0..200 {
        hand_over(&queue, &mut batch_of(&[line.as_str(); 10]));
    }
    queue.stop(Duration::from_secs(5));
    assert_eq!(queue.dropped(), 2_000);
}

/// A full pipe opened non-blocking takes part of a write and refuses the rest: the line it cut
/// is finished by the next write, the lines it refused are counted as dropped, and every line
/// written is whole.
#[test]
fn a_write_cut_short_leaves_no_half_line() {
    #[derive(Clone, Default)]
    struct Jammed {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }
    impl std::io::Write for Jammed {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut writes = self.writes.lock().unwrap();
            *writes += 1;
            match *writes {
                // 150 bytes, then the pipe is full for two writes.
                1 => {
                    let taken = bytes.len().min(150);
                    self.bytes
                        .lock()
                        .unwrap()
                        .extend_from_slice(&bytes[..taken]);
                    Ok(taken)
                }
                2 | 3 => Err(std::io::ErrorKind::WouldBlock.into()),
                _ => {
                    self.bytes.lock().unwrap().extend_from_slice(bytes);
                    Ok(bytes.len())
                }
            }
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let out = Jammed::default();
    let queue = Queue::start(out.clone(), 1_000, Duration::ZERO).unwrap();
    let line = format!("{}\n", "x".repeat(99));
    hand_over(&queue, &mut batch_of(&[line.as_str(); 10]));
    while *out.writes.lock().unwrap() < 2 {
        std::thread::yield_now();
    }
    // A second batch while the pipe is still full: the line begun is still kept.
    hand_over(&queue, &mut batch_of(&[line.as_str(); 10]));
    while *out.writes.lock().unwrap() < 3 {
        std::thread::yield_now();
    }
    hand_over(&queue, &mut batch_of(&[line.as_str(); 10]));
    queue.stop(Duration::from_secs(5));
    let written = String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap();
    assert!(written.ends_with('\n'), "{written:?}");
    let lines: Vec<&str> = written.lines().collect();
    assert!(
        lines.iter().all(|written| *written == &line[..99]),
        "{lines:?}"
    );
    assert_eq!(lines.len() as u64 + queue.dropped(), 30, "{lines:?}");
    assert_eq!(lines.len(), 12, "two lines begun, then the third batch");
}
