//! A bounded live tail of a log (events or audit), newest at the bottom.

use std::collections::VecDeque;

/// Entries kept per log; older ones scroll out.
pub const TAIL_CAPACITY: usize = 1000;

#[derive(Debug, Clone)]
pub struct LogTail<T> {
    entries: VecDeque<T>,
    /// Rows scrolled up from the newest entry; 0 follows the tail.
    pub scroll: usize,
}

impl<T> Default for LogTail<T> {
    fn default() -> Self {
        LogTail {
            entries: VecDeque::new(),
            scroll: 0,
        }
    }
}

impl<T> LogTail<T> {
    pub fn extend(&mut self, new: impl IntoIterator<Item = T>) {
        let before = self.entries.len();
        self.entries.extend(new);
        let added = self.entries.len() - before;
        // Keep the rows the reader is looking at in place while new ones arrive.
        if self.scroll > 0 {
            self.scroll += added;
        }
        while self.entries.len() > TAIL_CAPACITY {
            self.entries.pop_front();
        }
        self.scroll = self.scroll.min(self.entries.len().saturating_sub(1));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// At most `rows` entries ending `scroll` rows before the newest, oldest first.
    pub fn window(&self, rows: usize) -> impl Iterator<Item = &T> {
        let end = self.entries.len().saturating_sub(self.scroll);
        let start = end.saturating_sub(rows);
        self.entries.range(start..end)
    }

    pub fn scroll_up(&mut self, by: usize) {
        self.scroll = (self.scroll + by).min(self.entries.len().saturating_sub(1));
    }

    pub fn scroll_down(&mut self, by: usize) {
        self.scroll = self.scroll.saturating_sub(by);
    }

    pub fn follow(&mut self) {
        self.scroll = 0;
    }

    pub fn to_oldest(&mut self) {
        self.scroll = self.entries.len().saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_follows_the_tail_and_holds_still_when_scrolled() {
        let mut tail = LogTail::default();
        tail.extend(1..=10);
        assert_eq!(tail.window(3).copied().collect::<Vec<_>>(), [8, 9, 10]);
        tail.scroll_up(2);
        assert_eq!(tail.window(3).copied().collect::<Vec<_>>(), [6, 7, 8]);
        tail.extend(11..=12);
        assert_eq!(tail.window(3).copied().collect::<Vec<_>>(), [6, 7, 8]);
        tail.follow();
        assert_eq!(tail.window(3).copied().collect::<Vec<_>>(), [10, 11, 12]);
    }

    #[test]
    fn capacity_is_bounded() {
        let mut tail = LogTail::default();
        tail.extend(0..(TAIL_CAPACITY as u64 + 50));
        assert_eq!(tail.len(), TAIL_CAPACITY);
        assert_eq!(tail.window(1).next(), Some(&(TAIL_CAPACITY as u64 + 49)));
    }
}
