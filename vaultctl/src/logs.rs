//! The two logs: `audit` (with the chain verdict) and `events`.

use vault_proto::BlockingClient;
use vault_proto::ops::{self, NoArgs};

use crate::Failure;
use crate::output::{fmt_ms, print};

/// The audit trail after `after`, by default its newest `limit` records.
pub fn audit(
    c: &mut BlockingClient,
    json: bool,
    after: Option<u64>,
    limit: u32,
) -> Result<(), Failure> {
    // The newest records by default: the head from `stats`.
    let after = match after {
        Some(a) => Some(a),
        None => c
            .op::<ops::StatsOp>(&NoArgs {})?
            .logs
            // The daemon's page size: 0 is 100, at most 1000.
            .map(|l| {
                let n = if limit == 0 { 100 } else { limit.min(1000) };
                l.audit_seq.saturating_sub(u64::from(n))
            }),
    };
    let a = c.op::<ops::AuditOp>(&ops::PageArgs { after, limit })?;
    print(json, &a, |a| {
        for r in &a.records {
            println!(
                "{:>8} {} {:<20} uid {:<6} pid {:<7} {:<16} {:<32} {}",
                r.seq,
                r.at,
                r.client,
                r.uid,
                r.pid,
                r.op,
                r.alias.as_deref().unwrap_or("-"),
                r.outcome
            );
        }
        println!("chain {}", if a.chain_ok { "OK" } else { "BROKEN" });
    });
    Ok(())
}

pub fn events(
    c: &mut BlockingClient,
    json: bool,
    after: Option<u64>,
    limit: u32,
) -> Result<(), Failure> {
    let e = c.op::<ops::EventsOp>(&ops::PageArgs { after, limit })?;
    print(json, &e, |e| {
        for ev in &e.events {
            println!(
                "{:>8} {} {:<10} {:<24} {:<32} {}",
                ev.seq,
                fmt_ms(ev.at),
                ev.scheme.as_deref().unwrap_or("-"),
                ev.kind,
                ev.alias.as_deref().unwrap_or("-"),
                ev.detail
            );
        }
    });
    Ok(())
}
