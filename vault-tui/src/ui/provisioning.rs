//! Provisioning: one server page of the queue, with a detail line for the
//! selected job.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState, Wrap};
use vault_proto::ops::{JobState, JobView};

use super::{HEADER, SELECTED, fmt, placeholder};
use crate::message::QUEUE_PAGE;
use crate::redact::redact;
use crate::state::App;

/// From this width on, aliases are shown in full and the job kind appears.
const WIDE: u16 = 110;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [counts, filters, table, detail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(5),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(counts_line(app)), counts);
    frame.render_widget(Paragraph::new(filter_line(app)), filters);
    jobs_table(frame, table, app);
    job_detail(frame, detail, app);
}

fn counts_line(app: &App) -> Line<'static> {
    let Some(stats) = &app.stats else {
        return Line::from(" queue totals: waiting for vaultd…").dark_gray();
    };
    let q = &stats.queue;
    Line::from(vec![
        " Queue: ".bold(),
        format!("{} due", fmt::count(q.due)).into(),
        " · ".dark_gray(),
        format!("{} scheduled", fmt::count(q.scheduled)).into(),
        " · ".dark_gray(),
        format!("{} in flight", fmt::count(q.in_flight)).into(),
        " · ".dark_gray(),
        if q.failed > 0 {
            format!("{} failed", fmt::count(q.failed)).red().bold()
        } else {
            "0 failed".into()
        },
    ])
}

fn filter_line(app: &App) -> Line<'static> {
    let q = &app.queue;
    let state = q.state_filter.map_or("all", JobState::as_str);
    let scheme = q.scheme_filter.clone().unwrap_or_else(|| "all".into());
    let mut spans = vec![
        " State ".dark_gray(),
        state.to_owned().cyan().bold(),
        "  Scheme ".dark_gray(),
        scheme.cyan().bold(),
        format!("  Page {} ", q.page_number()).dark_gray(),
        format!("({} per page)", QUEUE_PAGE).dark_gray(),
    ];
    if q.has_next() {
        spans.push("  more ▶".into());
    }
    if q.loading {
        spans.push("  loading…".yellow());
    }
    Line::from(spans)
}

fn state_span(state: JobState) -> Span<'static> {
    match state {
        JobState::Due => "due".yellow(),
        JobState::Scheduled => "scheduled".into(),
        JobState::InFlight => "in_flight".cyan(),
        JobState::Failed => "failed".red().bold(),
    }
}

fn next_attempt(job: &JobView, now_ms: u64) -> String {
    match job.state {
        JobState::InFlight => "running".into(),
        JobState::Failed => "–".into(),
        JobState::Due | JobState::Scheduled => fmt::relative(job.next_at, now_ms),
    }
}

fn jobs_table(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Jobs ");
    if app.queue.page.is_none() {
        let inner = block.inner(area);
        frame.render_widget(block, area);
        placeholder(frame, inner, app, "queue_list");
        return;
    }
    let wide = area.width >= WIDE;
    let jobs = app.queue.visible();
    let rows = jobs.iter().map(|job| {
        let mut cells: Vec<Line> = vec![
            Line::from(fmt::cut(&job.job_id, if wide { 14 } else { 10 })),
            Line::from(if wide {
                job.alias.clone()
            } else {
                fmt::cut(&job.alias, 12)
            }),
        ];
        if wide {
            cells.push(Line::from(job.kind.clone()));
        }
        cells.extend([
            Line::from(job.scheme.clone()),
            Line::from(state_span(job.state)),
            Line::from(job.attempts.to_string()).right_aligned(),
            Line::from(next_attempt(job, app.now_ms)),
            Line::from(redact(job.last_error.as_deref().unwrap_or(""))).fg(Color::Red),
        ]);
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Length(if wide { 14 } else { 10 }),
        Constraint::Length(if wide { 32 } else { 12 }),
    ];
    let mut header = vec!["Job", "Alias"];
    if wide {
        widths.push(Constraint::Length(10));
        header.push("Kind");
    }
    widths.extend([
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(4),
        Constraint::Length(11),
        Constraint::Min(10),
    ]);
    header.extend(["Scheme", "State", "Att", "Next", "Last error"]);
    let title = if jobs.is_empty() {
        " Jobs: none on this page ".to_owned()
    } else {
        format!(
            " Job {} of {} on this page ",
            app.queue.selected + 1,
            jobs.len()
        )
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(HEADER))
        .row_highlight_style(SELECTED)
        .block(Block::bordered().title(title));
    let mut state = TableState::default().with_selected(Some(app.queue.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn job_detail(frame: &mut Frame, area: Rect, app: &App) {
    let block = Block::bordered().title(" Selected job ");
    let lines = match app.queue.selected_job() {
        None => vec![Line::from("no job selected").dark_gray()],
        Some(job) => vec![
            Line::from(vec![
                "Job ".dark_gray(),
                Span::raw(job.job_id.clone()),
                " · alias ".dark_gray(),
                Span::raw(job.alias.clone()),
                " · ".dark_gray(),
                Span::raw(format!("{} {}", job.kind, job.scheme)),
            ]),
            Line::from(vec![
                format!(
                    "Next {} UTC · attempts {}",
                    fmt::date_time(job.next_at),
                    job.attempts
                )
                .dark_gray(),
            ]),
            Line::from(vec![
                "Last error: ".dark_gray(),
                Span::styled(
                    redact(job.last_error.as_deref().unwrap_or("none")),
                    Style::new().fg(Color::Red),
                ),
            ]),
        ],
    };
    frame.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(block),
        area,
    );
}
