//! The terminal dashboard (`edgeprio dashboard`): attaches to the log
//! read-only and shows the agent, the sensors, the priorities and the
//! routing split. On a gateway's log, one panel per (node, sensor) and a
//! node picker; the header stays the gateway's.
//!
//! # Layout
//!
//! - [`state`]: the query layer; builds a [`State`] from the database at a
//!   given `now`.
//! - [`ui`]: draws a [`State`] into a ratatui `Frame`, nothing else.
//! - [`keys`]: maps a key to an [`Action`], a pure function.
//! - [`app`]: the terminal loop: raw mode, the alternate screen, reloading
//!   once per tick, and restoring the terminal however it ends.
//! - [`repairs`]: the view of a collector's database (its gap repair per
//!   node), which [`app`] shows when `--db` names one.

pub mod app;
pub mod keys;
pub mod repairs;
pub mod state;
pub mod ui;

#[cfg(test)]
mod fixtures;

pub use app::run;
pub use keys::{Action, action};
pub use state::{State, Theme, View, Window, load};
pub use ui::render;
