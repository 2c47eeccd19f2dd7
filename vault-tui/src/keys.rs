//! Key presses: change the state at once and return the commands for the
//! daemon task. Nothing here waits on the daemon.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use vault_proto::ops::JobState;

use crate::message::Command;
use crate::state::{App, PendingAction, StatusLine, Tab};

/// Rows a page key scrolls a log tail.
const LOG_PAGE: usize = 10;

/// Handles one key press.
pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Command> {
    let was = app.tab;
    let mut commands = dispatch(app, key);
    if (was == Tab::Audit) != (app.tab == Tab::Audit) {
        commands.push(Command::AuditLive(app.tab == Tab::Audit));
    }
    commands
}

fn dispatch(app: &mut App, key: KeyEvent) -> Vec<Command> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        app.should_quit = true;
        return Vec::new();
    }
    if let Some(pending) = app.confirm.take() {
        return confirm_key(app, pending, key);
    }
    if app.show_help {
        match key.code {
            KeyCode::Char('q') => app.should_quit = true,
            KeyCode::Char('?') | KeyCode::Esc => app.show_help = false,
            _ => {}
        }
        return Vec::new();
    }
    match key.code {
        KeyCode::Char('q') => app.should_quit = true,
        KeyCode::Char('?') => app.show_help = true,
        KeyCode::Esc => app.status = None,
        KeyCode::Tab => app.tab = app.tab.next(),
        KeyCode::BackTab => app.tab = app.tab.prev(),
        KeyCode::Char(c @ '1'..='6') => {
            let i = usize::from(c as u8 - b'1');
            app.tab = Tab::ALL[i];
        }
        _ => return tab_key(app, key),
    }
    Vec::new()
}

fn confirm_key(app: &mut App, pending: PendingAction, key: KeyEvent) -> Vec<Command> {
    match key.code {
        KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => {
            app.status = Some(StatusLine {
                ok: true,
                text: format!(
                    "{}: sent to vaultd, waiting for the answer",
                    pending.title()
                ),
            });
            vec![pending.command()]
        }
        KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
            app.status = Some(StatusLine {
                ok: true,
                text: format!("{}: cancelled", pending.title()),
            });
            Vec::new()
        }
        // Any other key leaves the question open.
        _ => {
            app.confirm = Some(pending);
            Vec::new()
        }
    }
}

fn tab_key(app: &mut App, key: KeyEvent) -> Vec<Command> {
    match app.tab {
        Tab::Overview => None,
        Tab::Provisioning => provisioning_key(app, key),
        Tab::Schemes => {
            schemes_key(app, key);
            None
        }
        Tab::Retention => {
            retention_key(app, key);
            None
        }
        Tab::Events => {
            let tail = &mut app.events;
            log_key(key, |k| match k {
                LogMove::Up(n) => tail.scroll_up(n),
                LogMove::Down(n) => tail.scroll_down(n),
                LogMove::Oldest => tail.to_oldest(),
                LogMove::Follow => tail.follow(),
            });
            None
        }
        Tab::Audit => {
            let tail = &mut app.audit;
            log_key(key, |k| match k {
                LogMove::Up(n) => tail.scroll_up(n),
                LogMove::Down(n) => tail.scroll_down(n),
                LogMove::Oldest => tail.to_oldest(),
                LogMove::Follow => tail.follow(),
            });
            None
        }
    }
    .into_iter()
    .collect()
}

fn provisioning_key(app: &mut App, key: KeyEvent) -> Option<Command> {
    let queue = &mut app.queue;
    match key.code {
        KeyCode::Down | KeyCode::Char('j') => queue.select_next(),
        KeyCode::Up | KeyCode::Char('k') => queue.select_prev(),
        KeyCode::PageDown | KeyCode::Char(']') | KeyCode::Char('n') => queue.next_page(),
        KeyCode::PageUp | KeyCode::Char('[') => queue.prev_page(),
        KeyCode::Home | KeyCode::Char('g') => queue.first_page(),
        KeyCode::Char('f') => Some(queue.cycle_state_filter()),
        KeyCode::Char('s') => {
            let schemes = app.scheme_names();
            app.queue.cycle_scheme_filter(&schemes);
            None
        }
        KeyCode::Char('r') => {
            match queue.selected_job() {
                Some(job) if job.state == JobState::Failed => {
                    app.confirm = Some(PendingAction::RetryJob {
                        job_id: job.job_id.clone(),
                        alias: job.alias.clone(),
                    });
                }
                Some(job) => {
                    app.status = Some(StatusLine {
                        ok: false,
                        text: format!(
                            "job {} is {}: only failed jobs can be retried",
                            job.job_id,
                            job.state.as_str()
                        ),
                    });
                }
                None => {}
            }
            None
        }
        _ => None,
    }
}

fn schemes_key(app: &mut App, key: KeyEvent) {
    let names = app.scheme_names();
    match key.code {
        KeyCode::Down | KeyCode::Char('j') if app.scheme_selected + 1 < names.len() => {
            app.scheme_selected += 1;
        }
        KeyCode::Up | KeyCode::Char('k') => {
            app.scheme_selected = app.scheme_selected.saturating_sub(1)
        }
        KeyCode::Char('p') => {
            if let Some(scheme) = names.get(app.scheme_selected) {
                app.confirm = Some(PendingAction::PauseScheme {
                    scheme: scheme.clone(),
                });
            }
        }
        KeyCode::Char('u') => {
            if let Some(scheme) = names.get(app.scheme_selected) {
                app.confirm = Some(PendingAction::ResumeScheme {
                    scheme: scheme.clone(),
                });
            }
        }
        _ => {}
    }
}

fn retention_key(app: &mut App, key: KeyEvent) {
    let Some(retention) = &app.retention else {
        return;
    };
    let tenants = &retention.tenants;
    match key.code {
        KeyCode::Down | KeyCode::Char('j') if app.tenant_selected + 1 < tenants.len() => {
            app.tenant_selected += 1;
        }
        KeyCode::Up | KeyCode::Char('k') => {
            app.tenant_selected = app.tenant_selected.saturating_sub(1)
        }
        KeyCode::Char('d') => {
            if let Some(t) = tenants.get(app.tenant_selected) {
                app.confirm = Some(PendingAction::PurgeTenant {
                    tenant: t.tenant.clone(),
                    due_now: t.due_now,
                });
            }
        }
        KeyCode::Char('D') => {
            app.confirm = Some(PendingAction::PurgeAll {
                due_now: tenants.iter().map(|t| t.due_now).sum(),
            });
        }
        _ => {}
    }
}

enum LogMove {
    Up(usize),
    Down(usize),
    Oldest,
    Follow,
}

fn log_key(key: KeyEvent, mut apply: impl FnMut(LogMove)) {
    match key.code {
        KeyCode::Up | KeyCode::Char('k') => apply(LogMove::Up(1)),
        KeyCode::Down | KeyCode::Char('j') => apply(LogMove::Down(1)),
        KeyCode::PageUp => apply(LogMove::Up(LOG_PAGE)),
        KeyCode::PageDown => apply(LogMove::Down(LOG_PAGE)),
        KeyCode::Home | KeyCode::Char('g') => apply(LogMove::Oldest),
        KeyCode::End | KeyCode::Char('G') => apply(LogMove::Follow),
        _ => {}
    }
}
