//! The Provisioning tab's window on the queue: one server page at a time,
//! walked with the server's `next` cursors, never the whole queue.

use vault_proto::ops::{JobState, JobView, QueueList};

use crate::message::{Command, QueueQuery};

/// State filters in the order `f` cycles through them.
const STATE_FILTERS: [Option<JobState>; 5] = [
    None,
    Some(JobState::Due),
    Some(JobState::Scheduled),
    Some(JobState::InFlight),
    Some(JobState::Failed),
];

#[derive(Debug, Clone, Default)]
pub struct QueueView {
    pub state_filter: Option<JobState>,
    /// Applied to the page on screen: `queue_list` has no scheme argument.
    pub scheme_filter: Option<String>,
    /// The `after` cursor of every page walked through; the last one is the
    /// page on screen. Going back pops, so no page is ever re-walked.
    cursors: Vec<Option<String>>,
    pub page: Option<QueueList>,
    /// A page was asked for and has not arrived yet.
    pub loading: bool,
    /// Index into [`QueueView::visible`].
    pub selected: usize,
}

impl QueueView {
    pub fn query(&self) -> QueueQuery {
        QueueQuery {
            state: self.state_filter,
            after: self.cursors.last().cloned().flatten(),
        }
    }

    /// 1-based number of the page on screen.
    pub fn page_number(&self) -> usize {
        self.cursors.len().max(1)
    }

    /// The jobs of the page that pass the scheme filter.
    pub fn visible(&self) -> Vec<&JobView> {
        let Some(page) = &self.page else {
            return Vec::new();
        };
        page.jobs
            .iter()
            .filter(|j| self.scheme_filter.as_ref().is_none_or(|s| &j.scheme == s))
            .collect()
    }

    pub fn selected_job(&self) -> Option<&JobView> {
        self.visible().get(self.selected).copied()
    }

    pub fn has_next(&self) -> bool {
        self.page.as_ref().is_some_and(|p| p.next.is_some())
    }

    /// Takes a page from the daemon; stale pages (for a query the user has
    /// since left) are dropped. Returns whether it was taken.
    pub fn apply_page(&mut self, query: &QueueQuery, list: QueueList) -> bool {
        if *query != self.query() {
            return false;
        }
        self.page = Some(list);
        self.loading = false;
        self.clamp();
        true
    }

    pub fn select_next(&mut self) -> Option<Command> {
        if self.selected + 1 < self.visible().len() {
            self.selected += 1;
            None
        } else {
            self.next_page()
        }
    }

    pub fn select_prev(&mut self) -> Option<Command> {
        if self.selected > 0 {
            self.selected -= 1;
            None
        } else if self.cursors.len() > 1 {
            let cmd = self.prev_page();
            self.selected = usize::MAX; // the bottom of the previous page
            cmd
        } else {
            None
        }
    }

    pub fn next_page(&mut self) -> Option<Command> {
        let next = self.page.as_ref()?.next.clone()?;
        if self.cursors.is_empty() {
            self.cursors.push(None);
        }
        self.cursors.push(Some(next));
        self.selected = 0;
        Some(self.request())
    }

    pub fn prev_page(&mut self) -> Option<Command> {
        if self.cursors.len() <= 1 {
            return None;
        }
        self.cursors.pop();
        self.selected = 0;
        Some(self.request())
    }

    /// Back to the first page.
    pub fn first_page(&mut self) -> Option<Command> {
        if self.cursors.len() <= 1 {
            self.selected = 0;
            return None;
        }
        self.cursors.clear();
        self.selected = 0;
        Some(self.request())
    }

    pub fn cycle_state_filter(&mut self) -> Command {
        let at = STATE_FILTERS
            .iter()
            .position(|s| *s == self.state_filter)
            .unwrap_or(0);
        self.state_filter = STATE_FILTERS[(at + 1) % STATE_FILTERS.len()];
        self.cursors.clear();
        self.selected = 0;
        self.request()
    }

    /// Cycles all → each known scheme → all. Client-side only.
    pub fn cycle_scheme_filter(&mut self, schemes: &[String]) {
        self.scheme_filter = match &self.scheme_filter {
            None => schemes.first().cloned(),
            Some(current) => schemes
                .iter()
                .position(|s| s == current)
                .and_then(|i| schemes.get(i + 1))
                .cloned(),
        };
        self.selected = 0;
    }

    fn request(&mut self) -> Command {
        self.loading = true;
        Command::ShowQueue(self.query())
    }

    fn clamp(&mut self) {
        let n = self.visible().len();
        self.selected = self.selected.min(n.saturating_sub(1));
    }
}
