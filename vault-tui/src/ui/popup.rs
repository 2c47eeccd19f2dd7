//! Overlays: the help screen and the confirmation dialog.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::state::PendingAction;

/// Every key, for the help overlay (and the README).
pub const KEYS: &[(&str, &str)] = &[
    ("1-6, Tab, S-Tab", "switch screen"),
    ("?", "toggle this help"),
    ("q, Ctrl-C", "quit"),
    ("Esc", "close help / clear status"),
    ("j/k, ↓/↑", "move selection / scroll"),
    ("Provisioning", ""),
    ("  ] [ PgDn PgUp", "next / previous page"),
    ("  g, Home", "first page"),
    ("  f / s", "filter by state / scheme"),
    ("  r", "retry the failed job"),
    ("Schemes", ""),
    ("  p / u", "pause / resume scheme"),
    ("Retention", ""),
    ("  d / D", "purge due: tenant / all"),
    ("Events, Audit", ""),
    ("  g / G", "oldest / follow the tail"),
    ("Dialogs", ""),
    ("  y, Enter / n, Esc", "confirm / cancel"),
];

fn popup_area(frame: &Frame, width: u16, height: u16) -> Rect {
    frame
        .area()
        .centered(Constraint::Length(width), Constraint::Length(height))
}

pub fn help(frame: &mut Frame) {
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(key, what)| {
            if what.is_empty() {
                Line::from(Span::styled(*key, Style::new().fg(Color::Yellow).bold()))
            } else {
                Line::from(vec![
                    Span::styled(format!("{key:<22}"), Style::new().fg(Color::Cyan).bold()),
                    Span::raw(*what),
                ])
            }
        })
        .collect();
    let height = u16::try_from(lines.len())
        .unwrap_or(u16::MAX)
        .saturating_add(2);
    let area = popup_area(frame, 52, height);
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Keys (? or Esc closes) ")),
        area,
    );
}

pub fn confirm(frame: &mut Frame, pending: &PendingAction) {
    let area = popup_area(frame, 60, 8);
    let text = vec![
        Line::from(pending.question()),
        Line::from(""),
        Line::from(vec![
            " y ".black().on_green().bold(),
            " confirm    ".into(),
            " n ".black().on_red().bold(),
            " cancel".into(),
        ]),
    ];
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(text).wrap(Wrap { trim: true }).block(
            Block::bordered()
                .border_style(Style::new().fg(Color::Yellow))
                .title(format!(" {} ", pending.title()).bold()),
        ),
        area,
    );
}
