//! Overlays: the help screen and the confirmation dialog.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use crate::keymap::{self, Action, HelpLine};
use crate::state::PendingAction;

fn popup_area(frame: &Frame, width: u16, height: u16) -> Rect {
    frame
        .area()
        .centered(Constraint::Length(width), Constraint::Length(height))
}

/// Every key from [`keymap::help_lines`], in three columns: where it
/// applies (named once per run of lines), the keys, what they do.
pub fn help(frame: &mut Frame) {
    let entries = keymap::help_lines();
    let width = |column: fn(&HelpLine) -> usize| entries.iter().map(column).max().unwrap_or(0);
    let section_width = width(|l| l.section.chars().count());
    let keys_width = width(|l| l.keys.chars().count());
    let text_width = width(|l| l.text.chars().count());
    let mut previous = None;
    let lines: Vec<Line> = entries
        .iter()
        .map(|entry| {
            let section = if previous == Some(&entry.section) {
                ""
            } else {
                entry.section.as_str()
            };
            previous = Some(&entry.section);
            Line::from(vec![
                Span::styled(
                    format!("{section:<section_width$}  "),
                    Style::new().fg(Color::Yellow).bold(),
                ),
                Span::styled(
                    format!("{:<keys_width$}  ", entry.keys),
                    Style::new().fg(Color::Cyan).bold(),
                ),
                Span::raw(entry.text),
            ])
        })
        .collect();
    let inner_width = section_width + 2 + keys_width + 2 + text_width;
    let area = popup_area(
        frame,
        u16::try_from(inner_width + 2).unwrap_or(u16::MAX),
        u16::try_from(lines.len() + 2).unwrap_or(u16::MAX),
    );
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered().title(format!(" Keys ({} closes) ", keymap::close_help_keys())),
        ),
        area,
    );
}

/// The question, and the dialog's keys from [`keymap::dialog_buttons`].
pub fn confirm(frame: &mut Frame, pending: &PendingAction) {
    let area = popup_area(frame, 60, 8);
    let choices = keymap::dialog_buttons();
    let mut buttons = Vec::new();
    for (i, (action, key, text)) in choices.iter().enumerate() {
        let key = format!(" {key} ").black().bold();
        buttons.push(if *action == Action::Confirm {
            key.on_green()
        } else {
            key.on_red()
        });
        let gap = if i + 1 < choices.len() { "    " } else { "" };
        buttons.push(format!(" {text}{gap}").into());
    }
    let text = vec![
        Line::from(pending.question()),
        Line::from(""),
        Line::from(buttons),
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
