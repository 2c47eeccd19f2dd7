//! Retention: PANs kept per tenant and when they fall due for purge.

use ratatui::Frame;
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table, TableState};
use vault_proto::ops::{Retention, TenantRetention};

use super::{HEADER, SELECTED, fmt, placeholder};

const DAY_MS: u64 = 86_400_000;
/// Three bars with gaps, and borders.
const CHART_HEIGHT: u16 = 7;
use crate::state::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let Some(retention) = &app.retention else {
        let block = Block::bordered().title(" Retention ");
        let inner = block.inner(area);
        frame.render_widget(block, area);
        placeholder(frame, inner, app, "retention");
        return;
    };
    let table_height = u16::try_from(retention.tenants.len() + 3).unwrap_or(u16::MAX);
    let [summary, table_area, chart] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(table_height.max(4)),
        Constraint::Length(CHART_HEIGHT),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(summary_line(retention, app.now_ms)), summary);
    tenants_table(frame, table_area, retention, app);
    due_chart(frame, chart, retention);
}

fn summary_line(retention: &Retention, now_ms: u64) -> Line<'static> {
    let retained: u64 = retention.tenants.iter().map(|t| t.pans_retained).sum();
    let due: u64 = retention.tenants.iter().map(|t| t.due_now).sum();
    let next = retention.next_purge_at.map_or_else(
        || "none scheduled".to_owned(),
        |at| format!("{} ({} UTC)", fmt::relative(at, now_ms), fmt::clock(at)),
    );
    Line::from(vec![
        format!(" {} PANs retained", fmt::count(retained)).bold(),
        " · ".dark_gray(),
        if due > 0 {
            format!("{} due now", fmt::count(due)).red().bold()
        } else {
            "0 due now".into()
        },
        " · next purge ".dark_gray(),
        next.into(),
    ])
}

fn tenants_table(frame: &mut Frame, area: Rect, retention: &Retention, app: &App) {
    let rows = retention.tenants.iter().map(|t| tenant_row(t, app.now_ms));
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new([
            "Tenant", "Policy", "Retained", "Due now", "≤7d", "≤30d", "Purged", "Oldest",
        ])
        .style(HEADER),
    )
    .row_highlight_style(SELECTED)
    .block(Block::bordered().title(" Tenants "));
    let mut state = TableState::default().with_selected(Some(app.tenant_selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn tenant_row(t: &TenantRetention, now_ms: u64) -> Row<'static> {
    let due_now = if t.due_now > 0 {
        fmt::count(t.due_now).red().bold()
    } else {
        "0".into()
    };
    let oldest = t.oldest_retained_at.map_or_else(
        || "–".to_owned(),
        |at| {
            format!(
                "{} ({}d)",
                fmt::date(at),
                now_ms.saturating_sub(at) / DAY_MS
            )
        },
    );
    Row::new(vec![
        Line::from(fmt::cut(&t.tenant, 11)).bold(),
        Line::from(fmt::cut(&t.policy, 9)),
        Line::from(fmt::count(t.pans_retained)).right_aligned(),
        Line::from(due_now).right_aligned(),
        Line::from(fmt::count(t.due_7d)).right_aligned(),
        Line::from(fmt::count(t.due_30d)).right_aligned(),
        Line::from(fmt::count(t.purged_total)).right_aligned(),
        Line::from(oldest),
    ])
}

/// What falls due when, all tenants together.
fn due_chart(frame: &mut Frame, area: Rect, retention: &Retention) {
    let sum = |f: fn(&TenantRetention) -> u64| retention.tenants.iter().map(f).sum::<u64>();
    let buckets = [
        ("due now", sum(|t| t.due_now), Color::Red),
        ("within 7 days", sum(|t| t.due_7d), Color::Yellow),
        ("within 30 days", sum(|t| t.due_30d), Color::Cyan),
    ];
    let bars: Vec<Bar> = buckets
        .iter()
        .map(|(label, n, color)| {
            Bar::new(*n)
                .label(Line::from(*label))
                .text_value(fmt::count(*n))
                .style(Style::new().fg(*color))
                .value_style(Style::new().fg(Color::Black).bg(*color))
        })
        .collect();
    let chart = BarChart::default()
        .block(Block::bordered().title(" PANs falling due for purge (all tenants) "))
        .direction(Direction::Horizontal)
        .data(BarGroup::default().bars(&bars))
        .bar_width(1)
        .bar_gap(1);
    frame.render_widget(chart, area);
}
