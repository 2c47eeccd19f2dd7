//! Account lifecycle and PAN retention end to end: scheme-sim's
//! notification feed drives suspend/resume/delete/re-digitize/expiry
//! changes into real vaultd processes; retention erases PANs for good.

use std::time::{Duration, Instant};

use serde_json::json;
use vault_e2e::{
    CEILING, MASTERCARD, TokenEnv, TokenOpts, VISA, assert_took, ceiling_for, pan, tokenize,
    wait_for,
};
use vault_proto::BlockingClient;
use vault_proto::ops::{self, AliasRecord, EventView, NoArgs, TokenStatus};

const LONG: Duration = CEILING;
/// `poll_interval` of [`TokenOpts::default`]: how often the vault reads
/// the schemes' notification feeds.
const POLL: Duration = Duration::from_secs(1);

fn status(c: &mut BlockingClient, alias: &str) -> AliasRecord {
    c.op::<ops::AliasStatus>(&ops::AliasArgs {
        alias: alias.into(),
    })
    .unwrap()
}

/// Every event of the vault's event log after `seq`, page by page.
fn events_after(c: &mut BlockingClient, seq: u64) -> Vec<EventView> {
    let mut all: Vec<EventView> = Vec::new();
    loop {
        let page = c
            .op::<ops::EventsOp>(&ops::PageArgs {
                after: Some(all.last().map_or(seq, |e| e.seq)),
                limit: 1000,
            })
            .unwrap()
            .events;
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The feed seq an applied lifecycle event names in its detail.
fn feed_seq(e: &EventView) -> u64 {
    e.detail
        .rsplit("feed seq ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .parse()
        .unwrap_or_else(|_| panic!("no feed seq in {e:?}"))
}

fn active_alias(t: &TokenEnv, c: &mut BlockingClient, p: &str) -> (String, String) {
    let r = tokenize(c, p, 12, 2030);
    let done = t.wait_status(c, &r.record.alias, LONG);
    let ti = done.token_info.unwrap();
    assert_eq!(ti.status, TokenStatus::Active);
    (r.record.alias, ti.token_ref.unwrap())
}

#[test]
fn every_lifecycle_event_shows_within_two_poll_intervals() {
    let t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let (alias, token_ref) = active_alias(&t, &mut c, VISA);
    let ev = |event: serde_json::Value| {
        t.sim
            .post(&format!("/sim/tokens/{token_ref}/events"), &event)
    };
    // Each event is waited for up to a ceiling that only ends a hung test;
    // how long it took to show is the property. On an idle machine it is
    // at most two poll intervals; the bound checked is ten times that, so
    // a loaded machine does not fail it, and a vault that never reads the
    // feed, or reads it only at a restart, still does.
    let mut took = Vec::new();
    let mut shows = |what: &str, check: &mut dyn FnMut() -> bool| {
        let t = wait_for(ceiling_for(POLL), what, check);
        assert_took(t, 2 * POLL * 10, what);
        took.push((what.to_owned(), t));
    };

    ev(json!({"event": "suspend"}));
    shows("a suspension", &mut || {
        status(&mut c, &alias).token_info.unwrap().status == TokenStatus::Suspended
    });
    ev(json!({"event": "resume"}));
    shows("a resumption", &mut || {
        status(&mut c, &alias).token_info.unwrap().status == TokenStatus::Active
    });

    let before = status(&mut c, &alias).token_info.unwrap();
    ev(json!({"event": "redigitize", "exp_month": 7, "exp_year": 2033, "new_token_number": true}));
    shows("a re-digitization", &mut || {
        let ti = status(&mut c, &alias).token_info.unwrap();
        ti.exp_year == Some(2033) && ti.exp_month == Some(7) && ti.token_last4 != before.token_last4
    });
    let sim = t.sim.get(&format!("/sim/tokens/{token_ref}"));
    let number = sim["token"].as_str().unwrap();
    assert_eq!(
        status(&mut c, &alias)
            .token_info
            .unwrap()
            .token_last4
            .as_deref(),
        Some(&number[number.len() - 4..])
    );

    ev(json!({"event": "pan_expiry", "exp_month": 3, "exp_year": 2034}));
    shows("a new card expiry", &mut || {
        let card = status(&mut c, &alias).card;
        (card.exp_month, card.exp_year) == (3, 2034)
    });

    ev(json!({"event": "delete"}));
    shows("a deletion", &mut || {
        status(&mut c, &alias).token_info.unwrap().status == TokenStatus::Deleted
    });
    eprintln!(
        "lifecycle events shown after {took:?} (poll interval {POLL:?}; {})",
        vault_e2e::machine_load()
    );
    // The deleted token's key is gone from the HSM (the deletion's job,
    // after the status).
    wait_for(CEILING, "the deleted token's key to leave the HSM", || {
        !t.env
            .vaultd_cmd(&["keys", "list"])
            .contains(&format!("nt.{token_ref} "))
    });
    // The alias can be provisioned again.
    let r = c
        .op::<ops::Provision>(&ops::AliasArgs {
            alias: alias.clone(),
        })
        .unwrap();
    assert_eq!(r.token_info.unwrap().status, TokenStatus::Pending);
    let again = t.wait_status(&mut c, &alias, LONG).token_info.unwrap();
    assert_eq!(again.status, TokenStatus::Active);
    assert_ne!(again.token_ref.as_deref(), Some(token_ref.as_str()));

    let events = c
        .op::<ops::EventsOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .unwrap();
    let kinds: Vec<&str> = events.events.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "token_suspended",
        "token_resumed",
        "token_redigitized",
        "card_expiry_updated",
        "token_deleted",
    ] {
        assert!(kinds.contains(&k), "no {k} event: {kinds:?}");
    }
    // No token number in events, logs or the database.
    for e in &events.events {
        assert!(!e.detail.contains(number));
    }
    t.env.assert_absent_everywhere(&[number, VISA]);
}

#[test]
fn restart_in_a_stream_of_a_thousand_events_applies_each_exactly_once_in_order() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let mut refs = Vec::new();
    for i in 0..10u64 {
        refs.push(active_alias(&t, &mut c, &pan("4000", 90_000 + i)).1);
    }
    // One more token, for the marker event after the stream.
    let (marker_alias, marker_ref) = active_alias(&t, &mut c, &pan("4000", 90_100));
    let after = c
        .op::<ops::EventsOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .unwrap();
    let start_seq = after.events.last().map(|e| e.seq).unwrap_or(0);
    // 1,000 events: each token alternates suspend/resume 100 times, in
    // three parts: 300 while the daemon runs (it is killed once it has
    // applied some of them), 300 while it is down, 400 after the restart.
    let (posted_tx, posted) = std::sync::mpsc::channel::<()>();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let poster = {
        let url = t.sim.url();
        let refs = refs.clone();
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            for i in 0..100 {
                if i == 30 || i == 60 {
                    posted_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                }
                for r in &refs {
                    let event = if i % 2 == 0 { "suspend" } else { "resume" };
                    agent
                        .post(&format!("{url}/sim/tokens/{r}/events"))
                        .send_json(json!({"event": event}))
                        .unwrap();
                }
                // Spread out, so the feed polls see it a part at a time.
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    posted.recv().unwrap();
    wait_for(
        ceiling_for(POLL),
        "the first events of the stream applied",
        || !events_after(&mut c, start_seq).is_empty(),
    );
    t.daemon().kill9();
    drop(c);
    go.send(()).unwrap();
    posted.recv().unwrap();
    t.restart();
    go.send(()).unwrap();
    poster.join().unwrap();
    let mut c = t.client();
    wait_for(ceiling_for(POLL), "1,000 events applied", || {
        events_after(&mut c, start_seq).len() >= 1000
    });
    // A marker after the stream: once the vault has applied it, it has
    // read past every event of the stream (the feed is in order), so a
    // duplicate could only be among those already counted.
    t.sim.post(
        &format!("/sim/tokens/{marker_ref}/events"),
        &json!({"event": "suspend"}),
    );
    wait_for(ceiling_for(POLL), "the marker event applied", || {
        status(&mut c, &marker_alias).token_info.unwrap().status == TokenStatus::Suspended
    });
    let events = events_after(&mut c, start_seq);
    assert_eq!(
        events.len(),
        1001,
        "exactly 1,000 new event records, and the marker's"
    );
    let (stream, marker) = events.split_at(1000);
    assert_eq!(marker[0].kind, "token_suspended");
    assert!(marker[0].detail.contains(&marker_ref), "{:?}", marker[0]);
    assert_eq!(feed_seq(&marker[0]), 1001);
    // Feed order, no duplicates: the feed seq in each detail is 1..=1000
    // in order (the feed counts from 1 per scheme; all are visa).
    let feed_seqs: Vec<u64> = stream
        .iter()
        .map(|e| {
            assert!(
                e.kind == "token_suspended" || e.kind == "token_resumed",
                "{e:?}"
            );
            feed_seq(e)
        })
        .collect();
    let expected: Vec<u64> = (1..=1000).collect();
    assert_eq!(feed_seqs, expected);
    // Every token ends resumed (100 events each, the last a resume).
    for r in &refs {
        assert_eq!(t.sim.get(&format!("/sim/tokens/{r}"))["status"], "active");
    }
}

/// The sealed PANs on disk: every non-empty 64-byte slot of the PAN slot
/// file beside the database (daemon stopped).
fn stored_ciphertexts(db: &std::path::Path) -> Vec<Vec<u8>> {
    let mut p = db.as_os_str().to_owned();
    p.push(".pans");
    let bytes = std::fs::read(std::path::PathBuf::from(p)).unwrap_or_default();
    bytes
        .chunks(64)
        .filter(|s| s[0] != 0)
        .map(|s| s[1..=usize::from(s[0])].to_vec())
        .collect()
}

fn on_disk(db: &std::path::Path, needle: &[u8]) -> bool {
    let mut p = db.as_os_str().to_owned();
    p.push(".pans");
    let slots = std::fs::read(std::path::PathBuf::from(p)).unwrap_or_default();
    let file = std::fs::read(db).unwrap();
    vault_e2e::contains(&file, needle) || vault_e2e::contains(&slots, needle)
}

#[test]
fn transition_retention_erases_pans_for_good_and_audits_it() {
    let opts = TokenOpts {
        tenants: "[[tenant]]\nid = \"t-a\"\nnetwork_tokens = true\npan_retention = { transition = \"2s\" }\n",
        ..TokenOpts::default()
    };
    let mut t = TokenEnv::start(opts);
    let mut c = t.client();
    t.sim.post(
        "/sim/issuers",
        &json!({"bin_prefix": "510000", "participating": false}),
    );
    // Pause provisioning so the PANs are on disk before any purge.
    for s in ["visa", "mastercard"] {
        c.op::<ops::SchemePause>(&ops::SchemeArgs { scheme: s.into() })
            .unwrap();
    }
    let a1 = tokenize(&mut c, VISA, 12, 2030).record.alias;
    let a2 = tokenize(&mut c, MASTERCARD, 12, 2030).record.alias;
    let a3 = tokenize(&mut c, &pan("510000", 3), 12, 2030).record.alias; // not eligible
    let a4 = tokenize(&mut c, &pan("4000", 4), 12, 2030).record.alias;
    drop(c);
    t.daemon().terminate();
    let ct = stored_ciphertexts(&t.env.db());
    assert_eq!(ct.len(), 4, "four sealed PANs on disk");
    t.restart();
    let mut c = t.client();
    for s in ["visa", "mastercard"] {
        c.op::<ops::SchemeResume>(&ops::SchemeArgs { scheme: s.into() })
            .unwrap();
    }
    // a4 goes by remove_pan as soon as it is active; a2 by delete_alias.
    let _ = t.wait_status(&mut c, &a4, LONG);
    let r = c.op::<ops::RemovePan>(&ops::AliasArgs { alias: a4.clone() });
    // It may have been purged already if 2 s passed: either way it is gone.
    if let Ok(r) = r {
        assert!(r.card.pan_removed);
    }
    c.op::<ops::DeleteAlias>(&ops::AliasArgs { alias: a2.clone() })
        .unwrap();

    let active_at = Instant::now();
    assert_eq!(
        t.wait_status(&mut c, &a1, LONG).token_info.unwrap().status,
        TokenStatus::Active
    );
    assert_eq!(
        t.wait_status(&mut c, &a3, LONG).token_info.unwrap().status,
        TokenStatus::NotEligible
    );
    // Due 2 s after a1's token went active, erased by the retention
    // scheduler's next check (every second): 3 s on an idle machine. The
    // wait's ceiling only ends a hung test; the bound is ten times 3 s.
    let took = wait_for(CEILING, "a1's PAN erased by transition retention", || {
        status(&mut c, &a1).card.pan_removed
    });
    assert_took(
        active_at.elapsed(),
        Duration::from_secs(30),
        format_args!(
            "erasing a PAN 2 s after its token went active ({took:?} after polling started)"
        ),
    );
    // The not-eligible alias keeps its PAN.
    assert!(!status(&mut c, &a3).card.pan_removed);
    // Only a PAN could pay for a1 now.
    let e = c
        .op::<ops::CredentialsOp>(&ops::CredentialsArgs {
            alias: a1.clone(),
            tenant: "t-a".into(),
            accept: vec![ops::CredentialKind::Pan],
            initiator: ops::Initiator::Customer,
            amount_minor: 100,
            currency: "CHF".into(),
            authenticated_eci: None,
        })
        .unwrap_err();
    assert_eq!(e.code(), Some(vault_proto::ErrorCode::NoUsableCredential));
    // The retention view agrees.
    let rv = c.op::<ops::RetentionOp>(&NoArgs {}).unwrap();
    let ta = rv.tenants.iter().find(|x| x.tenant == "t-a").unwrap();
    assert_eq!(ta.policy, "transition 2s");
    assert_eq!(ta.pans_retained, 1, "only the not-eligible card's PAN");
    assert_eq!(ta.due_now, 0);
    assert!(ta.purged_total >= 2, "{ta:?}");
    let stats = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
    assert_eq!(stats.pans_retained, 1);
    // purge_due has nothing left to do.
    assert_eq!(
        c.op::<ops::PurgeDue>(&ops::PurgeArgs { tenant: None })
            .unwrap()
            .purged,
        0
    );

    // Every erasure is on the audit trail, chain intact.
    let audit = c
        .op::<ops::AuditOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .unwrap();
    assert!(audit.chain_ok);
    let has = |alias: &str, what: &str| {
        audit
            .records
            .iter()
            .any(|r| r.alias.as_deref() == Some(alias) && r.outcome.contains(what))
    };
    assert!(has(&a1, "purged"));
    assert!(has(&a2, "deleted"));
    assert!(has(&a4, "pan removed") || has(&a4, "purged"));

    // Exactly one of the four ciphertexts is still anywhere on disk: the
    // not-eligible card's, whose PAN is kept.
    drop(c);
    t.daemon().terminate();
    let left = ct.iter().filter(|c| on_disk(&t.env.db(), c)).count();
    assert_eq!(
        left, 1,
        "erased PAN ciphertexts must be gone from the database and slot files"
    );
    assert_eq!(stored_ciphertexts(&t.env.db()).len(), 1);
}

#[test]
fn vaultctl_shows_retention_events_and_purges() {
    let opts = TokenOpts {
        tenants: "[[tenant]]\nid = \"t-a\"\nnetwork_tokens = true\npan_retention = { transition = \"90d\" }\n",
        ..TokenOpts::default()
    };
    let t = TokenEnv::start(opts);
    let mut c = t.client();
    let (alias, _) = active_alias(&t, &mut c, VISA);
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(vault_e2e::bin_dir().join("vaultctl"))
            .arg("--socket")
            .arg(t.env.socket())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vaultctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let r: serde_json::Value = serde_json::from_str(&ctl(&["--json", "retention"])).unwrap();
    let ta = &r["tenants"][0];
    assert_eq!(ta["tenant"], "t-a");
    assert_eq!(ta["policy"], "transition 90d");
    assert_eq!(ta["pans_retained"], 1);
    assert_eq!(ta["due_now"], 0);
    assert_eq!(ta["due_30d"], 0, "falls due in 90 days");
    assert!(r["next_purge_at"].as_u64().unwrap() > 80 * 86_400_000);
    let human = ctl(&["retention"]);
    assert!(human.contains("transition 90d"), "{human}");
    let events = ctl(&["events", "--limit", "100"]);
    assert!(
        events.contains("provisioned") && events.contains(&alias),
        "{events}"
    );
    assert_eq!(ctl(&["purge-due"]).trim(), "purged 0");
    assert!(ctl(&["queue"]).trim().is_empty());
    assert!(!human.contains(VISA) && !events.contains(VISA));
}
