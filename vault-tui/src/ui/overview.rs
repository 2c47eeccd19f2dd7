//! Overview: the vault at a glance.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Sparkline, Table};
use vault_proto::ops::{Health, HsmStats, Stats, TokenStatus};

use super::{HEADER, fmt, placeholder};
use crate::state::App;

/// Height of the two panels on top.
const TOP: u16 = 12;
/// From this body height on, a scheme summary fills the space below.
const ROOM_FOR_SCHEMES: u16 = 28;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let with_schemes = area.height >= ROOM_FOR_SCHEMES;
    let scheme_rows = app.stats.as_ref().map_or(1, |s| s.schemes.len());
    // Borders and header: three rows more than the schemes.
    let schemes_height = u16::try_from(scheme_rows + 3).unwrap_or(u16::MAX);
    let [top, spark, schemes] = Layout::vertical([
        Constraint::Length(TOP),
        Constraint::Min(3),
        Constraint::Length(if with_schemes { schemes_height } else { 0 }),
    ])
    .areas(area);
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(58), Constraint::Percentage(42)]).areas(top);
    vault_panel(frame, left, app);
    tokens_panel(frame, right, app);
    sparkline(frame, spark, app);
    if with_schemes {
        schemes_summary(frame, schemes, app);
    }
}

fn row(label: &str, value: impl Into<Span<'static>>) -> Line<'static> {
    Line::from(vec![Span::raw(format!(" {label:<15}")), value.into()])
}

fn health_span(state: &str) -> Span<'static> {
    if state == "ok" {
        "ok".green().bold()
    } else {
        state.to_owned().red().bold()
    }
}

fn vault_panel(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Vault ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(stats) = &app.stats else {
        placeholder(frame, inner, app, "stats");
        return;
    };
    let q = &stats.queue;
    let mut lines = vec![
        row("Aliases", fmt::count(stats.aliases).bold()),
        row("PANs retained", fmt::count(stats.pans_retained).bold()),
        row(
            "Queue depth",
            fmt::count(q.due + q.scheduled + q.in_flight).bold(),
        ),
        Line::from(format!(
            "   {} due · {} scheduled · {} in flight",
            fmt::count(q.due),
            fmt::count(q.scheduled),
            fmt::count(q.in_flight)
        ))
        .fg(Color::DarkGray),
        row(
            "Failed jobs",
            if q.failed > 0 {
                fmt::count(q.failed).red().bold()
            } else {
                "0".into()
            },
        ),
        row(
            "Throughput",
            app.throughput.latest().map_or_else(
                || "–".to_owned(),
                |r| format!("{} tokens/min", fmt::count(r)),
            ),
        ),
    ];
    lines.extend(health_lines(app.health.as_ref(), stats));
    frame.render_widget(Paragraph::new(lines), inner);
}

fn health_lines(health: Option<&Health>, stats: &Stats) -> Vec<Line<'static>> {
    let mut lines = match health {
        Some(h) => vec![row("HSM", health_span(&h.hsm))],
        None => vec![row("HSM / Store", "unknown".dark_gray())],
    };
    if let Some(hsm) = &stats.hsm {
        lines.push(Line::from(hsm_upkeep(hsm)).fg(Color::DarkGray));
    }
    match health {
        Some(h) => lines.extend([
            row("Store", health_span(&h.store)),
            row("Uptime", fmt::span(h.uptime_ms)),
        ]),
        None => lines.push(row("Uptime", fmt::span(stats.uptime_ms))),
    }
    lines
}

/// The module's upkeep (`stats.hsm`): how far it is into its session-object
/// budget, how many re-initialisations there were and how long the last
/// one held calls, so a latency spike can be matched to one.
fn hsm_upkeep(hsm: &HsmStats) -> String {
    if hsm.reinit_after_objects == 0 {
        return format!("   key copies {}", fmt::count(hsm.key_copies_made));
    }
    let used = hsm.session_objects.saturating_mul(100) / hsm.reinit_after_objects;
    format!(
        "   objects {used}% · re-inits {} · pause {} ms",
        fmt::count(hsm.reinitializations),
        hsm.last_reinit_pause_ms
    )
}

fn status_style(status: &str) -> Style {
    match status {
        "active" => Style::new().fg(Color::Green),
        "pending" | "inactive" => Style::new().fg(Color::Yellow),
        "failed" => Style::new().fg(Color::Red),
        "suspended" => Style::new().fg(Color::Magenta),
        _ => Style::new().fg(Color::DarkGray),
    }
}

fn tokens_panel(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Network tokens by status ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(stats) = &app.stats else {
        placeholder(frame, inner, app, "stats");
        return;
    };
    // Known statuses in lifecycle order, then anything newer the daemon reports.
    let mut names: Vec<&str> = TokenStatus::ALL.iter().map(|s| s.as_str()).collect();
    let newer: Vec<&str> = stats
        .tokens
        .keys()
        .map(String::as_str)
        .filter(|k| !names.contains(k))
        .collect();
    names.extend(newer);
    let lines: Vec<Line> = names
        .into_iter()
        .map(|name| {
            let n = stats.tokens.get(name).copied().unwrap_or(0);
            Line::from(vec![
                Span::styled(format!(" {name:<14}"), status_style(name)),
                Span::raw(format!("{:>10}", fmt::count(n))),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), inner);
}

fn sparkline(frame: &mut Frame, area: Rect, app: &App) {
    let rates = app.throughput.rates();
    let peak = rates.iter().copied().max().unwrap_or(0);
    let title = format!(
        " Provisioning throughput, tokens/min (last {} samples, peak {}) ",
        rates.len(),
        fmt::count(peak)
    );
    let block = Block::bordered().title(title);
    // Newest on the right: show the last samples that fit.
    let width = usize::from(block.inner(area).width);
    let shown = &rates[rates.len().saturating_sub(width)..];
    let spark = Sparkline::default()
        .block(block)
        .data(shown)
        .style(Style::new().fg(Color::Cyan));
    frame.render_widget(spark, area);
}

fn schemes_summary(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Schemes ");
    let Some(stats) = &app.stats else {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        placeholder(frame, inner, app, "stats");
        return;
    };
    let rows = stats.schemes.iter().map(|(name, s)| {
        let state = if s.paused {
            "PAUSED".yellow().bold()
        } else {
            "running".green()
        };
        Row::new(vec![
            Line::from(name.clone()),
            Line::from(fmt::count(s.provisioned)).right_aligned(),
            Line::from(fmt::count(s.errors)).right_aligned(),
            Line::from(format!("{} ms", s.p99_ms)).right_aligned(),
            Line::from(s.breaker.clone().unwrap_or_else(|| "–".into())),
            Line::from(state),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(8),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(8),
        ],
    )
    .header(Row::new(["Scheme", "Provisioned", "Errors", "p99", "Breaker", "State"]).style(HEADER))
    .block(block);
    frame.render_widget(table, area);
}
