//! The main loop, generic over the ratatui `Backend`: draw, then wait for
//! whichever comes first of a key press, a daemon update or the redraw
//! tick. Commands go to the daemon task over an unbounded channel, so a key
//! press never waits for vaultd.

use std::time::Duration;

use ratatui::Terminal;
use ratatui::backend::Backend;
use ratatui::crossterm::event::KeyEvent;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::keys::handle_key;
use crate::message::{Command, Update};
use crate::state::App;
use crate::ui;

/// Redraw at least this often, so "since"/"ago" times move on.
const REDRAW_EVERY: Duration = Duration::from_secs(1);

/// What the terminal reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Key(KeyEvent),
    Resize,
}

/// The channels the loop is wired to.
pub struct Channels {
    pub inputs: UnboundedReceiver<Input>,
    pub updates: UnboundedReceiver<Update>,
    pub commands: UnboundedSender<Command>,
}

/// Runs until the user quits (or every input source is gone).
pub async fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    channels: &mut Channels,
    clock: &dyn Fn() -> u64,
) -> Result<(), B::Error> {
    let mut redraw = tokio::time::interval(REDRAW_EVERY);
    let mut inputs_open = true;
    loop {
        app.now_ms = clock();
        terminal.draw(|frame| ui::draw(frame, app))?;
        tokio::select! {
            input = channels.inputs.recv(), if inputs_open => match input {
                Some(Input::Key(key)) => {
                    for command in handle_key(app, key) {
                        // Only fails when the daemon task is gone; the
                        // connection line already says so.
                        let _ = channels.commands.send(command);
                    }
                }
                Some(Input::Resize) => {}
                None => inputs_open = false,
            },
            Some(update) = channels.updates.recv() => app.apply(update),
            _ = redraw.tick() => {}
        }
        // A burst of updates (one poll posts several) costs one frame.
        while let Ok(update) = channels.updates.try_recv() {
            app.apply(update);
        }
        if app.should_quit || !inputs_open {
            return Ok(());
        }
    }
}
