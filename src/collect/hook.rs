//! `collect --on-priority N --exec CMD`: a command run for each stored
//! reading of priority N or more, with the reading as JSON on its stdin
//! (an alert, a webhook through `curl`, a relay).
//!
//! The stream never waits for a hook: readings are queued to a task that
//! runs at most [`PARALLEL`] commands at a time, each killed after its
//! timeout; when [`QUEUE`] readings are already waiting, a new one is not
//! run and the dropped count is logged (once per [`SAY_EVERY`]). A hook
//! runs after its reading is committed, at least once: a redelivered
//! reading that was committed before may run it again.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Semaphore, mpsc};

/// Commands running at once, at most.
pub const PARALLEL: usize = 4;

/// Readings waiting for a free slot, at most.
pub const QUEUE: usize = 1_000;

/// How often the count of dropped readings is logged, at most.
pub const SAY_EVERY: Duration = Duration::from_mins(1);

/// What the hook has done, for the status and the tests.
#[derive(Debug, Default)]
pub struct HookCounts {
    /// Commands that exited 0.
    pub succeeded: AtomicU64,
    /// Commands that exited non-zero, could not start, or were killed at
    /// their timeout.
    pub failed: AtomicU64,
    /// Readings not run because the queue was full.
    pub dropped: AtomicU64,
}

/// The hook, as `collect` was asked for it.
#[derive(Debug, Clone)]
pub struct HookSpec {
    /// Readings of this priority or more run the command.
    pub min_priority: u32,
    /// The command line, run by `sh -c`.
    pub command: String,
    /// Longest one run may take before it is killed.
    pub timeout: Duration,
}

/// A running hook: [`Hook::offer`] queues a reading's JSON.
pub struct Hook {
    /// The threshold, checked before anything is queued.
    min_priority: u32,
    /// To the task that runs the commands.
    tx: mpsc::Sender<Vec<u8>>,
    /// Shared with that task.
    counts: Arc<HookCounts>,
    /// When the dropped count was last logged (monotonic).
    said: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Hook {
    /// Starts the task that runs `spec.command` (on the current runtime).
    pub fn start(spec: HookSpec) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(HookCounts::default());
        let min_priority = spec.min_priority;
        tokio::spawn(run(spec, rx, counts.clone()));
        Self {
            min_priority,
            tx,
            counts,
            said: std::sync::Mutex::new(None),
        }
    }

    /// The counters.
    pub fn counts(&self) -> &HookCounts {
        &self.counts
    }

    /// Runs the hook for a stored reading of `priority` (its wire JSON in
    /// `json`) if it reaches the threshold; never waits.
    pub fn offer(&self, priority: u32, json: impl FnOnce() -> Vec<u8>) {
        if priority < self.min_priority {
            return;
        }
        if self.tx.try_send(json()).is_err() {
            let dropped = self.counts.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            let now = tokio::time::Instant::now();
            let mut said = self
                .said
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if said.is_none_or(|at| now.duration_since(at) >= SAY_EVERY) {
                *said = Some(now);
                tracing::warn!(
                    "the --exec hook is {QUEUE} readings behind: {dropped} readings did not run \
                     it so far (a slow command, or one that hangs until its timeout)"
                );
            }
        }
    }
}

async fn run(spec: HookSpec, mut rx: mpsc::Receiver<Vec<u8>>, counts: Arc<HookCounts>) {
    let slots = Arc::new(Semaphore::new(PARALLEL));
    while let Some(json) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (spec, counts) = (spec.clone(), counts.clone());
        tokio::spawn(async move {
            let ok = once(&spec, &json).await;
            let counter = if ok {
                &counts.succeeded
            } else {
                &counts.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

/// One run: `sh -c CMD` with `json` on stdin; whether it exited 0 in time.
async fn once(spec: &HookSpec, json: &[u8]) -> bool {
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&spec.command)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(command = %spec.command, "cannot start the --exec hook: {e}");
            return false;
        }
    };
    let mut stdin = child.stdin.take();
    let work = async {
        if let Some(stdin) = stdin.as_mut() {
            // One write of the whole line: a pipe write under PIPE_BUF is
            // atomic, so `cat >> FILE` hooks running at once append whole
            // lines, never a reading and another's newline. A command that
            // does not read its stdin is fine.
            let line = [json, b"\n"].concat();
            let _ = stdin.write_all(&line).await;
        }
        drop(stdin.take());
        child.wait().await
    };
    match tokio::time::timeout(spec.timeout, work).await {
        Ok(Ok(status)) if status.success() => true,
        Ok(Ok(status)) => {
            tracing::warn!(command = %spec.command, "the --exec hook failed: {status}");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(command = %spec.command, "the --exec hook failed: {e}");
            false
        }
        Err(_) => {
            tracing::warn!(
                command = %spec.command,
                timeout = %humantime::format_duration(spec.timeout),
                "the --exec hook did not finish in time and was killed"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn settle(h: &Hook, total: u64) {
        for _ in 0..500 {
            let c = h.counts();
            let done = c.succeeded.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed);
            if done >= total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the hook did not finish {total} runs");
    }

    #[tokio::test]
    async fn the_hook_gets_the_reading_on_stdin_and_only_above_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let hook = Hook::start(HookSpec {
            min_priority: 2,
            command: format!("cat >> {}", out.display()),
            timeout: Duration::from_secs(5),
        });
        hook.offer(1, || b"{\"priority\":1}".to_vec());
        hook.offer(2, || b"{\"priority\":2}".to_vec());
        hook.offer(9, || b"{\"priority\":9}".to_vec());
        settle(&hook, 2).await;
        let text = std::fs::read_to_string(&out).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["{\"priority\":2}", "{\"priority\":9}"]);
        assert_eq!(hook.counts().succeeded.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_hanging_or_failing_command_is_counted_and_killed_at_its_timeout() {
        let hook = Hook::start(HookSpec {
            min_priority: 0,
            command: "sleep 30".into(),
            timeout: Duration::from_millis(100),
        });
        let failing = Hook::start(HookSpec {
            min_priority: 0,
            command: "exit 3".into(),
            timeout: Duration::from_secs(5),
        });
        let started = std::time::Instant::now();
        hook.offer(0, Vec::new);
        failing.offer(0, Vec::new);
        settle(&hook, 1).await;
        settle(&failing, 1).await;
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(hook.counts().failed.load(Ordering::Relaxed), 1);
        assert_eq!(failing.counts().failed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_full_queue_drops_instead_of_waiting() {
        let hook = Hook::start(HookSpec {
            min_priority: 0,
            command: "sleep 5".into(),
            timeout: Duration::from_secs(10),
        });
        let started = std::time::Instant::now();
        for _ in 0..(QUEUE + PARALLEL + 50) {
            hook.offer(1, || b"{}".to_vec());
        }
        // offer never waited for a slot.
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(hook.counts().dropped.load(Ordering::Relaxed) >= 40);
    }
}
