//! The terminal loop: raw mode and the alternate screen behind a guard that
//! restores the terminal on return, on error and on panic; keys polled with
//! a 250 ms timeout so a `stop` flag (wired by the caller to SIGTERM/SIGHUP)
//! is seen promptly; the state reloaded from the log once per second unless
//! paused. Nothing grows: each reload replaces the bounded [`State`].

use std::io::{Stdout, stdout};
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use crossterm::event::{self, Event};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use rusqlite::{Connection, OpenFlags};

use super::keys::{Action, action};
use super::state::{Counts, State, Theme, View, load_with};
use super::ui::render;
use crate::store::{Access, Store};

/// How long to wait for a key before looking at `stop` and the clock.
const POLL: Duration = Duration::from_millis(250);
/// How often the state is reloaded from the log.
const REFRESH: Duration = Duration::from_secs(1);
/// How long a reload waits for the writer's lock (never long: WAL readers
/// rarely wait at all, and a frame must not freeze).
const BUSY: Duration = Duration::from_millis(200);

/// Whether the terminal is in raw mode on the alternate screen: the panic
/// hook restores it only then.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Once = Once::new();

/// Leaves raw mode and the alternate screen, once.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Best effort: the terminal may already be gone (SSH dropped).
        let _ = disable_raw_mode();
        let _ = execute!(stdout(), LeaveAlternateScreen, cursor::Show);
    }
}

/// Owns the terminal's raw mode and alternate screen; restores both when
/// dropped, however `run` ends.
struct Guard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Guard {
    fn enter() -> anyhow::Result<Guard> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        ACTIVE.store(true, Ordering::SeqCst);
        execute!(stdout(), EnterAlternateScreen, cursor::Hide)
            .context("cannot switch to the alternate screen")?;
        let terminal =
            Terminal::new(CrosstermBackend::new(stdout())).context("cannot set up the terminal")?;
        Ok(Guard { terminal })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        restore();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Opens the log read-only: validated by [`Store`] (ours, a known schema),
/// then a plain read-only connection for the dashboard's queries.
pub fn open(db: &Path) -> anyhow::Result<Connection> {
    Store::open(db, Access::ReadOnly)
        .with_context(|| format!("cannot open the log {}", db.display()))?;
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open the log {} read-only", db.display()))?;
    conn.busy_timeout(BUSY)?;
    Ok(conn)
}

/// The view after `action`; `None` to quit.
pub fn apply(view: View, action: Action, sensors: usize) -> Option<View> {
    let mut v = view;
    let n = sensors.max(1);
    match action {
        Action::Quit => return None,
        Action::NextSensor => v.selected = (v.selected % n + 1) % n,
        Action::PrevSensor => v.selected = (v.selected % n + n - 1) % n,
        Action::Window(w) => v.window = w,
        Action::TogglePause => v.paused = !v.paused,
        Action::ToggleHelp => v.help = !v.help,
        Action::None => {}
    }
    Some(v)
}

/// Runs the dashboard on the log `db` for `node` (default: the agent with
/// the newest heartbeat) until the user quits or `stop()` returns true.
/// Blocking: call it from a plain thread (or the main thread), never from
/// a tokio worker. Colors follow `NO_COLOR`.
pub fn run(db: &Path, node: Option<&str>, stop: impl Fn() -> bool) -> anyhow::Result<()> {
    let conn = open(db)?;
    let theme = Theme::from_no_color(std::env::var_os("NO_COLOR").as_deref());
    let mut view = View {
        theme,
        ..View::default()
    };
    let mut at = now_ms();
    let mut counts = Counts::default();
    let mut state: State =
        load_with(&conn, node, at, view, &mut counts).context("cannot read the log")?;
    let mut guard = Guard::enter()?;
    let mut loaded = Instant::now();
    while !stop() {
        guard
            .terminal
            .draw(|frame| render(frame, &state))
            .context("cannot draw")?;
        let mut changed = false;
        if event::poll(POLL).context("cannot read the terminal")?
            && let Event::Key(key) = event::read().context("cannot read the terminal")?
        {
            let Some(next) = apply(view, action(key), state.sensors.len()) else {
                break;
            };
            changed = next != view;
            view = next;
        }
        let due = !view.paused && loaded.elapsed() >= REFRESH;
        if due || changed {
            // Paused, the clock stands still: a new window or sensor is
            // shown as of the moment of the pause.
            if !view.paused {
                at = now_ms();
            }
            state = match load_with(&conn, node, at, view, &mut counts) {
                Ok(s) => s,
                Err(e) => {
                    // Whatever the counts held may be half-updated.
                    counts = Counts::default();
                    State {
                        view,
                        error: Some(format!("reload failed: {e}")),
                        ..state
                    }
                }
            };
            loaded = Instant::now();
        }
    }
    drop(guard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::state::Window;

    #[test]
    fn selection_wraps_both_ways() {
        let v = View::default();
        let v = apply(v, Action::PrevSensor, 3).expect("not quit");
        assert_eq!(v.selected, 2);
        let v = apply(v, Action::NextSensor, 3).expect("not quit");
        assert_eq!(v.selected, 0);
        let v = apply(v, Action::NextSensor, 0).expect("not quit");
        assert_eq!(v.selected, 0);
    }

    #[test]
    fn actions_change_the_view() {
        let v = View::default();
        assert_eq!(apply(v, Action::Quit, 1), None);
        let w = apply(v, Action::Window(Window::Hour24), 1).expect("not quit");
        assert_eq!(w.window, Window::Hour24);
        assert!(apply(v, Action::TogglePause, 1).expect("not quit").paused);
        assert!(apply(v, Action::ToggleHelp, 1).expect("not quit").help);
        assert_eq!(apply(v, Action::None, 1), Some(v));
    }
}
