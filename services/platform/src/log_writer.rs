//! Where log lines go: a shared buffer that a background thread writes to stdout every few
//! milliseconds. Not `tracing_appender::non_blocking`, which we used first: its queue wakes
//! the writer thread for each line (a futex call and a context switch per request, visible
//! in `perf`). Here a request only appends to memory and the writer wakes on a timer,
//! whatever the rate. `observability/bench-telemetry.sh` measured full telemetry at 15.6% and
//! 14.9% of throughput with `non_blocking`, 13.6% twice with this.
//!
//! Never blocking: when the buffer holds more than [`HIGH_WATER`] bytes (stdout is not being
//! read fast enough), new lines are dropped and counted ([`dropped_lines`], exported as
//! `log_lines_dropped_total`); a request never waits on the log. A line waits at most
//! [`FLUSH_EVERY`] before it is written, less when the buffer passes [`LOW_WATER`];
//! [`LogWriterGuard`] writes what is left when the process stops, waiting at most
//! [`SHUTDOWN_FLUSH_LIMIT`] for a stdout that takes nothing.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How long a line may sit in memory before it reaches stdout.
pub const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// Above this, lines are dropped instead of growing the buffer.
pub const HIGH_WATER: usize = 1 << 20;
/// Past this the writer is woken at once rather than at its timer, so that a burst is written
/// while there is still room for the next one, instead of being dropped at [`HIGH_WATER`].
pub const LOW_WATER: usize = HIGH_WATER / 4;
/// How long the process waits at exit for what is buffered to reach stdout; a stdout nobody
/// reads must not keep a stopping process alive.
pub const SHUTDOWN_FLUSH_LIMIT: Duration = Duration::from_secs(2);

static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);

/// Lines dropped since the process started because the writer had fallen behind.
pub fn dropped_lines() -> u64 {
    DROPPED_LINES.load(Ordering::Relaxed)
}

/// The process's log sink, for lines formatted outside `tracing` (the access log).
static PROCESS_WRITER: OnceLock<BatchedWriter> = OnceLock::new();

/// Formats one line into this thread's scratch buffer (no allocation once warm) and appends it
/// to the process's log, in one short critical section. Nothing happens before logging is set
/// up (unit tests).
pub fn write_line(format: impl FnOnce(&mut Vec<u8>)) {
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
    }
    let Some(writer) = PROCESS_WRITER.get() else {
        return;
    };
    SCRATCH.with_borrow_mut(|line| {
        line.clear();
        format(line);
        writer.append(line);
    });
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    stopping: bool,
    /// The writer thread has written its last batch and is returning.
    finished: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signals the writer (buffer past the high-water mark, or stopping) and the loggers
    /// waiting for room.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves only bytes behind; keep logging.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands out writers for `tracing_subscriber::fmt` layers.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread after writing everything still buffered.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A writer for `sink` (stdout in the services) and the guard that flushes it on drop.
pub fn batched<W: Write + Send + 'static>(sink: W) -> (BatchedWriter, LogWriterGuard) {
    let (writer, guard) = batched_unregistered(sink);
    let _ = PROCESS_WRITER.set(writer.clone());
    (writer, guard)
}

fn batched_unregistered<W: Write + Send + 'static>(sink: W) -> (BatchedWriter, LogWriterGuard) {
    batched_with_timer(sink, FLUSH_EVERY)
}

fn batched_with_timer<W: Write + Send + 'static>(
    sink: W,
    flush_every: Duration,
) -> (BatchedWriter, LogWriterGuard) {
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = shared.clone();
            move || {
                write_until_stopped(&shared, sink, flush_every);
                shared.lock().finished = true;
                shared.changed.notify_all();
            }
        })
        .expect("the log writer thread starts");
    (
        BatchedWriter {
            shared: shared.clone(),
        },
        LogWriterGuard {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_until_stopped<W: Write>(shared: &Shared, mut sink: W, flush_every: Duration) {
    let mut batch = Vec::new();
    loop {
        let stopping = {
            let state = shared.lock();
            let (mut state, _) = shared
                .changed
                .wait_timeout_while(state, flush_every, |s| {
                    !s.stopping && s.pending.len() < LOW_WATER
                })
                .unwrap_or_else(|e| e.into_inner());
            std::mem::swap(&mut batch, &mut state.pending);
            state.stopping
        };
        shared.changed.notify_all();
        if !batch.is_empty() {
            // Nowhere to report a failed write to stdout; the next batch tries again.
            let _ = sink.write_all(&batch).and_then(|()| sink.flush());
            batch.clear();
        }
        if stopping {
            return;
        }
    }
}

impl BatchedWriter {
    /// Appends whole lines, or drops and counts them when the writer has fallen behind.
    fn append(&self, lines: &[u8]) {
        let mut state = self.shared.lock();
        if state.pending.len() >= HIGH_WATER {
            drop(state);
            let count = lines.iter().filter(|b| **b == b'\n').count().max(1);
            DROPPED_LINES.fetch_add(count as u64, Ordering::Relaxed);
            self.shared.changed.notify_all();
            return;
        }
        let below = state.pending.len() < LOW_WATER;
        state.pending.extend_from_slice(lines);
        if below && state.pending.len() >= LOW_WATER {
            drop(state);
            self.shared.changed.notify_all();
        }
    }
}

impl Write for BatchedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter {
    type Writer = BatchedWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(self.shared.lock(), SHUTDOWN_FLUSH_LIMIT, |s| !s.finished)
            .unwrap_or_else(|e| e.into_inner());
        let finished = state.finished;
        drop(state);
        if let Some(thread) = self.thread.take()
            && finished
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read after the writer thread has written to it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_reach_the_sink_within_the_flush_interval() {
        let sink = Sink::default();
        let (mut writer, _guard) = batched_unregistered(sink.clone());
        writer.write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"one\n");
    }

    /// A sink that takes nothing until the test lets it, as a stdout nobody reads.
    #[derive(Clone, Default)]
    struct StuckSink {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Sink,
    }

    impl Write for StuckSink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (open, changed) = &*self.open;
            let _open = changed
                .wait_while(open.lock().unwrap(), |open| !*open)
                .unwrap();
            self.written.write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_sink_makes_lines_drop_not_wait() {
        let sink = StuckSink::default();
        let (mut writer, guard) = batched_unregistered(sink.clone());
        let before = dropped_lines();
        let line = [b'x'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        // 3 MiB of lines into a 1 MiB buffer whose writer is stuck: this returns at once.
        for _ in 0..3072 {
            writer.write_all(&line).unwrap();
        }
        let dropped = dropped_lines() - before;
        assert!((1024..=3072).contains(&dropped), "{dropped} lines dropped");
        let (open, changed) = &*sink.open;
        *open.lock().unwrap() = true;
        changed.notify_all();
        drop(guard);
        let written = sink.written.0.lock().unwrap().len();
        assert_eq!(
            written as u64,
            (3072 - dropped) * 1024,
            "kept lines are written whole"
        );
    }

    #[test]
    fn a_burst_wakes_the_writer_before_the_timer() {
        // A timer that never fires in the test: only the low-water mark can wake the writer.
        let sink = Sink::default();
        let (mut writer, _guard) = batched_with_timer(sink.clone(), Duration::from_secs(3600));
        let line = [[b'x'; 1023].as_slice(), b"\n"].concat();
        for _ in 0..=LOW_WATER / line.len() {
            writer.write_all(&line).unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().unwrap().len() <= LOW_WATER && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            sink.0.lock().unwrap().len() > LOW_WATER,
            "a buffer past the low-water mark is written without waiting for the timer"
        );
    }

    #[test]
    fn shutdown_gives_up_on_a_stuck_stdout() {
        let sink = StuckSink::default();
        let (mut writer, guard) = batched_unregistered(sink.clone());
        writer.write_all(b"never written\n").unwrap();
        std::thread::sleep(FLUSH_EVERY * 2);
        let started = std::time::Instant::now();
        drop(guard);
        let waited = started.elapsed();
        assert!(
            waited < SHUTDOWN_FLUSH_LIMIT + Duration::from_secs(2),
            "the process stops although stdout takes nothing: waited {waited:?}"
        );
        let (open, changed) = &*sink.open;
        *open.lock().unwrap() = true;
        changed.notify_all();
    }

    #[test]
    fn nothing_is_lost_below_the_high_water_mark_or_at_shutdown() {
        let sink = Sink::default();
        let (writer, guard) = batched_unregistered(sink.clone());
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (mut writer, line) = (writer.clone(), line.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        writer.write_all(&line).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let written = sink.0.lock().unwrap();
        assert_eq!(written.len(), 4 * 100 * 1024);
        assert!(
            written
                .split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l.len() == 1023)
        );
    }
}
