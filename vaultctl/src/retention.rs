//! PAN retention: `retention` (per tenant) and `purge-due`.

use vault_proto::BlockingClient;
use vault_proto::ops::{self, NoArgs};

use crate::Failure;
use crate::output::{fmt_ms, print};

pub fn retention(c: &mut BlockingClient, json: bool) -> Result<(), Failure> {
    let r = c.op::<ops::RetentionOp>(&NoArgs {})?;
    print(json, &r, |r| {
        println!(
            "{:<16} {:<20} {:>9} {:>8} {:>8} {:>8} {:>8}  oldest retained",
            "tenant", "policy", "retained", "due now", "due 7d", "due 30d", "purged"
        );
        for t in &r.tenants {
            println!(
                "{:<16} {:<20} {:>9} {:>8} {:>8} {:>8} {:>8}  {}",
                t.tenant,
                t.policy,
                t.pans_retained,
                t.due_now,
                t.due_7d,
                t.due_30d,
                t.purged_total,
                t.oldest_retained_at
                    .map(fmt_ms)
                    .unwrap_or_else(|| "-".into())
            );
        }
        println!(
            "next purge at {}",
            r.next_purge_at.map(fmt_ms).unwrap_or_else(|| "-".into())
        );
    });
    Ok(())
}

pub fn purge_due(
    c: &mut BlockingClient,
    json: bool,
    tenant: Option<String>,
) -> Result<(), Failure> {
    let r = c.op::<ops::PurgeDue>(&ops::PurgeArgs { tenant })?;
    print(json, &r, |r| println!("purged {}", r.purged));
    Ok(())
}
