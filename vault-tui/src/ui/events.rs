//! Events: live tail of lifecycle and provisioning events, newest at the
//! bottom.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Stylize;
use ratatui::text::Line;
use ratatui::widgets::{Block, Row, Table};

use super::{HEADER, fmt, placeholder};
use crate::redact::redact;
use crate::state::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let title = if app.events.scroll == 0 {
        format!(" Events · live ({} kept) ", app.events.len())
    } else {
        format!(" Events · scrolled back {} (G follows) ", app.events.scroll)
    };
    let block = Block::bordered().title(title);
    if app.events.is_empty() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        placeholder(frame, inner, app, "events");
        return;
    }
    let wide = area.width >= 110;
    // Borders and header take three rows.
    let rows = usize::from(area.height.saturating_sub(3));
    let table_rows = app.events.window(rows).map(|e| {
        Row::new(vec![
            Line::from(e.seq.to_string()).right_aligned(),
            Line::from(fmt::clock(e.at)),
            Line::from(e.kind.clone()).cyan(),
            Line::from(e.scheme.clone().unwrap_or_default()),
            Line::from(match &e.alias {
                Some(a) if wide => a.clone(),
                Some(a) => fmt::cut(a, 12),
                None => String::new(),
            }),
            Line::from(redact(&e.detail)),
        ])
    });
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(if wide { 22 } else { 16 }),
            Constraint::Length(10),
            Constraint::Length(if wide { 32 } else { 12 }),
            Constraint::Min(10),
        ],
    )
    .header(Row::new(["Seq", "UTC", "Kind", "Scheme", "Alias", "Detail"]).style(HEADER))
    .block(block);
    frame.render_widget(table, area);
}
