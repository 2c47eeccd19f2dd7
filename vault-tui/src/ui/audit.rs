//! Audit: live tail of the audit log under a banner with the hash chain
//! verdict, which must be impossible to miss.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::{HEADER, fmt, placeholder};
use crate::redact::redact;
use crate::state::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [banner, log] = Layout::vertical([Constraint::Length(3), Constraint::Min(3)]).areas(area);
    chain_banner(frame, banner, app.chain_ok);
    let title = if app.audit.scroll == 0 {
        format!(" Audit log · live ({} kept) ", app.audit.len())
    } else {
        format!(
            " Audit log · scrolled back {} (G follows) ",
            app.audit.scroll
        )
    };
    let block = Block::bordered().title(title);
    if app.audit.is_empty() {
        let inner = block.inner(log);
        frame.render_widget(block, log);
        placeholder(frame, inner, app, "audit");
        return;
    }
    let wide = log.width >= 110;
    let rows = usize::from(log.height.saturating_sub(3));
    let table_rows = app.audit.window(rows).map(|r| {
        let outcome = if r.outcome == "ok" {
            Line::from(r.outcome.clone()).green()
        } else {
            Line::from(redact(&r.outcome)).red()
        };
        Row::new(vec![
            Line::from(r.seq.to_string()).right_aligned(),
            Line::from(fmt::clock(r.at)),
            Line::from(r.client.clone()),
            Line::from(format!("{}/{}", r.uid, r.pid)),
            Line::from(r.op.clone()).cyan(),
            Line::from(match &r.alias {
                Some(a) if wide => a.clone(),
                Some(a) => fmt::cut(a, 12),
                None => String::new(),
            }),
            outcome,
        ])
    });
    let table = Table::new(
        table_rows,
        [
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(if wide { 16 } else { 10 }),
            Constraint::Length(if wide { 13 } else { 11 }),
            Constraint::Length(if wide { 18 } else { 13 }),
            Constraint::Length(if wide { 32 } else { 12 }),
            Constraint::Min(6),
        ],
    )
    .header(Row::new(["Seq", "UTC", "Client", "uid/pid", "Op", "Alias", "Outcome"]).style(HEADER))
    .block(block);
    frame.render_widget(table, log);
}

fn chain_banner(frame: &mut Frame, area: Rect, chain_ok: Option<bool>) {
    let (text, color) = match chain_ok {
        Some(true) => (
            "AUDIT CHAIN OK: every record verified against its predecessor",
            Color::Green,
        ),
        Some(false) => (
            "AUDIT CHAIN BROKEN: records were altered or removed, investigate now",
            Color::Red,
        ),
        None => ("audit chain: not verified yet", Color::DarkGray),
    };
    let style = Style::new()
        .fg(Color::Black)
        .bg(color)
        .add_modifier(Modifier::BOLD);
    let banner = Paragraph::new(Line::from(text))
        .alignment(Alignment::Center)
        .style(style)
        .block(Block::bordered().border_style(Style::new().fg(color)));
    frame.render_widget(banner, area);
}
