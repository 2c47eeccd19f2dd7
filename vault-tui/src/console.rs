//! The real terminal: set it up (with ratatui's panic hook that restores
//! it), read keys on a thread of their own, start the daemon task, run the
//! loop, restore the terminal.

use std::path::PathBuf;

use ratatui::crossterm::event::{self, Event, KeyEventKind};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::daemon::{self, WorkerConfig, now_ms};
use crate::runloop::{self, Channels, Input};
use crate::state::App;

/// Runs the console against the daemon at `socket` until the user quits.
pub async fn run(socket: PathBuf) -> std::io::Result<()> {
    let (update_tx, updates) = unbounded_channel();
    let (commands, worker) = daemon::spawn(WorkerConfig::new(socket.clone()), update_tx);
    let (input_tx, inputs) = unbounded_channel();
    // Installs a panic hook that restores the terminal before the message.
    let mut terminal = ratatui::try_init()?;
    spawn_input_thread(input_tx);
    let mut app = App::new(socket.display().to_string(), now_ms());
    let mut channels = Channels {
        inputs,
        updates,
        commands,
    };
    let result = runloop::run(&mut terminal, &mut app, &mut channels, &now_ms).await;
    ratatui::restore();
    worker.abort();
    result
}

/// crossterm's `read` blocks, so it gets a thread; the loop only sees a
/// channel. The thread ends with the process.
fn spawn_input_thread(tx: UnboundedSender<Input>) {
    std::thread::spawn(move || {
        loop {
            let input = match event::read() {
                Ok(Event::Key(key)) if key.kind == KeyEventKind::Press => Input::Key(key),
                Ok(Event::Resize(..)) => Input::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(input).is_err() {
                return;
            }
        }
    });
}
