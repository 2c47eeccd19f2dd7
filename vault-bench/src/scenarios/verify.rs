//! The soak's last step, outside the measured time: alias_status for every
//! acknowledged tokenize and delete, over all connections, pipelined. A live
//! alias must answer with its card's last4; a deleted one `alias_not_found`.
//! alias_status is tenant-scoped (another tenant's alias is
//! `alias_not_found`), so an answer is also proof of the tenant.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vault_proto::client::ClientError;
use vault_proto::ops::{AliasArgs, AliasStatus};
use vault_proto::{Client, ErrorCode};

use super::ledger::{Entry, State};
use crate::load::{self, Failure, Stop};
use crate::pans::PanGen;
use crate::soak::Verification;

/// Attempts per alias when the daemon answers with a retryable error.
const ATTEMPTS: u32 = 5;

/// What one check found: `Some((alias, last4))` of the answer, or `None`
/// for `alias_not_found`.
fn judge(state: State, alias: &str, last4: &str, answer: Option<(&str, &str)>) -> &'static str {
    match (state, answer) {
        (State::Live, Some((a, l))) if a == alias && l == last4 => "verified",
        (State::Live, Some(_)) => "wrong_last4",
        (State::Live, None) => "missing",
        (State::Deleted, None) => "deleted_gone",
        (State::Deleted, Some(_)) => "deleted_present",
        (State::Deleting | State::Uncertain, _) => "uncertain",
    }
}

async fn status(client: &Client, alias: String) -> Result<Option<(String, String)>, ClientError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client
            .op::<AliasStatus>(&AliasArgs {
                alias: alias.clone(),
            })
            .await
        {
            Ok(r) => return Ok(Some((r.alias, r.card.last4))),
            Err(e) if e.code() == Some(ErrorCode::AliasNotFound) => return Ok(None),
            Err(e) if e.code().is_some_and(|c| c.retryable()) && attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Checks every entry; returns the counts and the seconds it took.
pub(super) async fn verify(
    clients: &[Arc<Client>],
    depth: usize,
    pans: Arc<PanGen>,
    entries: Vec<Entry>,
    states: Vec<State>,
    malformed: u64,
) -> (Verification, f64) {
    let n = entries.len() as u64;
    eprintln!("vault-bench: verifying {n} acknowledged aliases");
    let t0 = Instant::now();
    let entries = Arc::new(entries);
    let states = Arc::new(states);
    let run = load::run(clients, depth, Stop::Count(n), None, move |client, seq| {
        let i = seq as usize;
        let entry = entries[i];
        let state = states[i];
        let pans = Arc::clone(&pans);
        async move {
            let alias = entry.alias();
            let card = pans.visa(entry.card);
            let answer = status(&client, alias.clone())
                .await
                .map_err(|e| Failure::in_op("alias_status", e))?;
            let got = answer.as_ref().map(|(a, l)| (a.as_str(), l.as_str()));
            Ok(judge(state, &alias, card.last4(), got))
        }
    })
    .await;
    let count = |k: &str| run.outcomes.get(k).copied().unwrap_or(0);
    let mut v = Verification {
        acknowledged: n,
        verified: count("verified"),
        missing: count("missing"),
        wrong_last4: count("wrong_last4"),
        deleted_gone: count("deleted_gone"),
        deleted_present: count("deleted_present"),
        uncertain: count("uncertain"),
        malformed,
        unchecked: 0,
    };
    let checked =
        v.verified + v.missing + v.wrong_last4 + v.deleted_gone + v.deleted_present + v.uncertain;
    v.unchecked = n.saturating_sub(checked);
    if !run.errors.is_empty() {
        eprintln!("vault-bench: verification errors: {:?}", run.errors);
    }
    (v, t0.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";
    const B: &str = "bbcdefghijklmnopqrstuvwxyzABCDEF";

    #[test]
    fn live_aliases_need_their_own_card() {
        assert_eq!(judge(State::Live, A, "1234", Some((A, "1234"))), "verified");
        assert_eq!(
            judge(State::Live, A, "1234", Some((A, "9999"))),
            "wrong_last4"
        );
        assert_eq!(
            judge(State::Live, A, "1234", Some((B, "1234"))),
            "wrong_last4",
            "another alias's record is not this alias"
        );
        assert_eq!(judge(State::Live, A, "1234", None), "missing");
    }

    #[test]
    fn deleted_aliases_must_be_gone_and_uncertain_ones_may_be_either() {
        assert_eq!(judge(State::Deleted, A, "1234", None), "deleted_gone");
        assert_eq!(
            judge(State::Deleted, A, "1234", Some((A, "1234"))),
            "deleted_present"
        );
        assert_eq!(judge(State::Uncertain, A, "1234", None), "uncertain");
        assert_eq!(
            judge(State::Uncertain, A, "1234", Some((A, "1234"))),
            "uncertain"
        );
    }
}
