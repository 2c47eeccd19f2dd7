//! The soak: 10% tokenize (new cards), 10% delete_alias of the oldest
//! soak-created aliases (only above `--soak-window` live ones; otherwise an
//! alias_status), 60% alias_status, 20% credentials, for `--warmup` (not
//! recorded) plus `--duration`, with a progress line every `--report-every`.
//! Afterwards every acknowledged tokenize and delete is verified and the
//! daemon's RSS after the warm-up is judged; either can fail the run.
//! `--churn-per-sec` paces new cards (a paced-out slot does an
//! alias_status), and so the deletes that keep the population bounded.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use vault_proto::ErrorCode;
use vault_proto::client::ClientError;
use vault_proto::ops::{AliasArgs, AliasStatus, DeleteAlias, Tokenize};

use super::ledger::{DeleteOutcome, Ledger};
use super::network::credentials_call;
use super::{Bench, tokenize_args, verify};
use crate::load::{Failure, OpCounters, Stop};
use crate::report::ScenarioReport;
use crate::soak::{RssVerdict, SoakReport};

/// Op kinds of the progress lines' per-op rates, in [`OpCounters`] order.
const OPS: [&str; 4] = ["tokenize", "delete", "status", "credentials"];
const TOKENIZE: usize = 0;
const DELETE: usize = 1;
const STATUS: usize = 2;
const CREDENTIALS: usize = 3;

/// A credentials answer's label, prefixed with the op.
fn in_credentials(kind: &'static str) -> &'static str {
    match kind {
        "network_token" => "credentials:network_token",
        "network_token_without_cryptogram" => "credentials:network_token_without_cryptogram",
        "pan:receiver_pan_only" => "credentials:pan:receiver_pan_only",
        "pan:no_token" => "credentials:pan:no_token",
        "pan:token_not_active" => "credentials:pan:token_not_active",
        _ => "credentials:other",
    }
}

/// What a delete_alias answer means for the ledger.
fn delete_outcome(answer: &Result<bool, ClientError>) -> DeleteOutcome {
    match answer {
        Ok(true) => DeleteOutcome::Deleted,
        Ok(false) => DeleteOutcome::Unknown,
        Err(e) => match e.code() {
            Some(ErrorCode::AliasNotFound) => DeleteOutcome::NotFound,
            // A bug on the daemon's side: what it did is unknown.
            Some(ErrorCode::Internal) => DeleteOutcome::Unknown,
            // Every other refusal wrote nothing (PROTOCOL.md).
            Some(_) => DeleteOutcome::Refused,
            // The connection broke with the request in flight.
            None => DeleteOutcome::Unknown,
        },
    }
}

/// Grants at most `rate` events per second since its start (0: always).
struct Pacer {
    rate: f64,
    start: std::time::Instant,
    granted: std::sync::atomic::AtomicU64,
}

impl Pacer {
    fn new(rate: f64) -> Self {
        Pacer {
            rate,
            start: std::time::Instant::now(),
            granted: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn try_take(&self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let allowed = (self.start.elapsed().as_secs_f64() * self.rate) as u64;
        self.granted
            .fetch_update(Relaxed, Relaxed, |g| (g < allowed).then_some(g + 1))
            .is_ok()
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // Nothing panics while holding the lock; a poisoned ledger is still
    // the best record there is.
    ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Bench {
    pub(super) async fn mixed(&mut self) {
        if let Err(why) = self.ensure_set().await {
            self.reports.push(ScenarioReport::skipped("mixed", why));
            return;
        }
        // With network tokens, credentials go to the provisioned aliases
        // (mostly active tokens); else to the status set, whose answers
        // then say why there is no token.
        let provisioning = self.ensure_provisioned().await;
        let Some(set) = &self.set else { return };
        let status_aliases = Arc::clone(&set.aliases);
        let cred_aliases = self
            .credential_aliases()
            .unwrap_or_else(|| Arc::clone(&status_aliases));
        let pans = Arc::clone(&self.pans);
        let next = Arc::clone(&self.next_card);
        let tenant = self.cfg.tenant.clone();
        let window = self.cfg.soak_window;
        let churn = self.cfg.churn_per_sec;
        let pacer = Arc::new(Pacer::new(churn));
        let ledger = Arc::new(Mutex::new(Ledger::new(window)));
        let counters = Arc::new(OpCounters::new(&OPS));
        let stop = Stop::For {
            warmup: self.cfg.soak_warmup,
            measure: self.cfg.duration,
        };
        let mut progress = self.progress("mixed");
        progress.ops = Some(Arc::clone(&counters));
        let live = Arc::clone(&ledger);
        progress.extra = Some(Arc::new(move || format!("live={}", lock(&live).live())));
        let l = Arc::clone(&ledger);
        let (mut report, run) = self
            .measured_run("mixed", stop, Some(progress), move |client, seq| {
                let pick = |v: &Arc<Vec<String>>| v[(seq / 10 % v.len() as u64) as usize].clone();
                let kind = seq % 10;
                // A paced-out tokenize slot does an alias_status instead.
                let card = (kind == 0 && pacer.try_take()).then(|| next.fetch_add(1, Relaxed));
                let delete = if kind == 1 {
                    lock(&l).claim_delete()
                } else {
                    None
                };
                let status_alias = pick(&status_aliases);
                let cred_alias = pick(&cred_aliases);
                let tenant = tenant.clone();
                let pan = card.map(|c| pans.visa(c));
                let ledger = Arc::clone(&l);
                let counters = Arc::clone(&counters);
                async move {
                    if let (Some(card), Some(pan)) = (card, pan) {
                        let r = client
                            .op::<Tokenize>(&tokenize_args(pan))
                            .await
                            .map_err(|e| Failure::in_op("tokenize", e))?;
                        lock(&ledger).acknowledged(&r.record.alias, card);
                        counters.bump(TOKENIZE);
                        return Ok(if r.created {
                            "tokenize:created"
                        } else {
                            "tokenize:existing"
                        });
                    }
                    if let Some((id, alias)) = delete {
                        let answer = client
                            .op::<DeleteAlias>(&AliasArgs { alias })
                            .await
                            .map(|r| r.deleted);
                        lock(&ledger).delete_done(id, delete_outcome(&answer));
                        return match answer {
                            Ok(true) => {
                                counters.bump(DELETE);
                                Ok("delete_alias:deleted")
                            }
                            Ok(false) => Ok("delete_alias:not_deleted"),
                            Err(e) => Err(Failure::in_op("delete_alias", e)),
                        };
                    }
                    if kind < 8 {
                        client
                            .op::<AliasStatus>(&AliasArgs {
                                alias: status_alias,
                            })
                            .await
                            .map_err(|e| Failure::in_op("alias_status", e))?;
                        counters.bump(STATUS);
                        return Ok("alias_status:ok");
                    }
                    let kind = credentials_call(client, cred_alias, tenant)
                        .await
                        .map_err(|e| Failure::in_op("credentials", e))?;
                    counters.bump(CREDENTIALS);
                    Ok(in_credentials(kind))
                }
            })
            .await;

        let ledger = std::mem::replace(&mut *lock(&ledger), Ledger::new(0));
        let live_at_end = ledger.live() as u64;
        let (entries, states, malformed) = ledger.finish();
        let (verification, verification_secs) = verify::verify(
            &self.clients,
            self.cfg.depth,
            Arc::clone(&self.pans),
            entries,
            states,
            malformed,
        )
        .await;
        let rss = RssVerdict::judge(&run.rss_samples, run.warmup_secs, self.cfg.rss_tolerance);

        report.notes.push(format!(
            "mix: 10% tokenize (new cards), 10% delete_alias of the oldest soak-created alias \
             once more than {window} are live (else alias_status), 60% alias_status, \
             20% credentials; {:.0} s warm-up before the measured time",
            run.warmup_secs
        ));
        if churn > 0.0 {
            report
                .notes
                .push(format!("new cards paced to at most {churn} per second"));
        }
        report.notes.push(match &provisioning {
            Ok(()) => "credentials go to the provisioned aliases".to_owned(),
            Err(why) => format!("credentials go to the status set ({why})"),
        });
        report.failures.extend(verification.problems());
        match &rss {
            Some(v) if !v.within => report.failures.push(format!(
                "RSS deviated {:.1}% from its warm-up value (tolerance ±{:.0}%)",
                v.max_deviation_pct, v.tolerance_pct
            )),
            Some(_) => {}
            None => report.failures.push(
                "no RSS verdict: the daemon's pid is unknown or no sample followed the warm-up"
                    .to_owned(),
            ),
        }
        if !run.lost_connections.is_empty() {
            report.failures.push(format!(
                "{} load connection(s) broke during the soak",
                run.lost_connections.len()
            ));
        }
        report.soak = Some(SoakReport {
            window,
            live_at_end,
            verification,
            verification_secs,
            rss,
            rss_samples: run.rss_samples.iter().map(|s| (s.secs, s.rss_kb)).collect(),
        });
        self.reports.push(report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_proto::WireError;

    fn refused(code: ErrorCode) -> Result<bool, ClientError> {
        Err(ClientError::Server(WireError::new(code, "refused")))
    }

    #[test]
    fn delete_answers_map_to_what_the_vault_should_hold() {
        assert_eq!(delete_outcome(&Ok(true)), DeleteOutcome::Deleted);
        assert_eq!(
            delete_outcome(&refused(ErrorCode::AliasNotFound)),
            DeleteOutcome::NotFound
        );
        assert_eq!(
            delete_outcome(&refused(ErrorCode::Overloaded)),
            DeleteOutcome::Refused
        );
        assert_eq!(
            delete_outcome(&refused(ErrorCode::Internal)),
            DeleteOutcome::Unknown
        );
        let broken = Err(ClientError::Io(std::io::Error::other("reset")));
        assert_eq!(delete_outcome(&broken), DeleteOutcome::Unknown);
    }
}

#[cfg(test)]
mod pacer_tests {
    use super::Pacer;

    #[test]
    fn the_pacer_grants_its_rate_and_no_more() {
        let p = Pacer::new(1000.0);
        // Some time for grants to accrue (however long the sleep really
        // lasts on a loaded machine: the bounds below are read from the
        // pacer's own clock around the tries, not assumed).
        std::thread::sleep(std::time::Duration::from_millis(20));
        let before = p.start.elapsed();
        let granted = (0..1000).filter(|_| p.try_take()).count() as u64;
        let after = p.start.elapsed();
        let owed = |at: std::time::Duration| (at.as_secs_f64() * 1000.0) as u64;
        // Everything owed when the tries began, and nothing beyond what is
        // owed when they ended (1 ms of rate per grant).
        assert!(
            granted >= owed(before).min(1000) && granted <= owed(after),
            "{granted} granted; {} owed before the tries, {} after",
            owed(before),
            owed(after)
        );
        assert!(granted >= 20, "20 ms at 1000/s: at least 20 owed");
        assert!(Pacer::new(0.0).try_take(), "0 means unpaced");
    }
}
