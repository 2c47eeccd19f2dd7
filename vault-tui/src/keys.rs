//! Key presses: change the state at once and return the commands for the
//! daemon task. Nothing here waits on the daemon. Which key means what is
//! declared in [`crate::keymap`]; this module carries the actions out.

use ratatui::crossterm::event::KeyEvent;
use vault_proto::ops::JobState;

use crate::keymap::{self, Action, Context};
use crate::message::Command;
use crate::state::{App, PendingAction, StatusLine, Tab};
use crate::tail::LogTail;

/// Rows a page key scrolls a log tail.
const LOG_PAGE: usize = 10;

/// Handles one key press.
pub fn handle_key(app: &mut App, key: KeyEvent) -> Vec<Command> {
    let was = app.tab;
    let mut commands = match keymap::action_for(Context::of(app), &key) {
        Some(action) => perform(app, action, &key),
        None => Vec::new(),
    };
    if (was == Tab::Audit) != (app.tab == Tab::Audit) {
        commands.push(Command::AuditLive(app.tab == Tab::Audit));
    }
    commands
}

/// Carries out `action`, which the keymap found for `key` where the user is.
fn perform(app: &mut App, action: Action, key: &KeyEvent) -> Vec<Command> {
    let command = match action {
        Action::Quit => {
            app.should_quit = true;
            None
        }
        Action::OpenHelp => {
            app.show_help = true;
            None
        }
        Action::CloseHelp => {
            app.show_help = false;
            None
        }
        Action::ClearStatus => {
            app.status = None;
            None
        }
        Action::GoToScreen => {
            if let Some(tab) = keymap::screen_of(key) {
                app.tab = tab;
            }
            None
        }
        Action::NextScreen => {
            app.tab = app.tab.next();
            None
        }
        Action::PrevScreen => {
            app.tab = app.tab.prev();
            None
        }
        Action::Confirm => confirm(app),
        Action::Cancel => {
            cancel(app);
            None
        }
        Action::SelectNext => select(app, Step::Next),
        Action::SelectPrev => select(app, Step::Prev),
        Action::NextPage => app.queue.next_page(),
        Action::PrevPage => app.queue.prev_page(),
        Action::FirstPage => app.queue.first_page(),
        Action::CycleStateFilter => Some(app.queue.cycle_state_filter()),
        Action::CycleSchemeFilter => {
            let schemes = app.scheme_names();
            app.queue.cycle_scheme_filter(&schemes);
            None
        }
        Action::RetryJob => {
            retry_job(app);
            None
        }
        Action::PauseScheme | Action::ResumeScheme => {
            if let Some(scheme) = app.scheme_names().get(app.scheme_selected).cloned() {
                app.confirm = Some(if action == Action::PauseScheme {
                    PendingAction::PauseScheme { scheme }
                } else {
                    PendingAction::ResumeScheme { scheme }
                });
            }
            None
        }
        Action::PurgeTenant => {
            let tenant = app
                .retention
                .as_ref()
                .and_then(|r| r.tenants.get(app.tenant_selected));
            if let Some(t) = tenant {
                app.confirm = Some(PendingAction::PurgeTenant {
                    tenant: t.tenant.clone(),
                    due_now: t.due_now,
                });
            }
            None
        }
        Action::PurgeAll => {
            if let Some(retention) = &app.retention {
                app.confirm = Some(PendingAction::PurgeAll {
                    due_now: retention.tenants.iter().map(|t| t.due_now).sum(),
                });
            }
            None
        }
        Action::ScrollDown => scroll(app, LogStep::Down(1)),
        Action::ScrollUp => scroll(app, LogStep::Up(1)),
        Action::ScrollPageDown => scroll(app, LogStep::Down(LOG_PAGE)),
        Action::ScrollPageUp => scroll(app, LogStep::Up(LOG_PAGE)),
        Action::Oldest => scroll(app, LogStep::Oldest),
        Action::Follow => scroll(app, LogStep::Follow),
    };
    command.into_iter().collect()
}

fn confirm(app: &mut App) -> Option<Command> {
    let pending = app.confirm.take()?;
    app.status = Some(StatusLine {
        ok: true,
        text: format!(
            "{}: sent to vaultd, waiting for the answer",
            pending.title()
        ),
    });
    Some(pending.command())
}

fn cancel(app: &mut App) {
    if let Some(pending) = app.confirm.take() {
        app.status = Some(StatusLine {
            ok: true,
            text: format!("{}: cancelled", pending.title()),
        });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    Prev,
}

/// Moves the selection of the screen's list: the queue page, the schemes
/// or the tenants. Never past either end.
fn select(app: &mut App, step: Step) -> Option<Command> {
    match app.tab {
        Tab::Provisioning => match step {
            Step::Next => app.queue.select_next(),
            Step::Prev => app.queue.select_prev(),
        },
        Tab::Schemes => {
            let count = app.scheme_names().len();
            app.scheme_selected = moved(app.scheme_selected, count, step);
            None
        }
        Tab::Retention => {
            if let Some(retention) = &app.retention {
                app.tenant_selected = moved(app.tenant_selected, retention.tenants.len(), step);
            }
            None
        }
        Tab::Overview | Tab::Events | Tab::Audit => None,
    }
}

fn moved(selected: usize, count: usize, step: Step) -> usize {
    match step {
        Step::Next if selected + 1 < count => selected + 1,
        Step::Next => selected,
        Step::Prev => selected.saturating_sub(1),
    }
}

fn retry_job(app: &mut App) {
    match app.queue.selected_job() {
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
}

/// A move of a log tail.
#[derive(Clone, Copy)]
enum LogStep {
    Up(usize),
    Down(usize),
    Oldest,
    Follow,
}

impl LogStep {
    fn apply<T>(self, tail: &mut LogTail<T>) {
        match self {
            LogStep::Up(n) => tail.scroll_up(n),
            LogStep::Down(n) => tail.scroll_down(n),
            LogStep::Oldest => tail.to_oldest(),
            LogStep::Follow => tail.follow(),
        }
    }
}

/// Moves the tail of the log screen on view.
fn scroll(app: &mut App, step: LogStep) -> Option<Command> {
    match app.tab {
        Tab::Events => step.apply(&mut app.events),
        Tab::Audit => step.apply(&mut app.audit),
        _ => {}
    }
    None
}
