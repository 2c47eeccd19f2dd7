//! The frame around every screen: tab bar, connection line, disconnected
//! banner, status line and key hints.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Tabs, Wrap};

use super::fmt;
use crate::keymap::{self, Context};
use crate::state::{App, Connection, Tab};

pub fn tabs(frame: &mut Frame, area: Rect, app: &App) {
    let titles = Tab::ALL
        .iter()
        .enumerate()
        .map(|(i, t)| Line::from(format!("{} {}", i + 1, t.title())));
    let tabs = Tabs::new(titles)
        .select(app.tab.index())
        .highlight_style(
            Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(Modifier::BOLD),
        )
        .padding(" ", " ")
        .divider("│");
    frame.render_widget(tabs, area);
}

pub fn connection(frame: &mut Frame, area: Rect, app: &App) {
    let line = match &app.connection {
        Connection::Connecting => Line::from(vec![
            " CONNECTING ".black().on_yellow().bold(),
            Span::raw(format!(" {}", app.socket)),
        ]),
        Connection::Connected { since_ms } => {
            let mut spans = vec![
                " CONNECTED ".black().on_green().bold(),
                Span::raw(format!(" {}", app.socket)),
            ];
            if let Some(h) = &app.health {
                spans.push(Span::raw(format!(
                    " · vaultd {} · up {}",
                    h.version,
                    fmt::span(h.uptime_ms)
                )));
                if !h.ready {
                    spans.push(" · NOT READY".red().bold());
                }
            } else {
                spans.push(Span::raw(format!(
                    " · since {}",
                    fmt::relative(*since_ms, app.now_ms)
                )));
            }
            Line::from(spans)
        }
        Connection::Disconnected { since_ms, .. } => Line::from(vec![
            " DISCONNECTED ".white().on_red().bold(),
            Span::raw(format!(
                " {} · since {} UTC ({})",
                app.socket,
                fmt::clock(*since_ms),
                fmt::span(app.now_ms.saturating_sub(*since_ms))
            )),
        ]),
    };
    frame.render_widget(Paragraph::new(line), area);
}

pub fn disconnected_banner(frame: &mut Frame, area: Rect, now_ms: u64, since_ms: u64, error: &str) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(Color::Red))
        .title(" DISCONNECTED from vaultd ".white().on_red().bold())
        .title(Line::from(" reconnecting every second ").right_aligned());
    let text = vec![
        Line::from(vec![
            "Since ".into(),
            fmt::date_time(since_ms).bold(),
            format!(
                " UTC ({} ago). Data below is stale.",
                fmt::span(now_ms.saturating_sub(since_ms))
            )
            .into(),
        ]),
        Line::from(vec!["Last error: ".red(), Span::raw(error.to_owned())]),
    ];
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: true }).block(block),
        area,
    );
}

pub fn status(frame: &mut Frame, area: Rect, app: &App) {
    let line = match &app.status {
        Some(s) if s.ok => Line::from(vec![" ✓ ".green().bold(), Span::raw(s.text.clone())]),
        Some(s) => Line::from(vec![" ✗ ".red().bold(), s.text.clone().red()]),
        None => Line::from(""),
    };
    frame.render_widget(Paragraph::new(line), area);
}

/// The keys that work where the user is, from [`keymap::hints`].
pub fn hints(frame: &mut Frame, area: Rect, app: &App) {
    let mut spans = Vec::new();
    for hint in keymap::hints(Context::of(app)) {
        spans.push(Span::styled(
            format!(" {}", hint.keys),
            Style::new().fg(Color::Cyan).bold(),
        ));
        spans.push(Span::styled(
            format!(" {} ", hint.text),
            Style::new().fg(Color::DarkGray),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
