//! Schemes: provisioning health per card scheme, with pause/resume.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table, TableState};
use vault_proto::ops::{SchemeStats, Stats};

use super::{HEADER, SELECTED, fmt, placeholder};
use crate::state::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Schemes ");
    let Some(stats) = &app.stats else {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        placeholder(frame, inner, app, "stats");
        return;
    };
    let rows_needed = u16::try_from(stats.schemes.len())
        .unwrap_or(u16::MAX)
        .saturating_add(3);
    let [table_area, note] =
        Layout::vertical([Constraint::Max(rows_needed.max(4)), Constraint::Min(0)]).areas(area);
    let rows = stats.schemes.iter().map(|(name, s)| scheme_row(name, s));
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Min(7),
        ],
    )
    .header(
        Row::new([
            "Scheme",
            "Provisioned",
            "Not elig.",
            "Errors",
            "p50",
            "p99",
            "Breaker",
            "State",
        ])
        .style(HEADER),
    )
    .row_highlight_style(SELECTED)
    .block(block);
    let mut state = TableState::default().with_selected(Some(app.scheme_selected));
    frame.render_stateful_widget(table, table_area, &mut state);

    let selected = stats.schemes.iter().nth(app.scheme_selected);
    let mut lines = vec![Line::from("")];
    if let Some((name, s)) = selected {
        lines.push(Line::from(vec![
            " Selected: ".dark_gray(),
            name.clone().bold(),
            if s.paused {
                Span::styled(
                    " paused: jobs wait in the queue; u resumes",
                    Style::new().fg(Color::Yellow),
                )
            } else {
                Span::raw(" running; p pauses provisioning for it")
            },
        ]));
    }
    let [text, chart] = Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(note);
    frame.render_widget(Paragraph::new(lines), text);
    if chart.height >= 4 {
        latency_chart(frame, chart, stats);
    }
}

/// p99 latency side by side, so a slow token service stands out.
fn latency_chart(frame: &mut Frame, area: Rect, stats: &Stats) {
    let slowest = stats.schemes.values().map(|s| s.p99_ms).max().unwrap_or(0);
    let bars: Vec<Bar> = stats
        .schemes
        .iter()
        .map(|(name, s)| {
            let color = if s.p99_ms == slowest && slowest > 0 {
                Color::Red
            } else {
                Color::Cyan
            };
            Bar::new(s.p99_ms)
                .label(Line::from(format!("{name:<11}")))
                .text_value(format!("{} ms", fmt::count(s.p99_ms)))
                .style(Style::new().fg(color))
                .value_style(Style::new().fg(Color::Black).bg(color))
        })
        .collect();
    let chart = BarChart::default()
        .block(Block::bordered().title(" p99 provisioning latency "))
        .direction(Direction::Horizontal)
        .data(BarGroup::default().bars(&bars))
        .bar_width(1)
        .bar_gap(u16::from(
            area.height >= 2 * u16::try_from(bars.len()).unwrap_or(0) + 2,
        ));
    frame.render_widget(chart, area);
}

fn scheme_row(name: &str, s: &SchemeStats) -> Row<'static> {
    let breaker = match s.breaker.as_deref() {
        None => "–".dark_gray(),
        Some("closed") => "closed".green(),
        Some("half_open") => "half_open".yellow(),
        Some(other) => other.to_owned().red().bold(),
    };
    let state = if s.paused {
        "PAUSED".black().on_yellow().bold()
    } else {
        "running".green()
    };
    let errors = if s.errors > 0 {
        fmt::count(s.errors).red()
    } else {
        "0".into()
    };
    Row::new(vec![
        Line::from(name.to_owned()).bold(),
        Line::from(fmt::count(s.provisioned)).right_aligned(),
        Line::from(fmt::count(s.not_eligible)).right_aligned(),
        Line::from(errors).right_aligned(),
        Line::from(format!("{}ms", s.p50_ms)).right_aligned(),
        Line::from(format!("{}ms", s.p99_ms)).right_aligned(),
        Line::from(breaker),
        Line::from(state),
    ])
}
