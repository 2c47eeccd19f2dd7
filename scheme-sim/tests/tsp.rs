//! The vault-facing token service API, against the real binary.

mod common;

use common::{SimProcess, luhn_ok, unwrap_key};
use scheme_sim::Scheme;
use scheme_sim::date::YearMonth;
use serde_json::json;

const CARDS: [(&str, &str, Scheme); 5] = [
    ("visa", "4111111111111111", Scheme::Visa),
    ("mastercard", "5555555555554444", Scheme::Mastercard),
    ("mastercard", "2223000048400011", Scheme::Mastercard),
    ("amex", "378282246310005", Scheme::Amex),
    ("discover", "6011111111111117", Scheme::Discover),
];

#[test]
fn provisions_a_token_per_scheme_with_a_key_wrapped_under_the_kek() {
    let sim = SimProcess::start();
    let now = YearMonth::now();
    let mut numbers = Vec::new();
    for (i, (name, pan, scheme)) in CARDS.iter().enumerate() {
        let r = sim.provision_ok(name, &format!("job-{i}"), pan);
        let token = r["token"].as_str().expect("token");
        assert!(luhn_ok(token), "token number fails Luhn");
        assert_ne!(token, *pan);
        assert_ne!(
            token[..6],
            pan[..6],
            "token BIN must differ from the card's"
        );
        assert_eq!(
            Scheme::route(token),
            Some(*scheme),
            "token outside the scheme's range"
        );
        assert_eq!(token.len(), if *scheme == Scheme::Amex { 15 } else { 16 });
        numbers.push(token.to_owned());

        assert_eq!(r["status"], "active");
        assert_eq!(r["exp_month"], now.month);
        assert_eq!(r["exp_year"], now.year + 3);
        let token_ref = r["token_ref"].as_str().expect("token_ref");
        assert!(
            token_ref
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let par = r["par"].as_str().expect("par");
        assert_eq!(par.len(), 29);
        assert!(
            par.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        );
        assert!(!par.contains(pan));

        let wrapped = r["wrapped_key"].as_str().expect("wrapped_key");
        assert_eq!(wrapped.len(), 48);
        let key = unwrap_key(&sim.kek(*scheme), wrapped);
        let view = sim.token(token_ref);
        assert_eq!(view["token_key_hex"], hex::encode(key));
        assert_eq!(view["scheme"], *name);
        assert_eq!(view["token"], token);
        assert_eq!(view["par"], par);
        assert_eq!(view["status"], "active");
        assert_eq!(view["last_atc"], 0);
        assert_eq!(view["provision_calls"], 1);
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), CARDS.len());
    assert_eq!(
        sim.stats(),
        json!({"provision_requests": 5, "tokens_issued": 5, "idempotent_replays": 0})
    );

    // Card data stays out of the log.
    let log = sim.stderr_log();
    for (_, pan, _) in CARDS {
        assert!(!log.contains(pan));
    }
    for n in &numbers {
        assert!(!log.contains(n.as_str()));
    }
}

#[test]
fn same_idempotency_key_replays_and_a_new_key_issues_a_new_token() {
    let sim = SimProcess::start();
    let first = sim.provision_ok("visa", "job-1", "4111111111111111");
    let again = sim.provision_ok("visa", "job-1", "4111111111111111");
    assert_eq!(first, again);
    let token_ref = first["token_ref"].as_str().expect("ref");
    assert_eq!(sim.token(token_ref)["provision_calls"], 2);

    let other = sim.provision_ok("visa", "job-2", "4111111111111111");
    assert_ne!(other["token"], first["token"]);
    assert_ne!(other["token_ref"], first["token_ref"]);
    assert_ne!(other["wrapped_key"], first["wrapped_key"]);
    assert_eq!(other["par"], first["par"], "PAR is per card");

    // Keys are per scheme: the same key at another scheme is a new request.
    sim.provision_ok("mastercard", "job-1", "5555555555554444");

    // A key reused for another card is refused, not replayed.
    let clash = sim.provision("visa", "job-1", "4012888888881881");
    assert_eq!(
        (clash.status, clash.body["error"].as_str()),
        (409, Some("idempotency_conflict"))
    );

    assert_eq!(
        sim.stats(),
        json!({"provision_requests": 5, "tokens_issued": 3, "idempotent_replays": 1})
    );
}

#[test]
fn refusals_are_permanent_422s_or_400s() {
    let sim = SimProcess::start();
    let a = sim.post(
        "/sim/issuers",
        &json!({"bin_prefix": "411111", "participating": false}),
    );
    assert_eq!((a.status, a.body), (200, json!({})));
    let r = sim.provision("visa", "k1", "4111111111111111");
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (422, Some("not_eligible"))
    );
    assert!(r.body["message"].is_string());
    // Another BIN of the same scheme still participates.
    sim.provision_ok("visa", "k2", "4012888888881881");
    // A longer prefix can take a range back in.
    sim.post(
        "/sim/issuers",
        &json!({"bin_prefix": "4111111", "participating": true}),
    );
    sim.provision_ok("visa", "k3", "4111111111111111");

    let r = sim.provision("mastercard", "k4", "4012888888881881");
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (422, Some("wrong_scheme"))
    );
    let r = sim.provision("visa", "k5", "4111111111111112");
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (422, Some("invalid_card"))
    );
    let r = sim.provision("visa", "k6", "4111-1111-1111-1111");
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (422, Some("invalid_card"))
    );
    let r = sim.post_with(
        "/tsp/visa/v1/provision",
        &json!({"pan": "4111111111111111", "exp_month": 13, "exp_year": 2040, "token_requestor_id": "1"}),
        Some("k7"),
    );
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (422, Some("invalid_card"))
    );
    let r = sim.post_with(
        "/tsp/visa/v1/provision",
        &json!({"pan": "4111111111111111", "exp_month": 1, "exp_year": 2001, "token_requestor_id": "1"}),
        Some("k8"),
    );
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (422, Some("invalid_card"))
    );
    // No error message ever echoes the card number.
    assert!(!r.body.to_string().contains("4111"), "{}", r.body);

    let r = sim.post(
        "/tsp/visa/v1/provision",
        &json!({"pan": "4111111111111111", "exp_month": 1, "exp_year": 2040, "token_requestor_id": "1"}),
    );
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("bad_request"))
    );
    let r = sim.post_with(
        "/tsp/visa/v1/provision",
        &json!({"pan": 4111111111111111u64, "exp_month": 1, "exp_year": 2040, "token_requestor_id": "1"}),
        Some("k9"),
    );
    assert_eq!(r.status, 400);
    assert!(!r.body.to_string().contains("4111"), "{}", r.body);
    let r = sim.provision("jcb", "k10", "3530111333300000");
    assert_eq!(r.status, 404);
    assert_eq!(sim.stats()["tokens_issued"], 2);
}

#[test]
fn requestor_lifecycle_and_key_refresh() {
    let sim = SimProcess::start();
    let r = sim.provision_ok("amex", "k", "378282246310005");
    let tr = r["token_ref"].as_str().expect("ref");
    let call = |action: &str| sim.post(&format!("/tsp/amex/v1/tokens/{tr}/{action}"), &json!({}));

    let a = call("suspend");
    assert_eq!(
        (a.status, a.body.clone()),
        (200, json!({"token_ref": tr, "status": "suspended"}))
    );
    assert_eq!(sim.token(tr)["status"], "suspended");
    let a = call("resume");
    assert_eq!((a.status, a.body["status"].as_str()), (200, Some("active")));

    let old_key = sim.token(tr)["token_key_hex"].clone();
    let a = call("key");
    assert_eq!(a.status, 200);
    assert_eq!(a.body["token_ref"], tr);
    let new_key = unwrap_key(
        &sim.kek(Scheme::Amex),
        a.body["wrapped_key"].as_str().expect("wk"),
    );
    let view = sim.token(tr);
    assert_eq!(view["token_key_hex"], hex::encode(new_key));
    assert_ne!(view["token_key_hex"], old_key);
    assert_eq!(view["last_atc"], 0);

    // Wrong scheme in the path: not this service's token.
    let a = sim.post(&format!("/tsp/visa/v1/tokens/{tr}/suspend"), &json!({}));
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("not_found"))
    );

    let a = call("delete");
    assert_eq!(
        (a.status, a.body.clone()),
        (200, json!({"token_ref": tr, "status": "deleted"}))
    );
    let a = call("delete");
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("deleted"))
    );
    for action in ["suspend", "resume", "key"] {
        let a = call(action);
        assert_eq!(
            (a.status, a.body["error"].as_str()),
            (409, Some("invalid_state")),
            "{action}"
        );
    }
    let a = sim.post("/tsp/amex/v1/tokens/DM4MAXnope/delete", &json!({}));
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (404, Some("not_found"))
    );

    // Requestor calls are not feed events.
    let feed = sim.get("/tsp/amex/v1/notifications");
    assert_eq!(feed.body, json!({"events": [], "next": 0}));
}

#[test]
fn faults_fail_about_the_asked_share_and_only_for_their_scheme() {
    let sim = SimProcess::start();
    sim.set_faults(&json!({"scheme": "visa", "fail_rate": 0.3, "latency_ms": 0, "kind": "http_503", "retry_after_s": 7}));
    let n = 300;
    let mut failed = 0;
    for i in 0..n {
        let r = sim.provision("visa", &format!("v-{i}"), "4111111111111111");
        match r.status {
            200 => assert_eq!(r.retry_after, None),
            503 => {
                failed += 1;
                assert_eq!(r.body["error"], "unavailable");
                assert_eq!(r.retry_after.as_deref(), Some("7"));
            }
            s => panic!("unexpected status {s}"),
        }
    }
    // Binomial(300, 0.3): mean 90, sd ~7.9; allow ~4.5 sd.
    assert!((55..=125).contains(&failed), "{failed} of {n} failed");
    // Faults come before counting and idempotency.
    assert_eq!(sim.stats()["provision_requests"], n - failed);
    assert_eq!(sim.stats()["tokens_issued"], n - failed);

    for i in 0..50 {
        sim.provision_ok("mastercard", &format!("m-{i}"), "5555555555554444");
    }

    // All schemes, always failing, no Retry-After unless asked.
    sim.set_faults(&json!({"scheme": null, "fail_rate": 1.0, "latency_ms": 0, "kind": "http_503"}));
    let r = sim.provision("discover", "d-1", "6011111111111117");
    assert_eq!((r.status, r.retry_after), (503, None));
    let r = sim.get("/tsp/discover/v1/notifications");
    assert_eq!(r.status, 503);
    // The /sim and /v1 endpoints are never faulted.
    assert_eq!(sim.get("/sim/stats").status, 200);

    // Latency applies to every call, failing or not: a lower bound, which
    // load cannot break. Then, cleared, two calls take far less than the
    // latency was: a few ms on an idle machine, and the latency is set
    // high enough (2 s) for ten times that and a loaded machine's delays.
    let latency = std::time::Duration::from_millis(2000);
    sim.set_faults(&json!({"scheme": "amex", "fail_rate": 0.0,
        "latency_ms": latency.as_millis() as u64, "kind": "http_503"}));
    let t = std::time::Instant::now();
    sim.provision_ok("amex", "a-1", "378282246310005");
    assert!(t.elapsed() >= latency);

    sim.set_faults(&json!({"scheme": null, "fail_rate": 0, "latency_ms": 0, "kind": "http_503"}));
    let t = std::time::Instant::now();
    sim.provision_ok("amex", "a-2", "378282246310005");
    sim.provision_ok("discover", "d-2", "6011111111111117");
    let took = t.elapsed();
    assert!(
        took < latency,
        "two calls took {took:?} with the latency cleared (it was {latency:?})"
    );

    let bad = sim.post(
        "/sim/faults",
        &json!({"scheme": null, "fail_rate": 1.5, "latency_ms": 0, "kind": "http_503"}),
    );
    assert_eq!(bad.status, 400);
    let bad = sim.post(
        "/sim/faults",
        &json!({"scheme": "jcb", "fail_rate": 0.5, "latency_ms": 0, "kind": "http_503"}),
    );
    assert_eq!(bad.status, 400);
}

/// DESIGN.md `/sim/faults`: `scheme` names the scheme a setting is for
/// (null: every scheme). Settings for two schemes hold side by side, one
/// scheme's own setting wins over the one for every scheme, clearing one
/// scheme leaves the others, and a setting for every scheme replaces all.
#[test]
fn faults_of_different_schemes_hold_side_by_side() {
    let sim = SimProcess::start();
    let fails = |scheme: &str, id: &str, pan: &str| sim.provision(scheme, id, pan).status == 503;
    sim.set_faults(&json!({"scheme": "visa", "fail_rate": 1.0}));
    sim.set_faults(&json!({"scheme": "mastercard", "fail_rate": 1.0, "kind": "http_503"}));
    assert!(fails("visa", "v-1", "4111111111111111"));
    assert!(fails("mastercard", "m-1", "5555555555554444"));
    assert!(!fails("amex", "a-1", "378282246310005"));

    sim.set_faults(&json!({"scheme": "visa", "fail_rate": 0, "latency_ms": 0}));
    assert!(!fails("visa", "v-2", "4111111111111111"));
    assert!(
        fails("mastercard", "m-2", "5555555555554444"),
        "still failing"
    );

    // Every scheme, except one cleared on its own.
    sim.set_faults(&json!({"scheme": null, "fail_rate": 1.0}));
    sim.set_faults(&json!({"scheme": "discover", "fail_rate": 0}));
    assert!(fails("amex", "a-2", "378282246310005"));
    assert!(fails("visa", "v-3", "4111111111111111"));
    assert!(!fails("discover", "d-1", "6011111111111117"));

    // Off for every scheme: everything clear.
    sim.set_faults(&json!({"scheme": null, "fail_rate": 0, "latency_ms": 0, "kind": "http_503"}));
    for (scheme, pan) in [
        ("visa", "4111111111111111"),
        ("mastercard", "5555555555554444"),
        ("amex", "378282246310005"),
        ("discover", "6011111111111117"),
    ] {
        assert!(!fails(scheme, &format!("{scheme}-end"), pan), "{scheme}");
    }
}
