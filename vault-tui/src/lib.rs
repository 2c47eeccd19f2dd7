//! vault-tui: the security console of vaultd.
//!
//! The pieces are kept apart the way gitui and ratatui's async examples do:
//! [`state`] holds what the console knows, [`keymap`] declares every key
//! once (for handling, the hint bar and help), [`keys`] turns key presses
//! into state changes and [`message::Command`]s, [`ui`] draws the state and
//! nothing else, [`daemon`] is the only code that talks to vaultd (a
//! background task posting [`message::Update`]s), and [`runloop`] ties them
//! together over any ratatui `Backend`, so tests drive it with `TestBackend`.

pub mod cli;
pub mod console;
pub mod daemon;
pub mod keymap;
pub mod keys;
pub mod message;
pub mod queue_view;
pub mod redact;
pub mod runloop;
pub mod state;
pub mod tail;
pub mod throughput;
pub mod ui;

pub use message::{Command, QueueQuery, Update};
pub use state::{App, Tab};
