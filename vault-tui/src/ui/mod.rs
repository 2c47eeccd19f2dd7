//! Drawing: a pure function of [`App`]. Nothing here reads the clock or
//! talks to the daemon.

mod audit;
mod chrome;
mod events;
pub mod fmt;
mod overview;
mod popup;
mod provisioning;
mod retention;
mod schemes;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::Paragraph;

use crate::state::{App, Connection, Tab};

/// Style of a table's selected row.
pub(crate) const SELECTED: Style = Style::new().add_modifier(Modifier::REVERSED);
/// Style of column headers.
pub(crate) const HEADER: Style = Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD);

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [tabs, connection, body, status, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    chrome::tabs(frame, tabs, app);
    chrome::connection(frame, connection, app);
    let body = match &app.connection {
        Connection::Disconnected { since_ms, error } => {
            let [banner, rest] =
                Layout::vertical([Constraint::Length(5), Constraint::Min(0)]).areas(body);
            chrome::disconnected_banner(frame, banner, app.now_ms, *since_ms, error);
            rest
        }
        _ => body,
    };
    match app.tab {
        Tab::Overview => overview::draw(frame, body, app),
        Tab::Provisioning => provisioning::draw(frame, body, app),
        Tab::Schemes => schemes::draw(frame, body, app),
        Tab::Retention => retention::draw(frame, body, app),
        Tab::Events => events::draw(frame, body, app),
        Tab::Audit => audit::draw(frame, body, app),
    }
    chrome::status(frame, status, app);
    chrome::hints(frame, hints, app);
    if let Some(pending) = &app.confirm {
        popup::confirm(frame, pending);
    }
    if app.show_help {
        popup::help(frame);
    }
}

/// A dim one-line note in `area` (no data yet, or the op was refused).
pub(crate) fn placeholder(frame: &mut Frame, area: Rect, app: &App, op: &str) {
    let text = match app.op_errors.get(op) {
        Some(error) => Line::styled(
            format!("{op} unavailable: {error}"),
            Style::new().fg(Color::Red),
        ),
        None => Line::styled("waiting for vaultd…", Style::new().fg(Color::DarkGray)),
    };
    frame.render_widget(Paragraph::new(text), area);
}
