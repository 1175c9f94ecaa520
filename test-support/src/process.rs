//! Child processes a test starts (the worker binary, the example app,
//! redis-server): killed when their handle is dropped, so a failing or
//! hanging test never leaves one behind, and every wait on them bounded.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running child process, killed (`SIGKILL`) and reaped on drop.
///
/// What it prints on a piped stdout is read line by line in a thread of its
/// own, so reading it never blocks past a deadline; a piped stderr is
/// collected whole.
///
/// ```
/// use std::process::{Command, Stdio};
/// use std::time::Duration;
/// use cache_test_support::ChildProcess;
///
/// let mut child = ChildProcess::spawn(Command::new("echo").arg("ready").stdout(Stdio::piped()));
/// assert_eq!(child.read_line(Duration::from_secs(5)).as_deref(), Some("ready"));
/// assert!(child.wait(Duration::from_secs(5)).success());
///
/// let sleeper = ChildProcess::spawn(Command::new("sleep").arg("600"));
/// drop(sleeper); // killed, not left running
/// ```
pub struct ChildProcess {
    child: Child,
    program: String,
    stdout: Option<Receiver<String>>,
    stderr: Option<Receiver<String>>,
}

/// How a child process ended, with what it printed on its piped streams.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Its stdout (lines joined with `\n`), empty unless piped.
    pub stdout: String,
    /// Its stderr, empty unless piped.
    pub stderr: String,
}

impl ChildProcess {
    /// Starts `command`; panics naming the program when it cannot be run.
    pub fn spawn(command: &mut Command) -> ChildProcess {
        ChildProcess::try_spawn(command).unwrap_or_else(|error| {
            panic!(
                "cannot run `{}`: {error}",
                command.get_program().to_string_lossy()
            )
        })
    }

    /// Starts `command`, or says why it could not.
    pub fn try_spawn(command: &mut Command) -> std::io::Result<ChildProcess> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().map(|pipe| {
            let (lines, received) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { return };
                    if lines.send(line).is_err() {
                        return;
                    }
                }
            });
            received
        });
        let stderr = child.stderr.take().map(|mut pipe| {
            let (whole, received) = channel();
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                let _ = whole.send(text);
            });
            received
        });
        Ok(ChildProcess {
            child,
            program,
            stdout,
            stderr,
        })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next line it printed on its piped stdout, waiting at most
    /// `limit`; `None` when none came in time or the stream ended.
    pub fn read_line(&mut self, limit: Duration) -> Option<String> {
        let lines = self
            .stdout
            .as_ref()
            .unwrap_or_else(|| panic!("`{}` was started without a piped stdout", self.program));
        lines.recv_timeout(limit).ok()
    }

    /// Whether it has exited (reaped if so).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits for it to exit, at most `limit`; panics otherwise (the
    /// process is then killed when the handle is dropped).
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => panic!("`{}` did not exit within {limit:?}", self.program),
                Err(error) => panic!("cannot wait for `{}`: {error}", self.program),
            }
        }
    }

    /// Waits for it to exit, at most `limit`, and returns what it printed
    /// on its piped streams.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let status = self.wait(limit);
        // It exited: its pipes close, the readers end.
        let stdout = match self.stdout.take() {
            Some(lines) => {
                let mut text = Vec::new();
                loop {
                    match lines.recv_timeout(Duration::from_secs(5)) {
                        Ok(line) => text.push(line),
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {
                            panic!("`{}` exited but its stdout stayed open", self.program)
                        }
                    }
                }
                text.join("\n")
            }
            None => String::new(),
        };
        let stderr = self
            .stderr
            .take()
            .map(|whole| {
                whole
                    .recv_timeout(Duration::from_secs(5))
                    .unwrap_or_else(|_| {
                        panic!("`{}` exited but its stderr stayed open", self.program)
                    })
            })
            .unwrap_or_default();
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    /// Kills it (`SIGKILL`, which ends a stopped process too) and reaps it.
    pub fn kill(&mut self) {
        if self.has_exited() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of example `name` as `cargo test` builds it (next to the test
/// binaries' `deps/`), checked to exist.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    let binary = std::env::current_exe()
        .expect("the test binary's path")
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .join("examples")
        .join(name);
    assert!(
        binary.exists(),
        "{} is missing: run the whole `cargo test` (or `cargo build --example {name}`)",
        binary.display()
    );
    binary
}

/// Whether a process with this id exists (`kill -0`), for the tests that
/// check nothing is left behind.
#[cfg(test)]
pub(crate) fn exists(pid: u32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run kill")
        .success()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn a_dropped_child_is_killed_and_reaped() {
        let child = ChildProcess::spawn(Command::new("sleep").arg("600"));
        let pid = child.id();
        assert!(exists(pid));
        drop(child);
        assert!(!exists(pid), "{pid} still runs");
    }

    #[test]
    fn a_wait_past_its_limit_fails_and_the_child_is_killed_anyway() {
        let child = ChildProcess::spawn(Command::new("sleep").arg("600"));
        let pid = child.id();
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let mut child = child;
            child.wait(Duration::from_millis(50));
        }));
        assert!(waited.is_err(), "the wait gave up");
        assert!(!exists(pid), "{pid} still runs");
    }

    #[test]
    fn lines_and_output_are_read_within_their_limits() {
        let mut child = ChildProcess::spawn(
            Command::new("sh")
                .args(["-c", "echo first; sleep 600"])
                .stdout(Stdio::piped()),
        );
        assert_eq!(
            child.read_line(Duration::from_secs(5)).as_deref(),
            Some("first")
        );
        assert_eq!(child.read_line(Duration::from_millis(50)), None);
        drop(child);

        let finished = ChildProcess::spawn(
            Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .finish(Duration::from_secs(5));
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(
            (finished.stdout.as_str(), finished.stderr.as_str()),
            ("out", "err\n")
        );
    }
}
