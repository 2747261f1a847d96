//! Keys to actions: a pure function, so input is tested without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::Window;

/// What a key asks the dashboard to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the dashboard.
    Quit,
    /// Select the next sensor.
    NextSensor,
    /// Select the previous sensor.
    PrevSensor,
    /// Show the next node alone ("all nodes" comes after the last one).
    NextNode,
    /// Show the previous node alone (or "all nodes", before the first).
    PrevNode,
    /// Show this history window.
    Window(Window),
    /// Stop or resume reloading.
    TogglePause,
    /// Show or hide the key list.
    ToggleHelp,
    /// Move through the readings table.
    Scroll(Scroll),
    /// Nothing: an unbound key.
    None,
}

/// A move through the readings table, newest row at the top.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scroll {
    /// One row towards older readings.
    Down,
    /// One row towards newer readings.
    Up,
    /// One screenful towards older readings.
    PageDown,
    /// One screenful towards newer readings.
    PageUp,
    /// Back to the newest reading, where new ones show up.
    Newest,
    /// To the oldest reading the table holds.
    Oldest,
}

/// The keys and what they do, for the help overlay.
pub const HELP: &[(&str, &str)] = &[
    ("q Esc Ctrl-C", "quit"),
    ("Tab → ↓", "next sensor"),
    ("S-Tab ← ↑", "previous sensor"),
    ("1 2 3 4", "window 15m 1h 6h 24h"),
    ("j k", "table row down / up"),
    ("PgDn PgUp", "table page down / up"),
    ("g Home", "table top (newest)"),
    ("G End", "table end (oldest)"),
    ("p", "pause / resume"),
    ("?", "this help"),
];

/// The node picker's keys, listed in the help overlay only when the log
/// has nodes to pick from (a gateway's log): an agent's help is unchanged.
pub const NODE_HELP: (&str, &str) = ("n N", "next / previous node");

/// The action bound to `key`. Key releases (reported on some terminals)
/// do nothing, so one press never acts twice.
pub fn action(key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Tab | KeyCode::Right | KeyCode::Down => Action::NextSensor,
        KeyCode::BackTab | KeyCode::Left | KeyCode::Up => Action::PrevSensor,
        KeyCode::Char('1') => Action::Window(Window::Min15),
        KeyCode::Char('2') => Action::Window(Window::Hour1),
        KeyCode::Char('3') => Action::Window(Window::Hour6),
        KeyCode::Char('4') => Action::Window(Window::Hour24),
        KeyCode::Char('j') => Action::Scroll(Scroll::Down),
        KeyCode::Char('k') => Action::Scroll(Scroll::Up),
        KeyCode::PageDown => Action::Scroll(Scroll::PageDown),
        KeyCode::PageUp => Action::Scroll(Scroll::PageUp),
        KeyCode::Char('g') | KeyCode::Home => Action::Scroll(Scroll::Newest),
        KeyCode::Char('G') | KeyCode::End => Action::Scroll(Scroll::Oldest),
        KeyCode::Char('n') => Action::NextNode,
        KeyCode::Char('N') => Action::PrevNode,
        KeyCode::Char('p') => Action::TogglePause,
        KeyCode::Char('?') => Action::ToggleHelp,
        _ => Action::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn quit_keys() {
        assert_eq!(action(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(action(key(KeyCode::Esc)), Action::Quit);
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
        assert_eq!(action(key(KeyCode::Char('c'))), Action::None);
    }

    #[test]
    fn sensor_selection_keys() {
        for code in [KeyCode::Tab, KeyCode::Right, KeyCode::Down] {
            assert_eq!(action(key(code)), Action::NextSensor, "{code:?}");
        }
        for code in [KeyCode::BackTab, KeyCode::Left, KeyCode::Up] {
            assert_eq!(action(key(code)), Action::PrevSensor, "{code:?}");
        }
        // Terminals report Shift-Tab as BackTab with SHIFT set.
        assert_eq!(
            action(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Action::PrevSensor
        );
    }

    #[test]
    fn window_keys() {
        let expected = [
            ('1', Window::Min15),
            ('2', Window::Hour1),
            ('3', Window::Hour6),
            ('4', Window::Hour24),
        ];
        for (c, w) in expected {
            assert_eq!(action(key(KeyCode::Char(c))), Action::Window(w));
        }
        assert_eq!(action(key(KeyCode::Char('5'))), Action::None);
    }

    #[test]
    fn scroll_keys() {
        let expected = [
            (KeyCode::Char('j'), Scroll::Down),
            (KeyCode::Char('k'), Scroll::Up),
            (KeyCode::PageDown, Scroll::PageDown),
            (KeyCode::PageUp, Scroll::PageUp),
            (KeyCode::Char('g'), Scroll::Newest),
            (KeyCode::Home, Scroll::Newest),
            (KeyCode::Char('G'), Scroll::Oldest),
            (KeyCode::End, Scroll::Oldest),
        ];
        for (code, scroll) in expected {
            assert_eq!(action(key(code)), Action::Scroll(scroll), "{code:?}");
        }
        // Terminals report `G` with SHIFT set.
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT)),
            Action::Scroll(Scroll::Oldest)
        );
        // The arrows stay with the sensors.
        assert_eq!(action(key(KeyCode::Down)), Action::NextSensor);
        assert_eq!(action(key(KeyCode::Up)), Action::PrevSensor);
    }

    #[test]
    fn help_lists_every_scroll_key() {
        let keys: Vec<&str> = HELP.iter().flat_map(|(k, _)| k.split(' ')).collect();
        for k in ["j", "k", "PgDn", "PgUp", "g", "G", "Home", "End"] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn toggles_and_unbound_keys() {
        assert_eq!(action(key(KeyCode::Char('p'))), Action::TogglePause);
        assert_eq!(action(key(KeyCode::Char('?'))), Action::ToggleHelp);
        assert_eq!(action(key(KeyCode::Char('x'))), Action::None);
        assert_eq!(action(key(KeyCode::F(1))), Action::None);
    }

    #[test]
    fn node_picker_keys() {
        assert_eq!(action(key(KeyCode::Char('n'))), Action::NextNode);
        assert_eq!(action(key(KeyCode::Char('N'))), Action::PrevNode);
        // Terminals report `N` with SHIFT set.
        assert_eq!(
            action(KeyEvent::new(KeyCode::Char('N'), KeyModifiers::SHIFT)),
            Action::PrevNode
        );
        let listed: Vec<&str> = NODE_HELP.0.split(' ').collect();
        assert_eq!(listed, ["n", "N"]);
    }

    #[test]
    fn releases_do_nothing() {
        let mut k = key(KeyCode::Char('q'));
        k.kind = KeyEventKind::Release;
        assert_eq!(action(k), Action::None);
    }
}
