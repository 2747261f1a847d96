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
    /// Show this history window.
    Window(Window),
    /// Stop or resume reloading.
    TogglePause,
    /// Show or hide the key list.
    ToggleHelp,
    /// Nothing: an unbound key.
    None,
}

/// The keys and what they do, for the help overlay.
pub const HELP: &[(&str, &str)] = &[
    ("q Esc Ctrl-C", "quit"),
    ("Tab → ↓", "next sensor"),
    ("S-Tab ← ↑", "previous sensor"),
    ("1 2 3 4", "window 15m 1h 6h 24h"),
    ("p", "pause / resume"),
    ("?", "this help"),
];

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
    fn toggles_and_unbound_keys() {
        assert_eq!(action(key(KeyCode::Char('p'))), Action::TogglePause);
        assert_eq!(action(key(KeyCode::Char('?'))), Action::ToggleHelp);
        assert_eq!(action(key(KeyCode::Char('x'))), Action::None);
        assert_eq!(action(key(KeyCode::F(1))), Action::None);
    }

    #[test]
    fn releases_do_nothing() {
        let mut k = key(KeyCode::Char('q'));
        k.kind = KeyEventKind::Release;
        assert_eq!(action(k), Action::None);
    }
}
