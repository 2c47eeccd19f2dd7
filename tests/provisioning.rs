//! Network token provisioning end to end: real vaultd, SoftHSM2 and
//! scheme-sim processes.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use vault_e2e::{
    AMEX, CEILING, DISCOVER, MASTERCARD, TokenEnv, TokenOpts, VISA, pan, tokenize, wait_for,
    wait_for_state,
};
use vault_proto::ops::{self, JobState, NoArgs, TokenStatus};

const LONG: Duration = CEILING;

/// Stored token keys wrapped under `scheme`'s KEK version 1 (`stats.keys`).
fn kek_use(c: &mut vault_proto::BlockingClient, scheme: &str) -> u64 {
    let stats = c.op::<ops::StatsOp>(&NoArgs {}).expect("stats");
    stats
        .keys
        .expect("stats.keys")
        .keks
        .iter()
        .filter(|k| k.scheme == scheme && k.version == 1)
        .map(|k| k.tokens)
        .sum()
}

#[test]
fn every_scheme_reaches_active_with_stored_keys_and_none_in_the_hsm() {
    let t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let trids = [
        ("visa", "40010030273"),
        ("mastercard", "50110030273"),
        ("amex", "34010030273"),
        ("discover", "60110030273"),
    ];
    let mut secrets: Vec<String> = Vec::new();
    let mut provisioned: Vec<(String, String)> = Vec::new();
    for (p, (scheme, trid)) in [VISA, MASTERCARD, AMEX, DISCOVER].into_iter().zip(trids) {
        let r = tokenize(&mut c, p, 12, 2030);
        let ti = r.record.token_info.clone().expect("token_info");
        assert_eq!(ti.status, TokenStatus::Pending);
        assert_eq!(ti.scheme, scheme);
        let done = t.wait_status(&mut c, &r.record.alias, LONG);
        let ti = done.token_info.expect("token_info");
        assert_eq!(
            ti.status,
            TokenStatus::Active,
            "{scheme}: {:?}",
            ti.last_error
        );
        let token_ref = ti.token_ref.clone().expect("token_ref");
        let sim = t.sim.get(&format!("/sim/tokens/{token_ref}"));
        let number = sim["token"].as_str().unwrap().to_owned();
        assert_eq!(ti.token_last4.as_deref(), Some(&number[number.len() - 4..]));
        assert_eq!(ti.exp_month, Some(sim["exp_month"].as_u64().unwrap() as u8));
        assert_eq!(ti.exp_year, Some(sim["exp_year"].as_u64().unwrap() as u16));
        assert_eq!(ti.par.as_deref(), sim["par"].as_str());
        assert_eq!(ti.token_requestor_id.as_deref(), Some(trid));
        assert!(ti.last_error.is_none());
        secrets.push(number);
        secrets.push(sim["token_key_hex"].as_str().unwrap().to_owned());

        // The token key is stored wrapped in the token's record (counted
        // under its scheme's KEK), never as an HSM object.
        let keys = t.env.vaultd_cmd(&["keys", "list"]);
        assert!(
            !keys.contains("nt."),
            "a token key became an HSM object:\n{keys}"
        );
        assert_eq!(kek_use(&mut c, scheme), 1, "{scheme}'s stored keys");
        provisioned.push((r.record.alias.clone(), token_ref));
    }
    let stats = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
    assert_eq!(stats.tokens.get("active"), Some(&4));
    assert_eq!(stats.schemes["visa"].provisioned, 1);
    assert_eq!(t.sim.get("/sim/stats")["tokens_issued"], 4);

    // Erasure: delete_alias answers at once; its durable job then destroys
    // the token key in the HSM and deletes the token at the scheme.
    let (alias, token_ref) = provisioned.pop().expect("a provisioned card");
    c.op::<ops::DeleteAlias>(&ops::AliasArgs {
        alias: alias.clone(),
    })
    .unwrap();
    let scheme = "discover";
    wait_for_state(LONG, "delete_alias's job to finish", || {
        let key_gone = kek_use(&mut c, scheme) == 0;
        let sim = t.sim.get(&format!("/sim/tokens/{token_ref}"));
        if key_gone && sim["status"] == "deleted" {
            Ok(())
        } else {
            Err(format!(
                "key gone {key_gone}, scheme status {}",
                sim["status"]
            ))
        }
    });
    // The other tokens' keys stay.
    for other in ["visa", "mastercard", "amex"] {
        assert_eq!(kek_use(&mut c, other), 1, "{other}'s key went too");
    }
    let keys = t.env.vaultd_cmd(&["keys", "list"]);
    assert!(!keys.contains("nt."), "{keys}");

    // Neither token numbers, token keys nor PANs in the redb file or logs.
    let mut all: Vec<&str> = secrets.iter().map(String::as_str).collect();
    all.extend([VISA, MASTERCARD, AMEX, DISCOVER]);
    // Key hex as stored would be binary; check the raw key bytes too.
    let raw_keys: Vec<Vec<u8>> = secrets
        .iter()
        .filter(|s| s.len() == 32)
        .map(|h| {
            (0..16)
                .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
                .collect()
        })
        .collect();
    let db = std::fs::read(t.env.db()).unwrap();
    for k in &raw_keys {
        assert!(
            !vault_e2e::contains(&db, k),
            "a token key appears in the redb file"
        );
    }
    t.env.assert_absent_everywhere(&all);
}

#[test]
fn not_participating_issuer_ends_not_eligible_without_retries() {
    let t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    t.sim.post(
        "/sim/issuers",
        &json!({"bin_prefix": "400012", "participating": false}),
    );
    let p = pan("400012", 7);
    let r = tokenize(&mut c, &p, 1, 2031);
    let done = t.wait_status(&mut c, &r.record.alias, LONG);
    let ti = done.token_info.unwrap();
    assert_eq!(ti.status, TokenStatus::NotEligible);
    assert!(ti.last_error.is_some());
    assert!(!ti.last_error.as_deref().unwrap().contains(&p[6..]));
    assert_eq!(
        t.sim.get("/sim/stats")["provision_requests"],
        1,
        "no retries"
    );
    let q = c
        .op::<ops::QueueListOp>(&ops::QueueListArgs::default())
        .unwrap();
    assert!(q.jobs.is_empty(), "no job left: {:?}", q.jobs);
    let ev = c.op::<ops::EventsOp>(&ops::PageArgs::default()).unwrap();
    assert!(
        ev.events
            .iter()
            .any(|e| e.kind == "provision_not_eligible"
                && e.alias.as_deref() == Some(&r.record.alias))
    );
    // The PAN stays the credential.
    assert!(!done.card.pan_removed);
}

#[test]
fn half_the_calls_failing_still_gives_exactly_one_token_per_card() {
    let t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    t.sim.post(
        "/sim/faults",
        &json!({"scheme": null, "fail_rate": 0.5, "latency_ms": 0, "kind": "http_503"}),
    );
    let mut aliases = Vec::new();
    for i in 0..500u64 {
        aliases.push(
            tokenize(&mut c, &pan("4000", 10_000 + i), 12, 2030)
                .record
                .alias,
        );
    }
    let stats = t.wait_queue_empty(&mut c, Duration::from_secs(120));
    assert_eq!(stats.tokens.get("active"), Some(&500), "{stats:?}");
    for a in &aliases {
        let r = c
            .op::<ops::AliasStatus>(&ops::AliasArgs { alias: a.clone() })
            .unwrap();
        assert_eq!(r.token_info.unwrap().status, TokenStatus::Active);
    }
    let s = t.sim.get("/sim/stats");
    assert_eq!(s["tokens_issued"], 500, "{s}");
    assert!(stats.schemes["visa"].errors > 0, "the 503s were seen");
}

#[test]
fn scheme_outage_backs_off_opens_the_breaker_and_recovers_alone() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let port = t.sim.port;
    t.sim.stop();
    let mut aliases = Vec::new();
    for i in 0..40u64 {
        aliases.push(
            tokenize(&mut c, &pan("5100", 20_000 + i), 12, 2030)
                .record
                .alias,
        );
    }
    // Backing off: jobs become scheduled with attempts and an error; the
    // breaker opens.
    wait_for(LONG, "the mastercard breaker to open", || {
        let s = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
        s.schemes["mastercard"].breaker.as_deref() == Some("open")
    });
    let q = c
        .op::<ops::QueueListOp>(&ops::QueueListArgs {
            state: None,
            limit: 100,
            after: None,
        })
        .unwrap();
    assert!(
        q.jobs
            .iter()
            .any(|j| j.attempts > 0 && j.last_error.is_some())
    );
    assert!(q.jobs.iter().all(|j| j.state != JobState::Failed));

    // The scheme comes back (same KEKs, same port): everything completes.
    t.sim = vault_e2e::SchemeSim::start_on(&t.env, port);
    let stats = t.wait_queue_empty(&mut c, LONG);
    assert_eq!(stats.tokens.get("active"), Some(&40), "{stats:?}");
    assert_eq!(t.sim.get("/sim/stats")["tokens_issued"], 40);
    let _ = t.daemon();
}

#[test]
fn paused_scheme_waits_and_failed_jobs_can_be_retried() {
    let opts = TokenOpts {
        provisioning: "backoff_initial = \"50ms\"\nbackoff_max = \"100ms\"\nmax_attempts = 2\n",
        ..TokenOpts::default()
    };
    let t = TokenEnv::start(opts);
    let mut c = t.client();
    let p = c
        .op::<ops::SchemePause>(&ops::SchemeArgs {
            scheme: "amex".into(),
        })
        .unwrap();
    assert!(p.paused);
    let r = tokenize(&mut c, AMEX, 5, 2030);
    // A marker instead of a pause: a visa card queued after the amex one.
    // Each pass of the worker reads the due jobs of every scheme that is
    // not paused; the pass that took the visa job would have taken the
    // amex job, due before it, were amex not paused.
    let marker = tokenize(&mut c, VISA, 5, 2030);
    assert_eq!(
        t.wait_status(&mut c, &marker.record.alias, LONG)
            .token_info
            .unwrap()
            .status,
        TokenStatus::Active
    );
    assert_eq!(
        t.sim.get("/sim/stats")["provision_requests"],
        1,
        "paused: nothing sent for amex, only the visa card's request"
    );
    let s = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
    assert!(s.schemes["amex"].paused);
    assert_eq!(s.queue.due, 1);
    c.op::<ops::SchemeResume>(&ops::SchemeArgs {
        scheme: "amex".into(),
    })
    .unwrap();
    assert_eq!(
        t.wait_status(&mut c, &r.record.alias, LONG)
            .token_info
            .unwrap()
            .status,
        TokenStatus::Active
    );

    // Every call fails: after max_attempts the job is failed...
    t.sim.post(
        "/sim/faults",
        &json!({"scheme": "discover", "fail_rate": 1.0, "latency_ms": 0, "kind": "http_503"}),
    );
    let r = tokenize(&mut c, DISCOVER, 5, 2030);
    let done = t.wait_status(&mut c, &r.record.alias, LONG);
    assert_eq!(done.token_info.unwrap().status, TokenStatus::Failed);
    let q = c
        .op::<ops::QueueListOp>(&ops::QueueListArgs {
            state: Some(JobState::Failed),
            limit: 10,
            after: None,
        })
        .unwrap();
    assert_eq!(q.jobs.len(), 1);
    assert_eq!(q.jobs[0].attempts, 2);
    // ...and queue_retry revives it once the scheme is healthy.
    t.sim.post(
        "/sim/faults",
        &json!({"scheme": null, "fail_rate": 0.0, "latency_ms": 0, "kind": "http_503"}),
    );
    let rr = c
        .op::<ops::QueueRetry>(&ops::JobArgs {
            job_id: q.jobs[0].job_id.clone(),
        })
        .unwrap();
    assert!(matches!(rr.state, JobState::Due | JobState::InFlight));
    assert_eq!(
        t.wait_status(&mut c, &r.record.alias, LONG)
            .token_info
            .unwrap()
            .status,
        TokenStatus::Active
    );
    // Admin actions are audited.
    let audit = c
        .op::<ops::AuditOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .unwrap();
    assert!(audit.chain_ok);
    for op in ["scheme_pause", "scheme_resume", "queue_retry"] {
        assert!(audit.records.iter().any(|r| r.op == op), "{op} not audited");
    }
}

#[test]
fn sigkill_with_a_thousand_jobs_in_flight_loses_nothing_and_issues_once() {
    let mut t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    t.sim.post(
        "/sim/faults",
        &json!({"scheme": null, "fail_rate": 0.0, "latency_ms": 20, "kind": "http_503"}),
    );
    // Queue the thousand jobs while visa is paused, then let them go and
    // kill the daemon while they are in flight.
    c.op::<ops::SchemePause>(&ops::SchemeArgs {
        scheme: "visa".into(),
    })
    .unwrap();
    let t0 = std::time::Instant::now();
    let mut aliases = HashSet::new();
    for i in 0..1000u64 {
        aliases.insert(
            tokenize(&mut c, &pan("4000", 50_000 + i), 12, 2030)
                .record
                .alias,
        );
    }
    c.op::<ops::SchemeResume>(&ops::SchemeArgs {
        scheme: "visa".into(),
    })
    .unwrap();
    // Killed once jobs are in flight (each request takes 20 ms at the
    // scheme, so a thousand take a while even at full concurrency).
    wait_for(LONG, "jobs in flight", || {
        c.op::<ops::StatsOp>(&NoArgs {}).unwrap().queue.in_flight > 0
    });
    let issued_before = t.sim.get("/sim/stats")["tokens_issued"].as_u64().unwrap();
    assert!(issued_before < 1000, "kill came too late to test anything");
    eprintln!("tokenized and in flight after {:?}", t0.elapsed());
    t.daemon().kill9();
    drop(c);
    t.restart();
    eprintln!("restarted after {:?}", t0.elapsed());
    let mut c = t.client();
    let stats = t.wait_queue_empty(&mut c, Duration::from_secs(120));
    eprintln!("drained after {:?}", t0.elapsed());
    assert_eq!(stats.tokens.get("active"), Some(&1000), "{stats:?}");
    assert_eq!(stats.queue.failed, 0);
    for a in &aliases {
        let r = c
            .op::<ops::AliasStatus>(&ops::AliasArgs { alias: a.clone() })
            .unwrap();
        assert_eq!(r.token_info.unwrap().status, TokenStatus::Active);
    }
    let s = t.sim.get("/sim/stats");
    assert_eq!(s["tokens_issued"], 1000, "exactly one token per card: {s}");
}

#[test]
fn tenant_without_pan_storage_provisions_synchronously_and_never_writes_the_pan() {
    let opts = TokenOpts {
        tenants: "[[tenant]]\nid = \"t-a\"\nnetwork_tokens = true\n[[tenant]]\nid = \"t-none\"\nnetwork_tokens = true\npan_retention = \"none\"\n",
        clients: "[[client]]\nname = \"strict-shop\"\nuid = 1101\ntenant = \"t-none\"\nroles = [\"merchant\"]\n",
        ..TokenOpts::default()
    };
    let mut t = TokenEnv::start(opts);
    let call = |t: &TokenEnv, p: &str| {
        t.env.call_as(
            1101,
            "tokenize",
            &json!({"pan": p, "exp_month": 9, "exp_year": 2030}),
        )
    };
    let r = call(&t, VISA).unwrap();
    assert_eq!(r["token_info"]["status"], "active");
    assert_eq!(r["card"]["pan_removed"], true);
    // Same card again: same alias, no second token.
    let again = call(&t, VISA).unwrap();
    assert_eq!(again["alias"], r["alias"]);
    assert_eq!(again["created"], false);
    // Not eligible: refused, nothing stored.
    t.sim.post(
        "/sim/issuers",
        &json!({"bin_prefix": "5555", "participating": false}),
    );
    assert_eq!(
        call(&t, MASTERCARD).unwrap_err().0,
        "network_token_required"
    );
    // Token service down: unavailable, nothing stored.
    t.sim.stop();
    assert_eq!(call(&t, AMEX).unwrap_err().0, "unavailable");
    let mut c = t.client();
    let s = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
    assert_eq!(s.aliases, 1);
    assert_eq!(s.pans_retained, 0);
    // Crash and restart: still nothing of any PAN on disk.
    t.daemon().kill9();
    t.restart();
    t.env.assert_absent_everywhere(&[VISA, MASTERCARD, AMEX]);
}

/// PROTOCOL.md `provision`: "for cards stored before tokens were enabled".
/// A card stored while its tenant had no network tokens has no token
/// state; once tokens are enabled (a configuration reload), its
/// `token_info` says no token was requested (`failed`, with the reason),
/// and `provision` gets it one: pending, then active, one call to the
/// token service, counted in `stats`.
#[test]
fn a_card_stored_before_tokens_were_enabled_gets_its_token_through_provision() {
    let t = TokenEnv::start(TokenOpts {
        tenants: "[[tenant]]\nid = \"t-a\"\nnetwork_tokens = false\n",
        ..TokenOpts::default()
    });
    let mut c = t.client();
    let r = tokenize(&mut c, &pan("4000", 90_001), 12, 2031);
    let alias = r.record.alias;
    assert!(r.record.token_info.is_none(), "tokens are off");
    let args = ops::AliasArgs {
        alias: alias.clone(),
    };
    let refused = c.op::<ops::Provision>(&args).unwrap_err();
    assert_eq!(refused.code(), Some(vault_proto::ErrorCode::BadRequest));

    // Enable network tokens for the tenant and reload.
    let path = t.env.config_path();
    let cfg = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        cfg.replace("network_tokens = false", "network_tokens = true"),
    )
    .unwrap();
    let pid = t.daemon.as_ref().unwrap().pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let ti = vault_e2e::wait_for_some(LONG, "the reload to apply", || {
        c.op::<ops::AliasStatus>(&args).unwrap().token_info
    });
    assert_eq!(ti.status, TokenStatus::Failed);
    assert_eq!(ti.token_ref, None);
    assert!(
        ti.last_error
            .as_deref()
            .is_some_and(|e| e.contains("stored before network tokens were enabled")),
        "{:?}",
        ti.last_error
    );
    let s = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
    assert!(s.tokens.values().all(|n| *n == 0), "{:?}", s.tokens);

    let queued = c.op::<ops::Provision>(&args).unwrap();
    let qi = queued.token_info.unwrap();
    assert!(
        matches!(qi.status, TokenStatus::Pending | TokenStatus::Active),
        "{qi:?}"
    );
    // Idempotent while it is pending (or once it is active).
    c.op::<ops::Provision>(&args).unwrap();
    let done = t.wait_status(&mut c, &alias, LONG).token_info.unwrap();
    assert_eq!(done.status, TokenStatus::Active, "{:?}", done.last_error);
    assert_eq!(done.last_error, None);
    let token_ref = done.token_ref.expect("token_ref");
    let sim = t.sim.get(&format!("/sim/tokens/{token_ref}"));
    assert_eq!(sim["status"], "active");
    assert_eq!(t.sim.get("/sim/stats")["provision_requests"], 1);
    let s = t.wait_queue_empty(&mut c, LONG);
    assert_eq!(s.tokens.get("active"), Some(&1), "{:?}", s.tokens);
    assert_eq!(s.tokens.get("pending").copied().unwrap_or(0), 0);
}

/// Issue 22: the backlog of a paused scheme is never read (the worker's
/// reads of due jobs stay where they were however many cards are queued),
/// and resuming the schemes, some before the others, provisions every
/// queued job exactly once.
#[test]
fn a_paused_schemes_backlog_is_never_read_and_resuming_provisions_each_job_once() {
    let t = TokenEnv::start(TokenOpts::default());
    let mut c = t.client();
    let schemes = [
        ("visa", "4000"),
        ("mastercard", "5100"),
        ("amex", "3400"),
        ("discover", "6011"),
    ];
    for (s, _) in schemes {
        c.op::<ops::SchemePause>(&ops::SchemeArgs { scheme: s.into() })
            .unwrap();
    }
    let stats = |c: &mut vault_proto::BlockingClient| c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
    let reads_before = stats(&mut c).queue.reads;
    const PER_SCHEME: u64 = 60;
    for i in 0..PER_SCHEME {
        for (_, prefix) in schemes {
            let p = if prefix == "3400" {
                // Amex: 15 digits.
                let body = format!("3400{:010}", 30_000 + i);
                let d = vault_proto::pan::luhn_check_digit(body.as_bytes()) as char;
                format!("{body}{d}")
            } else {
                pan(prefix, 30_000 + i)
            };
            tokenize(&mut c, &p, 12, 2030);
        }
    }
    let s = stats(&mut c);
    assert_eq!(s.queue.due, 4 * PER_SCHEME, "{:?}", s.queue);
    assert_eq!(
        s.queue.reads, reads_before,
        "the worker read the backlog of paused schemes: {:?}",
        s.queue
    );
    assert_eq!(t.sim.get("/sim/stats")["provision_requests"], 0);

    // Two schemes go on; the other two keep their jobs queued.
    for s in ["visa", "amex"] {
        c.op::<ops::SchemeResume>(&ops::SchemeArgs { scheme: s.into() })
            .unwrap();
    }
    wait_for_state(LONG, "the resumed schemes' tokens", || {
        let s = stats(&mut c);
        let active = s.tokens.get("active").copied().unwrap_or(0);
        if active == 2 * PER_SCHEME && s.queue.in_flight == 0 {
            Ok(s)
        } else {
            Err(format!("{active} active, {:?}", s.queue))
        }
    });
    let s = stats(&mut c);
    assert_eq!(s.queue.due, 2 * PER_SCHEME, "{:?}", s.queue);
    let sim = t.sim.get("/sim/stats");
    assert_eq!(sim["provision_requests"], 2 * PER_SCHEME, "{sim}");
    for s in ["mastercard", "discover"] {
        c.op::<ops::SchemeResume>(&ops::SchemeArgs { scheme: s.into() })
            .unwrap();
    }
    let s = t.wait_queue_empty(&mut c, LONG);
    assert_eq!(s.tokens.get("active"), Some(&(4 * PER_SCHEME)), "{s:?}");
    let sim = t.sim.get("/sim/stats");
    assert_eq!(
        sim["tokens_issued"],
        4 * PER_SCHEME,
        "one token per card: {sim}"
    );
    assert_eq!(
        sim["provision_requests"],
        4 * PER_SCHEME,
        "one request per job: {sim}"
    );
}

/// Issue 22: a scheme whose calls hang holds its own slots only; the jobs
/// of another scheme, queued behind its jobs, provision meanwhile.
#[test]
fn jobs_of_a_scheme_without_free_slots_never_delay_another_schemes() {
    let opts = TokenOpts {
        provisioning: "backoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\nmax_attempts = 30\nper_scheme_concurrency = 2\nconcurrency = 8\nrequest_timeout = \"120s\"\n",
        ..TokenOpts::default()
    };
    let mut t = TokenEnv::start(opts);
    let mut c = t.client();
    // Every visa call hangs for 100 s: its two slots stay taken for the
    // whole test.
    t.sim.post(
        "/sim/faults",
        &json!({"scheme": "visa", "fail_rate": 0.0, "latency_ms": 100_000, "kind": "http_503"}),
    );
    let mut visa = Vec::new();
    for i in 0..20u64 {
        visa.push(
            tokenize(&mut c, &pan("4000", 40_000 + i), 12, 2030)
                .record
                .alias,
        );
    }
    wait_for(LONG, "visa's slots taken", || {
        c.op::<ops::StatsOp>(&NoArgs {}).unwrap().queue.in_flight == 2
    });
    let mut mc = Vec::new();
    for i in 0..40u64 {
        mc.push(
            tokenize(&mut c, &pan("5100", 40_000 + i), 12, 2030)
                .record
                .alias,
        );
    }
    for a in &mc {
        assert_eq!(
            t.wait_status(&mut c, a, LONG).token_info.unwrap().status,
            TokenStatus::Active
        );
    }
    // Visa's calls are still hanging: none of its cards has a token, and
    // never more than its two slots were used.
    let s = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
    assert_eq!(s.tokens.get("active"), Some(&40), "{s:?}");
    assert_eq!(s.queue.in_flight, 2, "{:?}", s.queue);
    assert_eq!(s.queue.due, 18, "{:?}", s.queue);
    for a in &visa {
        let r = c
            .op::<ops::AliasStatus>(&ops::AliasArgs { alias: a.clone() })
            .unwrap();
        assert_eq!(r.token_info.unwrap().status, TokenStatus::Pending);
    }
    // The hanging calls end with the simulator, so vaultd stops at once.
    t.sim.stop();
}
