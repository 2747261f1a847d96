//! The terminal loop: raw mode and the alternate screen behind a guard that
//! restores the terminal on return, on error and on panic; keys polled with
//! a 250 ms timeout so a `stop` flag (wired by the caller to SIGTERM/SIGHUP)
//! is seen promptly; the state reloaded from the log every `refresh`
//! ([`REFRESH`] by default) unless paused. Nothing grows: each reload replaces the bounded [`State`].

use std::io::{Stdout, stdout};
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use crossterm::event::{self, Event, KeyEvent};
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use crossterm::{cursor, execute};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;

use super::keys::{Action, Scroll, action};
use super::state::{State, Theme, View, load};
use super::ui::{page_of, render};
use crate::store::{Access, Store};

/// How long to wait for a key before looking at `stop` and the clock.
const POLL: Duration = Duration::from_millis(250);
/// How often the state is reloaded from the log, unless told otherwise.
pub const REFRESH: Duration = Duration::from_secs(1);
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
    /// Never dropped: ratatui's `Drop` shows the cursor and, when that
    /// fails (the tty is gone: a dropped SSH session), `eprintln!`s, which
    /// panics on the same dead tty and would kill the demo's agent before
    /// its clean stop. [`restore`] shows the cursor, ignoring errors.
    terminal: ManuallyDrop<Terminal<CrosstermBackend<Stdout>>>,
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
        Ok(Guard {
            terminal: ManuallyDrop::new(terminal),
        })
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

/// Opens the log read-only (ours, a known schema), waiting at most
/// [`BUSY`] for a lock.
pub fn open(db: &Path) -> anyhow::Result<Store> {
    let store = Store::open(db, Access::ReadOnly)
        .with_context(|| format!("cannot open the log {}", db.display()))?;
    store.set_busy_timeout(BUSY)?;
    Ok(store)
}

/// What [`apply`] needs to know of what is shown: how far a selection
/// wraps and a scroll goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extent {
    /// Sensors to choose from.
    pub sensors: usize,
    /// Nodes the picker cycles through, after "all".
    pub nodes: usize,
    /// Rows the readings table holds.
    pub rows: usize,
    /// Rows the readings table shows at once: a page, and how far from the
    /// end scrolling stops, so the last page is a full one.
    pub page: usize,
}

impl Extent {
    /// The extent of `state` drawn on a terminal of `area`.
    pub fn of(state: &State, area: Rect) -> Extent {
        Extent {
            sensors: state.sensors.len(),
            nodes: state.nodes.len(),
            rows: state.recent.len(),
            page: page_of(state, area),
        }
    }
}

/// The readings table's offset after `scroll`, kept within the rows.
fn scrolled(offset: usize, scroll: Scroll, extent: Extent) -> usize {
    let page = extent.page.max(1);
    let last = extent.rows.saturating_sub(page);
    // From where the table is drawn: a longer page or fewer rows since the
    // last key may have left `offset` past the end.
    let offset = offset.min(last);
    let next = match scroll {
        Scroll::Down => offset + 1,
        Scroll::Up => offset.saturating_sub(1),
        Scroll::PageDown => offset + page,
        Scroll::PageUp => offset.saturating_sub(page),
        Scroll::Newest => 0,
        Scroll::Oldest => last,
    };
    next.min(last)
}

/// Reads the terminal's keys on their own thread. On a terminal that has
/// gone away (a dropped SSH session) crossterm's `poll` can spin without
/// honouring its timeout; the loop then still sees `stop` (SIGHUP) on time
/// and returns, and the process exits with the reader still spinning. The
/// channel closes when reading fails.
fn key_reader() -> Receiver<KeyEvent> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("dashboard-keys".into())
        .spawn(move || {
            loop {
                match event::read() {
                    Ok(Event::Key(key)) => {
                        if tx.send(key).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the key reader: {e}");
    }
    rx
}

/// The view after `action`; `None` to quit. The selection wraps around
/// `extent`'s sensors and the scroll offset stays within its rows. The
/// node picker cycles through "all" and each node (with one node there is
/// nothing to pick); another node starts at its first sensor and newest row.
pub fn apply(view: View, action: Action, extent: Extent) -> Option<View> {
    let mut v = view;
    let n = extent.sensors.max(1);
    // "All" and each node.
    let picks = extent.nodes + 1;
    let pick = |v: &mut View, next: usize| {
        if extent.nodes > 1 {
            v.node = next % picks;
            v.selected = 0;
            v.scroll = 0;
        }
    };
    match action {
        Action::NextNode => pick(&mut v, view.node % picks + 1),
        Action::PrevNode => pick(&mut v, view.node % picks + picks - 1),
        Action::Quit => return None,
        Action::NextSensor => v.selected = (v.selected % n + 1) % n,
        Action::PrevSensor => v.selected = (v.selected % n + n - 1) % n,
        Action::Window(w) => v.window = w,
        Action::TogglePause => v.paused = !v.paused,
        Action::ToggleHelp => v.help = !v.help,
        Action::Scroll(s) => v.scroll = scrolled(v.scroll, s, extent),
        Action::None => {}
    }
    Some(v)
}

/// Runs the dashboard on the log `db` under the header of `node` (default:
/// the agent or gateway with the newest heartbeat), with a panel per (node,
/// sensor) of the log until the picker (`n`) shows one node, reloading
/// every `refresh`, until the user quits
/// or `stop()` returns true. Blocking: call it from a plain thread (or the main thread), never from
/// a tokio worker. Colors follow `NO_COLOR`.
pub fn run(
    db: &Path,
    node: Option<&str>,
    refresh: Duration,
    stop: impl Fn() -> bool,
) -> anyhow::Result<()> {
    if super::repairs::is_collector_db(db) {
        return run_repairs(db, refresh, stop);
    }
    let store = open(db)?;
    let theme = Theme::from_no_color(std::env::var_os("NO_COLOR").as_deref());
    let mut view = View {
        theme,
        ..View::default()
    };
    let mut at = now_ms();
    let mut state: State = load(&store, node, at, view).context("cannot read the log")?;
    // The node the user picked, followed by name across reloads.
    let mut follow: Option<String> = None;
    let mut guard = Guard::enter()?;
    let keys = key_reader();
    let mut loaded = Instant::now();
    while !stop() {
        let area = guard
            .terminal
            .draw(|frame| render(frame, &state))
            .context("cannot draw")?
            .area;
        let mut requery = false;
        // Wake for a key, for `stop`, or when the next reload is due.
        let wait = POLL.min(refresh.saturating_sub(loaded.elapsed()));
        let key = match keys.recv_timeout(wait) {
            Ok(key) => Some(key),
            Err(RecvTimeoutError::Timeout) => None,
            // The reader met an error: the terminal is gone.
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some(key) = key {
            let Some(next) = apply(view, action(key), Extent::of(&state, area)) else {
                break;
            };
            // Scrolling, help and pause only change how the state is
            // drawn; another sensor or window needs the log.
            requery = next.selected != view.selected
                || next.window != view.window
                || next.node != view.node;
            if next.node != view.node {
                follow = None;
            }
            view = next;
            state.view = view;
        }
        let due = !view.paused && loaded.elapsed() >= refresh;
        if due || requery {
            // Paused, the clock stands still: a new window or sensor is
            // shown as of the moment of the pause.
            if !view.paused {
                at = now_ms();
            }
            state = match load_following(&store, node, at, view, follow.as_deref()) {
                Ok(s) => {
                    view = s.view;
                    follow = s.chosen_node().map(str::to_owned);
                    s
                }
                Err(e) => State {
                    view,
                    error: Some(format!("reload failed: {e}")),
                    ..state
                },
            };
            loaded = Instant::now();
        }
    }
    drop(guard);
    Ok(())
}

/// The loop of the view of a collector's database: reloaded every
/// `refresh`, `q` (or Esc, Ctrl-C) to leave.
fn run_repairs(db: &Path, refresh: Duration, stop: impl Fn() -> bool) -> anyhow::Result<()> {
    use super::repairs;
    let conn = repairs::open(db)
        .with_context(|| format!("cannot open the collector database {}", db.display()))?;
    let path = db.display().to_string();
    let mut state =
        repairs::load(&conn, &path, now_ms()).context("cannot read the collector database")?;
    let mut guard = Guard::enter()?;
    let keys = key_reader();
    let mut loaded = Instant::now();
    while !stop() {
        guard
            .terminal
            .draw(|frame| repairs::render(frame, &state))
            .context("cannot draw")?;
        let wait = POLL.min(refresh.saturating_sub(loaded.elapsed()));
        match keys.recv_timeout(wait) {
            Ok(key) if action(key) == Action::Quit => break,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if loaded.elapsed() >= refresh {
            state = match repairs::load(&conn, &path, now_ms()) {
                Ok(s) => s,
                Err(e) => repairs::Repairs {
                    error: Some(format!("reload failed: {e}")),
                    ..state
                },
            };
            loaded = Instant::now();
        }
    }
    drop(guard);
    Ok(())
}

/// Loads the state, the node picker kept on `follow` (the node the user
/// picked) when its index moved: a new node that sorts before it shifts
/// the others.
fn load_following(
    store: &Store,
    owner: Option<&str>,
    at: i64,
    view: View,
    follow: Option<&str>,
) -> Result<State, crate::store::StoreError> {
    let state = load(store, owner, at, view)?;
    let Some(name) = follow else {
        return Ok(state);
    };
    match state.pick_of(name) {
        Some(node) if state.chosen_node() != Some(name) => {
            load(store, owner, at, View { node, ..view })
        }
        _ => Ok(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::state::Window;

    fn sensors(n: usize) -> Extent {
        Extent {
            sensors: n,
            ..Extent::default()
        }
    }

    #[test]
    fn selection_wraps_both_ways() {
        let v = View::default();
        let v = apply(v, Action::PrevSensor, sensors(3)).expect("not quit");
        assert_eq!(v.selected, 2);
        let v = apply(v, Action::NextSensor, sensors(3)).expect("not quit");
        assert_eq!(v.selected, 0);
        let v = apply(v, Action::NextSensor, sensors(0)).expect("not quit");
        assert_eq!(v.selected, 0);
    }

    #[test]
    fn the_node_picker_cycles_through_all_and_each_node() {
        let three = Extent {
            sensors: 6,
            nodes: 3,
            ..Extent::default()
        };
        let mut v = View::default();
        let mut picks = Vec::new();
        for _ in 0..5 {
            v = apply(v, Action::NextNode, three).expect("not quit");
            picks.push(v.node);
        }
        assert_eq!(picks, [1, 2, 3, 0, 1]);
        let back: Vec<usize> = (0..5)
            .map(|_| {
                v = apply(v, Action::PrevNode, three).expect("not quit");
                v.node
            })
            .collect();
        assert_eq!(back, [0, 3, 2, 1, 0]);
    }

    #[test]
    fn another_node_starts_at_its_first_sensor_and_newest_row() {
        let v = View {
            selected: 4,
            scroll: 30,
            ..View::default()
        };
        let extent = Extent {
            sensors: 6,
            nodes: 3,
            rows: 200,
            page: 20,
        };
        let next = apply(v, Action::NextNode, extent).expect("not quit");
        assert_eq!((next.node, next.selected, next.scroll), (1, 0, 0));
        // One node (an agent's log): nothing to pick, nothing reset.
        let one = Extent { nodes: 1, ..extent };
        assert_eq!(apply(v, Action::NextNode, one), Some(v));
        assert_eq!(apply(v, Action::PrevNode, one), Some(v));
    }

    /// A node that appears and sorts before the picked one moves it one
    /// index on: the picker follows it by name.
    #[test]
    fn the_picked_node_is_followed_when_its_index_moves() {
        use crate::dashboard::fixtures::{NOW, RAW_NODES, build_gateway};
        let dir = tempfile::tempdir().expect("temp dir");
        let path = build_gateway(dir.path());
        let porch = View {
            node: 2,
            ..View::default()
        };
        let before = load(&open(&path).expect("open"), None, NOW, porch).expect("state");
        assert_eq!(before.chosen_node(), Some(RAW_NODES[1]));
        let mut store = Store::open(&path, Access::Writer).expect("writer");
        store
            .insert_readings(&[crate::domain::Reading {
                node: "esp-attic".to_owned(),
                sensor: "lab".to_owned(),
                seq: 0,
                ts_ms: NOW - 1_000,
                sample: crate::domain::Sample::new(20.0, 50.0),
                weights: crate::domain::PerChannel {
                    temperature: 0,
                    humidity: 0,
                },
                priority: 0,
                route: crate::domain::Route::Batch,
                clock_synced: None,
            }])
            .expect("a new node");
        drop(store);
        let store = open(&path).expect("open");
        let moved = load(&store, None, NOW, porch).expect("state");
        assert_eq!(moved.chosen_node(), Some(RAW_NODES[0]), "index 2 moved on");
        let followed = load_following(&store, None, NOW, porch, Some(RAW_NODES[1])).expect("state");
        assert_eq!(followed.chosen_node(), Some(RAW_NODES[1]));
        assert_eq!(followed.view.node, 3);
        // Nothing to follow, or a node that went: the view as it is.
        let all = load_following(&store, None, NOW, View::default(), None).expect("state");
        assert_eq!(all.chosen_node(), None);
        let gone = load_following(&store, None, NOW, porch, Some("esp-gone")).expect("state");
        assert_eq!(gone.view.node, 2);
    }

    #[test]
    fn actions_change_the_view() {
        let v = View::default();
        let one = sensors(1);
        assert_eq!(apply(v, Action::Quit, one), None);
        let w = apply(v, Action::Window(Window::Hour24), one).expect("not quit");
        assert_eq!(w.window, Window::Hour24);
        assert!(apply(v, Action::TogglePause, one).expect("not quit").paused);
        assert!(apply(v, Action::ToggleHelp, one).expect("not quit").help);
        assert_eq!(apply(v, Action::None, one), Some(v));
    }

    /// The offsets `keys` lead to from the top of a table of `rows` shown
    /// `page` at a time.
    fn scroll_through(rows: usize, page: usize, keys: &[Scroll]) -> Vec<usize> {
        let extent = Extent {
            sensors: 3,
            nodes: 1,
            rows,
            page,
        };
        let mut v = View::default();
        keys.iter()
            .map(|&s| {
                v = apply(v, Action::Scroll(s), extent).expect("not quit");
                v.scroll
            })
            .collect()
    }

    #[test]
    fn scrolling_moves_by_rows_and_pages() {
        use Scroll::{Down, Newest, Oldest, PageDown, PageUp, Up};
        assert_eq!(
            scroll_through(
                200,
                20,
                &[Down, Down, Up, PageDown, PageDown, PageUp, Newest]
            ),
            [1, 2, 1, 21, 41, 21, 0]
        );
        // The last page is a full one: rows 181-200 of 200.
        assert_eq!(scroll_through(200, 20, &[Oldest]), [180]);
    }

    #[test]
    fn scrolling_stops_at_both_ends() {
        use Scroll::{Down, Oldest, PageDown, PageUp, Up};
        assert_eq!(scroll_through(200, 20, &[Up, PageUp]), [0, 0]);
        assert_eq!(
            scroll_through(200, 20, &[Oldest, Down, PageDown]),
            [180, 180, 180]
        );
        assert_eq!(
            scroll_through(45, 20, &[PageDown, PageDown, PageDown]),
            [20, 25, 25]
        );
        // Fewer rows than a page, or none: nothing to scroll.
        assert_eq!(scroll_through(7, 20, &[Down, PageDown, Oldest]), [0, 0, 0]);
        assert_eq!(scroll_through(0, 20, &[Down, Oldest]), [0, 0]);
        // Before the first frame the page is unknown: one row at a time.
        assert_eq!(scroll_through(3, 0, &[PageDown, Oldest]), [1, 2]);
    }

    #[test]
    fn scrolling_starts_from_where_the_table_is_drawn() {
        // Scrolled to the end of a 4-row page, then the terminal grew to a
        // 20-row page: the table shows rows 181-200, so one row up is 180.
        let view = View {
            scroll: 196,
            ..View::default()
        };
        let extent = Extent {
            sensors: 3,
            nodes: 1,
            rows: 200,
            page: 20,
        };
        let up = apply(view, Action::Scroll(Scroll::Up), extent).expect("not quit");
        assert_eq!(up.scroll, 179);
    }
}
