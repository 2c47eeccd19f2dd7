//! The daemon itself: `health` and `stats`.

use vault_proto::BlockingClient;
use vault_proto::ops::{self, NoArgs};

use crate::Failure;
use crate::output::print;

pub fn health(c: &mut BlockingClient, json: bool) -> Result<(), Failure> {
    let h = c.op::<ops::HealthOp>(&NoArgs {})?;
    print(json, &h, |h| {
        println!("ready   {}", h.ready);
        println!("version {}", h.version);
        println!("hsm     {}", h.hsm);
        println!("store   {}", h.store);
        println!("uptime  {} s", h.uptime_ms / 1000);
    });
    if h.ready {
        Ok(())
    } else {
        Err(Failure::NotReady)
    }
}

/// Counts of aliases, tokens, queue, schemes, keys and HSM upkeep.
pub fn stats(c: &mut BlockingClient, json: bool) -> Result<(), Failure> {
    let s = c.op::<ops::StatsOp>(&NoArgs {})?;
    print(json, &s, show_stats);
    Ok(())
}

fn show_stats(s: &ops::Stats) {
    println!("aliases        {}", s.aliases);
    println!("pans_retained  {}", s.pans_retained);
    for (k, v) in &s.tokens {
        println!("tokens.{k:<12} {v}");
    }
    println!(
        "queue          due {} scheduled {} in_flight {} failed {}",
        s.queue.due, s.queue.scheduled, s.queue.in_flight, s.queue.failed
    );
    for (name, sc) in &s.schemes {
        println!(
            "scheme {name:<11} provisioned {} not_eligible {} errors {} p50 {} ms p99 {} ms{}",
            sc.provisioned,
            sc.not_eligible,
            sc.errors,
            sc.p50_ms,
            sc.p99_ms,
            if sc.paused { " PAUSED" } else { "" }
        );
    }
    if let Some(k) = &s.keys {
        println!(
            "keys           pan v{} audit v{} reencrypt_remaining {} reencrypted {}",
            k.pan_key_version, k.audit_key_version, k.reencrypt_remaining, k.reencrypted
        );
        for u in &k.keks {
            let kek = if u.version == 0 {
                "legacy nt.* objects".to_owned()
            } else {
                format!("kek v{}", u.version)
            };
            println!("keys.{:<9} {kek} wraps {} token keys", u.scheme, u.tokens);
        }
    }
    if let Some(h) = &s.hsm {
        println!(
            "hsm            session_objects {} of {} reinitializations {} \
             (standby_switches {}) last_pause {} ms key_copies_made {} \
             background queued {} done {} token_keys cached {} unwrapped {}",
            h.session_objects,
            h.reinit_after_objects,
            h.reinitializations,
            h.standby_switches,
            h.last_reinit_pause_ms,
            h.key_copies_made,
            h.background_queued,
            h.background_done,
            h.token_keys_cached,
            h.token_key_unwraps
        );
    }
    println!("uptime         {} s", s.uptime_ms / 1000);
}
