//! Account lifecycle and PAN retention end to end: scheme-sim's
//! notification feed drives suspend/resume/delete/re-digitize/expiry
//! changes into real vaultd processes; retention erases PANs for good.

use std::time::{Duration, Instant};

use serde_json::json;
use vault_e2e::{MASTERCARD, TokenEnv, TokenOpts, VISA, pan, tokenize};
use vault_proto::BlockingClient;
use vault_proto::ops::{self, AliasRecord, NoArgs, TokenStatus};

const LONG: Duration = Duration::from_secs(60);

fn status(c: &mut BlockingClient, alias: &str) -> AliasRecord {
    c.op::<ops::AliasStatus>(&ops::AliasArgs {
        alias: alias.into(),
    })
    .unwrap()
}

/// Polls until `check` holds, at most `within`; returns how long it took.
fn until(within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check() {
        assert!(t0.elapsed() < within, "condition not met within {within:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
    t0.elapsed()
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
    let two_s = Duration::from_secs(2);

    ev(json!({"event": "suspend"}));
    until(two_s, || {
        status(&mut c, &alias).token_info.unwrap().status == TokenStatus::Suspended
    });
    ev(json!({"event": "resume"}));
    until(two_s, || {
        status(&mut c, &alias).token_info.unwrap().status == TokenStatus::Active
    });

    let before = status(&mut c, &alias).token_info.unwrap();
    ev(json!({"event": "redigitize", "exp_month": 7, "exp_year": 2033, "new_token_number": true}));
    until(two_s, || {
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
    until(two_s, || {
        let card = status(&mut c, &alias).card;
        (card.exp_month, card.exp_year) == (3, 2034)
    });

    ev(json!({"event": "delete"}));
    until(two_s, || {
        status(&mut c, &alias).token_info.unwrap().status == TokenStatus::Deleted
    });
    // The deleted token's key is gone from the HSM.
    until(two_s, || {
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
    let after = c
        .op::<ops::EventsOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .unwrap();
    let start_seq = after.events.last().map(|e| e.seq).unwrap_or(0);
    // 1,000 events: each token alternates suspend/resume 100 times.
    let poster = {
        let url = t.sim.url();
        let refs = refs.clone();
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            for i in 0..100 {
                for r in &refs {
                    let event = if i % 2 == 0 { "suspend" } else { "resume" };
                    agent
                        .post(&format!("{url}/sim/tokens/{r}/events"))
                        .send_json(json!({"event": event}))
                        .unwrap();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    t.daemon().kill9();
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    t.restart();
    poster.join().unwrap();
    let mut c = t.client();
    let mut seen = Vec::new();
    until(LONG, || {
        let page = c
            .op::<ops::EventsOp>(&ops::PageArgs {
                after: Some(start_seq),
                limit: 1000,
            })
            .unwrap();
        seen = page.events;
        seen.len() >= 1000
    });
    std::thread::sleep(Duration::from_millis(2500));
    let page = c
        .op::<ops::EventsOp>(&ops::PageArgs {
            after: Some(start_seq),
            limit: 1000,
        })
        .unwrap();
    assert_eq!(page.events.len(), 1000, "exactly 1,000 new event records");
    // Feed order, no duplicates: the feed seq in each detail is 1..=1000
    // in order (the feed counts from 1 per scheme; all are visa).
    let feed_seqs: Vec<u64> = page
        .events
        .iter()
        .map(|e| {
            assert!(
                e.kind == "token_suspended" || e.kind == "token_resumed",
                "{e:?}"
            );
            e.detail
                .rsplit("feed seq ")
                .next()
                .unwrap()
                .trim_end_matches(')')
                .parse()
                .unwrap()
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
    let took = until(Duration::from_secs(5), || {
        status(&mut c, &a1).card.pan_removed
    });
    assert!(
        active_at.elapsed() <= Duration::from_secs(4),
        "erased {took:?} after polling started"
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
