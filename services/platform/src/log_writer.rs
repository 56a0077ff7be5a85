//! Where log lines go: a shared buffer that a background thread writes to stdout every few
//! milliseconds. Not `tracing_appender::non_blocking`, which we used first: its queue wakes
//! the writer thread for each line (a futex call and a context switch per request, visible
//! in `perf`). Here a request only appends to memory and the writer wakes on a timer,
//! whatever the rate. `observability/bench-telemetry.sh` measured full telemetry at 15.6% and
//! 14.9% of throughput with `non_blocking`, 13.6% twice with this.
//!
//! Never lossy: when the buffer holds more than [`HIGH_WATER`] bytes, the logging thread
//! waits for the writer to catch up. A line waits at most [`FLUSH_EVERY`] before it is
//! written; [`LogWriterGuard`] writes what is left when the process stops.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a line may sit in memory before it reaches stdout.
pub const FLUSH_EVERY: Duration = Duration::from_millis(25);
/// Above this, logging waits for the writer instead of growing the buffer.
pub const HIGH_WATER: usize = 1 << 20;

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    stopping: bool,
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
    let shared = Arc::new(Shared::default());
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn({
            let shared = shared.clone();
            move || write_until_stopped(&shared, sink)
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

fn write_until_stopped<W: Write>(shared: &Shared, mut sink: W) {
    let mut batch = Vec::new();
    loop {
        let stopping = {
            let state = shared.lock();
            let (mut state, _) = shared
                .changed
                .wait_timeout_while(state, FLUSH_EVERY, |s| {
                    !s.stopping && s.pending.len() < HIGH_WATER
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

impl Write for BatchedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.pending.len() >= HIGH_WATER && !state.stopping {
            self.shared.changed.notify_all();
            state = self
                .shared
                .changed
                .wait_while(state, |s| s.pending.len() >= HIGH_WATER && !s.stopping)
                .unwrap_or_else(|e| e.into_inner());
        }
        state.pending.extend_from_slice(bytes);
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
        if let Some(thread) = self.thread.take() {
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
        let (mut writer, _guard) = batched(sink.clone());
        writer.write_all(b"one\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"one\n");
    }

    #[test]
    fn nothing_is_lost_past_the_high_water_mark_or_at_shutdown() {
        let sink = Sink::default();
        let (writer, guard) = batched(sink.clone());
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (mut writer, line) = (writer.clone(), line.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
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
        assert_eq!(
            written.len(),
            4 * 1000 * 1024,
            "4 MiB went through a 1 MiB buffer"
        );
        assert!(
            written
                .split(|b| *b == b'\n')
                .all(|l| l.is_empty() || l.len() == 1023)
        );
    }
}
