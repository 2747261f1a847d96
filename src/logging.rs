//! Log set-up for every command: tracing on stderr, in journald's format
//! under systemd, and held back while a full-screen dashboard owns the
//! terminal.

use std::io::Write as _;

/// Installs the global tracing subscriber with `filter` (tracing
/// directives): on stderr, coloured on a terminal unless `NO_COLOR` is set,
/// in `JournalFormat` when journald reads stderr (`JOURNAL_STREAM`). A bad
/// filter is reported and replaced by `info` rather than refused: a typo in
/// `--log` must not stop the agent.
pub fn init(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: ignoring --log {filter:?} ({e}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| HeldLog)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder
            .event_format(JournalFormat(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_level(false)
                    .with_target(false)
                    .with_ansi(false),
            ))
            .init();
    } else {
        builder.init();
    }
}

/// Log lines written while a full-screen dashboard owns the terminal: the
/// demo's agent runs under it, and a line on stderr would be drawn over the
/// dashboard. They are printed when it gives the terminal back; past
/// [`HELD_LOG_MAX`] bytes the oldest go.
static HELD_LOG: std::sync::Mutex<Option<std::collections::VecDeque<u8>>> =
    std::sync::Mutex::new(None);

/// Most bytes of log [`HELD_LOG`] keeps.
const HELD_LOG_MAX: usize = 64 << 10;

/// The log's writer: stderr, or [`HELD_LOG`] while a dashboard is shown.
struct HeldLog;

impl std::io::Write for HeldLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut held = HELD_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.as_mut() {
            Some(lines) => {
                lines.extend(buf);
                let over = lines.len().saturating_sub(HELD_LOG_MAX);
                lines.drain(..over);
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Holds the log while `show` runs (a dashboard on this terminal), then
/// prints what was logged meanwhile.
pub fn holding_the_log<T>(show: impl FnOnce() -> T) -> T {
    *HELD_LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(std::collections::VecDeque::new());
    let shown = show();
    let held = HELD_LOG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(lines) = held {
        let (a, b) = lines.as_slices();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(a).and_then(|()| err.write_all(b));
    }
    shown
}

/// Log lines for journald, which reads the agent's stderr under systemd:
/// no timestamp (journald stamps every line itself) and a syslog priority
/// prefix (`<3>` error ... `<7>` debug), so `journalctl -p warning` and the
/// journal's colours work: `<4>WARN broker unreachable ...`.
struct JournalFormat<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = *event.metadata().level();
        write!(writer, "<{}>{level} ", syslog_priority(level))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority of a tracing level (sd-daemon(3)).
fn syslog_priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}
