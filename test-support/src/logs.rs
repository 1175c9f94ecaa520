//! Capturing what the code under test logs, to check what reaches the logs
//! (and what never does: passwords, rendered keys).

use std::io::Write;
use std::sync::{Arc, Mutex};

/// What is logged on this thread while it lives, as plain text.
///
/// ```
/// let logs = cache_test_support::CapturedLogs::start(tracing::Level::WARN);
/// tracing::warn!("seen");
/// tracing::info!("below the level");
/// assert!(logs.text().contains("seen"));
/// assert!(!logs.text().contains("below"));
/// ```
pub struct CapturedLogs {
    buffer: Buffer,
    _guard: tracing::subscriber::DefaultGuard,
    /// A second live dispatcher, so that tracing never takes ours for the
    /// only one. With a single dispatcher registered, tracing computes a
    /// callsite's interest from the default of whichever thread hits it
    /// first: a callsite first hit on another test's thread (no subscriber
    /// there) would be cached as "never" and not reach this capture either.
    /// With two, interest is "sometimes" and each event asks its own
    /// thread's subscriber.
    _second: tracing::Dispatch,
}

/// The shared bytes, and the writer the subscriber appends to.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures events at `level` and above, on this thread (a
    /// current-thread runtime's tasks included), until dropped.
    pub fn start(level: tracing::Level) -> CapturedLogs {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        CapturedLogs {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
            _second: tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
        }
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.0.lock().unwrap()).into_owned()
    }
}
