//! The soak: 20% tokenize (new cards), 60% alias_status, 20% credentials
//! for `--duration`, with a progress line (throughput, daemon RSS) every
//! `--report-every`. Errors are counted per op (`credentials:forbidden`).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use vault_proto::ops::{AliasArgs, AliasStatus, Tokenize};

use super::network::credentials_call;
use super::{Bench, tokenize_args};
use crate::load::{Failure, Stop};
use crate::report::ScenarioReport;

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

impl Bench {
    pub(super) async fn mixed(&mut self) {
        if let Err(why) = self.ensure_set().await {
            self.reports.push(ScenarioReport::skipped("mixed", why));
            return;
        }
        let Some(set) = &self.set else { return };
        let status_aliases = Arc::clone(&set.aliases);
        // Credentials go to provisioned aliases when there are any; else to
        // the status set (their answers then say why there is no token).
        let cred_aliases = self
            .credential_aliases()
            .unwrap_or_else(|| Arc::clone(&status_aliases));
        let pans = Arc::clone(&self.pans);
        let next = Arc::clone(&self.next_card);
        let tenant = self.cfg.tenant.clone();
        let stop = Stop::For {
            warmup: std::time::Duration::ZERO,
            measure: self.cfg.duration,
        };
        let progress = self.progress("mixed");
        let mut report = self
            .measured("mixed", stop, Some(progress), move |client, seq| {
                let pick = |v: &Arc<Vec<String>>| v[(seq / 10 % v.len() as u64) as usize].clone();
                let kind = seq % 10;
                let pan = (kind < 2).then(|| pans.visa(next.fetch_add(1, Relaxed)));
                let status_alias = pick(&status_aliases);
                let cred_alias = pick(&cred_aliases);
                let tenant = tenant.clone();
                async move {
                    match pan {
                        Some(pan) => match client.op::<Tokenize>(&tokenize_args(pan)).await {
                            Ok(r) if r.created => Ok("tokenize:created"),
                            Ok(_) => Ok("tokenize:existing"),
                            Err(e) => Err(Failure::in_op("tokenize", e)),
                        },
                        None if kind < 8 => client
                            .op::<AliasStatus>(&AliasArgs {
                                alias: status_alias,
                            })
                            .await
                            .map(|_| "alias_status:ok")
                            .map_err(|e| Failure::in_op("alias_status", e)),
                        None => credentials_call(client, cred_alias, tenant)
                            .await
                            .map(in_credentials)
                            .map_err(|e| Failure::in_op("credentials", e)),
                    }
                }
            })
            .await;
        report
            .notes
            .push("mix: 20% tokenize (new cards), 60% alias_status, 20% credentials".to_owned());
        self.reports.push(report);
    }
}
