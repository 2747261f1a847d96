//! The signals that stop a command: a future for async runners, a flag for
//! the blocking dashboard loop. (`run` handles its own, with SIGHUP as a
//! reload: [`super::run`].)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

/// Resolves on SIGTERM, SIGINT or SIGHUP (the terminal of a foreground
/// `demo` went away). The handlers are installed before this returns, so a
/// signal that arrives while a cycle is in flight is not lost.
pub(super) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = hup.recv() => {}
        }
    })
}

/// A flag raised by SIGTERM, SIGHUP (an SSH session that drops) or SIGINT,
/// for the blocking dashboard loop. The handlers are installed before this
/// returns.
pub(super) fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal thread")?;
    let (mut term, mut hup, mut int) = {
        let _ctx = rt.enter();
        (
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
            signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?,
        )
    };
    let raised = flag.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                    _ = int.recv() => {}
                }
            });
            raised.store(true, Ordering::Relaxed);
        })
        .context("cannot start the signal thread")?;
    Ok(flag)
}
