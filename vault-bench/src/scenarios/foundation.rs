//! The foundation scenarios of issue 2: tokenize with new PANs, tokenize
//! with repeat PANs, alias_status; and `--fill`, which grows the vault to N
//! aliases and reports the daemon's memory.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use vault_proto::Pan;
use vault_proto::ops::{AliasArgs, AliasStatus, Tokenize};

use super::{AliasSlots, Bench, CardSet, tokenize_args, tokenize_into};
use crate::load::{self, Failure, Stop};
use crate::report::ScenarioReport;

pub(super) fn created(c: bool) -> &'static str {
    if c { "created" } else { "existing" }
}

impl Bench {
    pub(super) async fn tokenize_new(&mut self) {
        let pans = Arc::clone(&self.pans);
        let next = Arc::clone(&self.next_card);
        let mut report = self
            .measured("tokenize-new", self.timed(), None, move |client, _| {
                let pan = pans.visa(next.fetch_add(1, Relaxed));
                async move {
                    match client.op::<Tokenize>(&tokenize_args(pan)).await {
                        Ok(r) => Ok(created(r.created)),
                        Err(e) => Err(Failure::of(e)),
                    }
                }
            })
            .await;
        if let Some(n) = report.outcomes.get("existing") {
            report.notes.push(format!(
                "{n} 'new' cards were already in the vault (an earlier run with the same run tag)"
            ));
        }
        self.reports.push(report);
    }

    /// Tokenizes `set_size` new cards once (unrecorded) and keeps the cards
    /// and their aliases for the repeat and status scenarios.
    pub(super) async fn ensure_set(&mut self) -> Result<(), String> {
        if self.set.is_some() {
            return Ok(());
        }
        let n = self.cfg.set_size.max(1);
        eprintln!("vault-bench: tokenizing {n} cards for the repeat/status sets");
        let start = self.next_card.fetch_add(n as u64, Relaxed);
        let pans: Arc<Vec<Pan>> =
            Arc::new((0..n as u64).map(|i| self.pans.visa(start + i)).collect());
        let slots: AliasSlots = Arc::new(Mutex::new(vec![None; n]));
        let (p, s) = (Arc::clone(&pans), Arc::clone(&slots));
        let run = load::run(
            &self.clients,
            self.cfg.depth,
            Stop::Count(n as u64),
            None,
            move |client, seq| {
                let i = seq as usize;
                tokenize_into(client, p[i].clone(), Arc::clone(&s), i)
            },
        )
        .await;
        let slots = slots
            .lock()
            .map_err(|_| "alias set poisoned".to_owned())?
            .clone();
        // Keep card i and alias i paired: drop the cards whose tokenize failed.
        let (kept_pans, aliases): (Vec<Pan>, Vec<String>) = pans
            .iter()
            .zip(slots)
            .filter_map(|(p, a)| a.map(|a| (p.clone(), a)))
            .unzip();
        if aliases.is_empty() {
            let why = run
                .errors
                .keys()
                .next()
                .cloned()
                .unwrap_or_else(|| "no answer".to_owned());
            return Err(format!("could not tokenize the card set ({why})"));
        }
        self.set = Some(CardSet {
            pans: Arc::new(kept_pans),
            aliases: Arc::new(aliases),
        });
        Ok(())
    }

    pub(super) async fn tokenize_repeat(&mut self) {
        if let Err(why) = self.ensure_set().await {
            self.reports
                .push(ScenarioReport::skipped("tokenize-repeat", why));
            return;
        }
        let Some(set) = &self.set else { return };
        let pans = Arc::clone(&set.pans);
        let report = self
            .measured("tokenize-repeat", self.timed(), None, move |client, seq| {
                let pan = pans[(seq % pans.len() as u64) as usize].clone();
                async move {
                    match client.op::<Tokenize>(&tokenize_args(pan)).await {
                        Ok(r) => Ok(created(r.created)),
                        Err(e) => Err(Failure::of(e)),
                    }
                }
            })
            .await;
        self.reports.push(report);
    }

    pub(super) async fn alias_status(&mut self) {
        if let Err(why) = self.ensure_set().await {
            self.reports
                .push(ScenarioReport::skipped("alias-status", why));
            return;
        }
        let Some(set) = &self.set else { return };
        let aliases = Arc::clone(&set.aliases);
        let report = self
            .measured("alias-status", self.timed(), None, move |client, seq| {
                let alias = aliases[(seq % aliases.len() as u64) as usize].clone();
                async move {
                    match client.op::<AliasStatus>(&AliasArgs { alias }).await {
                        Ok(r) => Ok(r.token_info.map_or("ok", |t| t.status.as_str())),
                        Err(e) => Err(Failure::of(e)),
                    }
                }
            })
            .await;
        self.reports.push(report);
    }

    /// `--fill N`: N new cards as fast as the vault takes them.
    pub async fn fill(&mut self, n: u64) {
        let pans = Arc::clone(&self.pans);
        let next = Arc::clone(&self.next_card);
        let progress = self.progress("fill");
        let mut report = self
            .measured("fill", Stop::Count(n), Some(progress), move |client, _| {
                let pan = pans.visa(next.fetch_add(1, Relaxed));
                async move {
                    match client.op::<Tokenize>(&tokenize_args(pan)).await {
                        Ok(r) => Ok(created(r.created)),
                        Err(e) => Err(Failure::of(e)),
                    }
                }
            })
            .await;
        if let Some(rss) = &report.daemon_rss {
            report.notes.push(format!(
                "after {} new aliases: {} (issue 2 target: RSS < 100 MB after 1,000,000)",
                crate::report::thousands(report.outcomes.get("created").copied().unwrap_or(0)),
                rss.describe()
            ));
        }
        self.reports.push(report);
    }
}
