//! A token service that lies, against real vaultd, SoftHSM2 and scheme-sim
//! processes: malformed provisioning answers, errors that echo the card
//! number, redirects, oversized bodies, forged feed pages, feed events for
//! another scheme's tokens and malformed feed events. For each, vaultd
//! refuses what it was sent, keeps serving, follows its feeds on, and
//! writes no card or token number to its database or its log.
//!
//! scheme-sim's `POST /sim/hostile` sets the lies (see its `hostile`
//! module). Every wait has a generous ceiling; nothing asserts on time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_e2e::{AMEX, TokenEnv, TokenOpts, VISA, pan, tokenize};
use vault_proto::BlockingClient;
use vault_proto::ops::{self, AliasRecord, EventView, JobState, TokenInfo, TokenStatus};

const LONG: Duration = Duration::from_secs(60);

/// Retries until the service answers well (nothing gives up meanwhile).
const PATIENT: &str = "backoff_initial = \"50ms\"\nbackoff_max = \"500ms\"\nmax_attempts = 100000\npoll_interval = \"500ms\"\nbreaker_threshold = 20\nbreaker_cooldown = \"200ms\"\n";
/// Gives up after three attempts.
const QUICK_TO_FAIL: &str = "backoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\nmax_attempts = 3\npoll_interval = \"500ms\"\nbreaker_threshold = 100\nbreaker_cooldown = \"200ms\"\n";

fn start(provisioning: &'static str) -> TokenEnv {
    TokenEnv::start(TokenOpts {
        provisioning,
        ..TokenOpts::default()
    })
}

/// `POST /sim/hostile` for `scheme`.
fn hostile(t: &TokenEnv, scheme: &str, mut how: Value) {
    how["scheme"] = json!(scheme);
    let answer = t.sim.post("/sim/hostile", &how);
    assert_eq!(answer, json!({}), "scheme-sim refused {how}");
}

fn honest(t: &TokenEnv, scheme: &str) {
    hostile(t, scheme, json!({"kind": "off"}));
}

/// Polls `check` until it gives a value, at most [`LONG`].
fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {LONG:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(c: &mut BlockingClient, alias: &str) -> AliasRecord {
    c.op::<ops::AliasStatus>(&ops::AliasArgs {
        alias: alias.into(),
    })
    .expect("alias_status")
}

fn token_info(c: &mut BlockingClient, alias: &str) -> TokenInfo {
    status(c, alias).token_info.expect("token_info")
}

/// Waits until the alias's token has `want` status.
fn wait_for(c: &mut BlockingClient, alias: &str, want: TokenStatus) -> TokenInfo {
    until(&format!("token {want:?}"), || {
        let ti = token_info(c, alias);
        (ti.status == want).then_some(ti)
    })
}

/// Waits until the alias's token leaves `pending`.
fn settled(c: &mut BlockingClient, alias: &str) -> TokenInfo {
    until("the token settled", || {
        let ti = token_info(c, alias);
        (ti.status != TokenStatus::Pending).then_some(ti)
    })
}

/// Waits until the alias's token is still pending with an error that
/// contains `needle` (the job refused an answer and will retry).
fn wait_refused(c: &mut BlockingClient, alias: &str, needle: &str) -> String {
    until(&format!("a refusal with {needle:?}"), || {
        let ti = token_info(c, alias);
        let e = ti.last_error.clone().unwrap_or_default();
        assert!(
            matches!(ti.status, TokenStatus::Pending),
            "{:?} ({e})",
            ti.status
        );
        e.contains(needle).then_some(e)
    })
}

/// Tokenizes `p` and waits until its token is active: (alias, token_ref,
/// token number at the scheme).
fn active(t: &TokenEnv, c: &mut BlockingClient, p: &str) -> (String, String, String) {
    let alias = tokenize(c, p, 12, 2031).record.alias;
    let ti = wait_for(c, &alias, TokenStatus::Active);
    let token_ref = ti.token_ref.expect("token_ref");
    let number = sim_number(t, &token_ref);
    (alias, token_ref, number)
}

fn sim_number(t: &TokenEnv, token_ref: &str) -> String {
    t.sim.get(&format!("/sim/tokens/{token_ref}"))["token"]
        .as_str()
        .expect("token number")
        .to_owned()
}

fn sim_event(t: &TokenEnv, token_ref: &str, event: &str) {
    let answer = t.sim.post(
        &format!("/sim/tokens/{token_ref}/events"),
        &json!({"event": event}),
    );
    assert_eq!(answer, json!({}));
}

fn all_events(c: &mut BlockingClient) -> Vec<EventView> {
    let mut out = Vec::new();
    loop {
        let page = c
            .op::<ops::EventsOp>(&ops::PageArgs {
                after: out.last().map(|e: &EventView| e.seq),
                limit: 1000,
            })
            .expect("events");
        if page.events.is_empty() {
            return out;
        }
        out.extend(page.events);
    }
}

/// Whether the daemon logged a line with all of `words`.
fn logged(t: &TokenEnv, words: &[&str]) -> bool {
    t.env
        .log()
        .lines()
        .any(|l| words.iter().all(|w| l.contains(w)))
}

/// A customer payment of CHF 12.50 with the alias's network token,
/// authorized at scheme-sim.
fn pay(t: &TokenEnv, c: &mut BlockingClient, alias: &str) -> (bool, String) {
    let p = vault_e2e::pay_with_token(t, c, alias, 1250, "CHF")
        .expect("no network token for a payment");
    (p.approved, p.reason)
}

/// A token number as scheme-sim spoils it, and its first twelve digits
/// (what a panic message or a careless log would show of it).
fn spoiled(number: &str, variant: &str) -> [String; 2] {
    let v: scheme_sim::NumberVariant = serde_json::from_value(json!(variant)).unwrap();
    [scheme_sim::spoil_number(number, v), number[..12].to_owned()]
}

const NUMBER_VARIANTS: [&str; 5] = [
    "non_digit",
    "multibyte",
    "bad_luhn",
    "too_long",
    "too_short",
];

#[test]
fn malformed_token_numbers_in_provisioning_answers_are_refused_and_retried() {
    let t = start(PATIENT);
    let mut c = t.client();
    let mut secrets: Vec<String> = Vec::new();
    for (i, variant) in NUMBER_VARIANTS.into_iter().enumerate() {
        hostile(
            &t,
            "visa",
            json!({"kind": "bad_token_number", "variant": variant}),
        );
        let p = pan("4000", 71_000 + i as u64);
        let alias = tokenize(&mut c, &p, 12, 2031).record.alias;
        let e = wait_refused(&mut c, &alias, "token number");
        assert!(
            e.starts_with("invalid answer from the token service"),
            "{e}"
        );
        // The vault keeps serving: another scheme's card goes through.
        let (_, _, other) = active(&t, &mut c, &pan("5100", 71_000 + i as u64));
        honest(&t, "visa");
        // The job's next attempt (same idempotency key) gets the real answer.
        let ti = wait_for(&mut c, &alias, TokenStatus::Active);
        assert_eq!(ti.last_error, None);
        let number = sim_number(&t, &ti.token_ref.expect("token_ref"));
        assert_eq!(ti.token_last4.as_deref(), Some(&number[number.len() - 4..]));
        secrets.extend(spoiled(&number, variant));
        secrets.extend([p, number, other]);
    }
    assert_eq!(t.sim.get("/sim/stats")["tokens_issued"], 10);
    let all: Vec<&str> = secrets.iter().map(String::as_str).collect();
    t.env.assert_absent_everywhere(&all);
}

#[test]
fn every_malformed_field_of_a_provisioning_answer_fails_the_job_without_card_data() {
    let t = start(QUICK_TO_FAIL);
    let mut c = t.client();
    let mut secrets: Vec<String> = Vec::new();
    let mut failed = Vec::new();
    let fields = [
        ("exp_month", "expiry"),
        ("exp_year", "expiry"),
        ("status", "status"),
        ("par", "par"),
        ("par_with_pan", "card number"),
        ("wrapped_key", "wrapped_key"),
        ("token_ref", "token_ref"),
        ("token_ref_with_pan", "card number"),
    ];
    for (i, (field, named)) in fields.into_iter().enumerate() {
        hostile(&t, "visa", json!({"kind": "bad_field", "field": field}));
        let p = pan("4000", 72_000 + i as u64);
        let alias = tokenize(&mut c, &p, 12, 2031).record.alias;
        let ti = settled(&mut c, &alias);
        assert_eq!(ti.status, TokenStatus::Failed, "{field}");
        let e = ti.last_error.expect("last_error");
        assert!(
            e.starts_with("invalid answer from the token service") && e.contains(named),
            "{field}: {e}"
        );
        assert_eq!(ti.token_ref, None, "{field}");
        let token_ref = t.sim.get("/sim/hostile")["spoiled_token_refs"]
            .as_array()
            .and_then(|a| a.last().cloned())
            .and_then(|r| r.as_str().map(str::to_owned))
            .expect("the spoiled token");
        secrets.extend([p, sim_number(&t, &token_ref)]);
        failed.push(alias);
    }
    honest(&t, "visa");
    // A failed card is provisioned again at an admin's request.
    c.op::<ops::Provision>(&ops::AliasArgs {
        alias: failed[0].clone(),
    })
    .expect("provision again");
    let ti = wait_for(&mut c, &failed[0], TokenStatus::Active);
    secrets.push(sim_number(&t, &ti.token_ref.expect("token_ref")));
    let all: Vec<&str> = secrets.iter().map(String::as_str).collect();
    t.env.assert_absent_everywhere(&all);
}

#[test]
fn an_error_that_echoes_the_card_or_token_number_is_recorded_as_unrecognised() {
    let t = start(PATIENT);
    let mut c = t.client();
    let p = pan("4000", 73_000);
    let spaced = |d: &str| {
        d.as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    };

    hostile(&t, "visa", json!({"kind": "echo_pan_in_error"}));
    let alias = tokenize(&mut c, &p, 12, 2031).record.alias;
    let ti = settled(&mut c, &alias);
    assert_eq!(ti.status, TokenStatus::Failed);
    assert_eq!(ti.last_error.as_deref(), Some("unrecognised (HTTP 422)"));

    // A delete the service answers with the token number.
    honest(&t, "visa");
    let (alias2, _, number) = active(&t, &mut c, &pan("4000", 73_001));
    hostile(&t, "visa", json!({"kind": "echo_pan_in_error"}));
    c.op::<ops::DeleteAlias>(&ops::AliasArgs { alias: alias2 })
        .expect("delete_alias");
    let job = until("the delete job refused", || {
        let q = c
            .op::<ops::QueueListOp>(&ops::QueueListArgs {
                state: Some(JobState::Failed),
                limit: 100,
                after: None,
            })
            .expect("queue_list");
        q.jobs.into_iter().find(|j| j.kind == "delete")
    });
    assert_eq!(job.last_error.as_deref(), Some("unrecognised (HTTP 409)"));

    for e in all_events(&mut c) {
        assert!(!e.detail.contains(&p[6..]) && !e.detail.contains(&number[6..]));
    }
    let (sp, sn) = (spaced(&p), spaced(&number));
    t.env
        .assert_absent_everywhere(&[&p, &number, &sp, &sn, &p[..12], &number[..12]]);
}

#[test]
fn redirects_are_not_followed() {
    let t = start(PATIENT);
    let mut c = t.client();
    let p = pan("4000", 74_000);
    hostile(&t, "visa", json!({"kind": "redirect"}));
    let alias = tokenize(&mut c, &p, 12, 2031).record.alias;
    let e = wait_refused(&mut c, &alias, "redirect");
    assert!(e.contains("HTTP 307"), "{e}");
    // The feed is redirected too.
    until("the feed's redirect refused", || {
        logged(
            &t,
            &["notification feed not read", "scheme=\"visa\"", "redirect"],
        )
        .then_some(())
    });
    assert_eq!(t.sim.get("/sim/hostile")["redirect_sink_hits"], 0);
    honest(&t, "visa");
    let ti = wait_for(&mut c, &alias, TokenStatus::Active);
    assert_eq!(t.sim.get("/sim/hostile")["redirect_sink_hits"], 0);
    let number = sim_number(&t, &ti.token_ref.expect("token_ref"));
    t.env.assert_absent_everywhere(&[&p, &number]);
}

#[test]
fn oversized_answers_and_feed_pages_are_cut_off() {
    let t = start(PATIENT);
    let mut c = t.client();
    // Provisioning answers past 64 KiB, with and without a declared length.
    let mut secrets = Vec::new();
    for (i, chunked) in [false, true].into_iter().enumerate() {
        hostile(&t, "visa", json!({"kind": "huge_body", "chunked": chunked}));
        let p = pan("4000", 75_000 + i as u64);
        let alias = tokenize(&mut c, &p, 12, 2031).record.alias;
        wait_refused(&mut c, &alias, "larger than 64 KiB");
        honest(&t, "visa");
        let ti = wait_for(&mut c, &alias, TokenStatus::Active);
        secrets.extend([p, sim_number(&t, &ti.token_ref.expect("token_ref"))]);
    }

    // A feed page past 1 MiB: refused until it shrinks, then applied.
    let (alias, token_ref, number) = active(&t, &mut c, &pan("4000", 75_010));
    hostile(&t, "visa", json!({"kind": "huge_body", "chunked": true}));
    sim_event(&t, &token_ref, "suspend");
    until("the oversized feed page refused", || {
        logged(
            &t,
            &[
                "notification feed not read",
                "scheme=\"visa\"",
                "larger than 1024 KiB",
            ],
        )
        .then_some(())
    });
    assert_eq!(token_info(&mut c, &alias).status, TokenStatus::Active);
    honest(&t, "visa");
    wait_for(&mut c, &alias, TokenStatus::Suspended);
    secrets.push(number);
    let all: Vec<&str> = secrets.iter().map(String::as_str).collect();
    t.env.assert_absent_everywhere(&all);
}

#[test]
fn feed_pages_with_too_many_events_or_a_forged_cursor_are_refused() {
    let t = start(PATIENT);
    let mut c = t.client();
    let (alias, token_ref, number) = active(&t, &mut c, &pan("4000", 76_000));

    hostile(&t, "visa", json!({"kind": "too_many_events"}));
    until("the page of too many events refused", || {
        logged(
            &t,
            &[
                "notification feed not read",
                "scheme=\"visa\"",
                "more events than asked",
            ],
        )
        .then_some(())
    });
    // A page that skips ahead of its own events.
    hostile(&t, "visa", json!({"kind": "bad_cursor"}));
    sim_event(&t, &token_ref, "suspend");
    until("the forged cursor refused", || {
        logged(
            &t,
            &[
                "notification feed not read",
                "scheme=\"visa\"",
                "next cursor",
            ],
        )
        .then_some(())
    });
    assert_eq!(token_info(&mut c, &alias).status, TokenStatus::Active);
    honest(&t, "visa");
    // Nothing was skipped: the suspend and a later delete both apply.
    wait_for(&mut c, &alias, TokenStatus::Suspended);
    sim_event(&t, &token_ref, "delete");
    wait_for(&mut c, &alias, TokenStatus::Deleted);
    let kinds: Vec<String> = all_events(&mut c).into_iter().map(|e| e.kind).collect();
    assert!(
        !kinds.iter().any(|k| k == "notification_parked"),
        "events of a refused page were kept: {kinds:?}"
    );
    t.env.assert_absent_everywhere(&[&number]);
}

#[test]
fn malformed_feed_events_are_ignored_and_the_follower_goes_on() {
    let t = start(PATIENT);
    let mut c = t.client();
    let p = pan("4000", 77_000);
    let (alias, token_ref, number) = active(&t, &mut c, &p);
    let last4 = token_info(&mut c, &alias).token_last4;
    let mut secrets = vec![p.clone(), number.clone()];
    for variant in NUMBER_VARIANTS {
        hostile(
            &t,
            "visa",
            json!({"kind": "redigitize_bad_token_number", "token_ref": token_ref, "variant": variant}),
        );
        secrets.extend(spoiled(&number, variant));
    }
    for name in [p.as_str(), number.as_str(), "reissue"] {
        hostile(
            &t,
            "visa",
            json!({"kind": "unknown_event", "token_ref": token_ref, "name": name}),
        );
    }
    // Good events after the bad ones still apply: the follower lives.
    sim_event(&t, &token_ref, "suspend");
    wait_for(&mut c, &alias, TokenStatus::Suspended);
    sim_event(&t, &token_ref, "delete");
    let ti = wait_for(&mut c, &alias, TokenStatus::Deleted);
    assert_eq!(ti.token_last4, last4, "a malformed new number was taken");

    let ignored: Vec<String> = all_events(&mut c)
        .into_iter()
        .filter(|e| e.kind == "notification_ignored")
        .map(|e| e.detail)
        .collect();
    let count = |s: &str| ignored.iter().filter(|d| d.contains(s)).count();
    assert_eq!(count("invalid event: the token number"), 5, "{ignored:?}");
    assert_eq!(count("unknown event \"unrecognised\""), 2, "{ignored:?}");
    assert_eq!(count("unknown event \"reissue\""), 1, "{ignored:?}");
    let all: Vec<&str> = secrets.iter().map(String::as_str).collect();
    t.env.assert_absent_everywhere(&all);
}

#[test]
fn a_feed_event_for_another_schemes_token_changes_nothing() {
    let t = start(PATIENT);
    let mut c = t.client();
    let (visa_alias, visa_ref, visa_number) = active(&t, &mut c, VISA);
    let (amex_alias, amex_ref, amex_number) = active(&t, &mut c, AMEX);

    // The amex feed suspends and deletes the visa token.
    for event in ["suspend", "delete"] {
        hostile(
            &t,
            "amex",
            json!({"kind": "cross_scheme_event", "token_ref": visa_ref, "event": event}),
        );
    }
    let ignored = until("both events ignored", || {
        let found: Vec<EventView> = all_events(&mut c)
            .into_iter()
            .filter(|e| e.kind == "notification_ignored" && e.scheme.as_deref() == Some("amex"))
            .collect();
        (found.len() == 2).then_some(found)
    });
    for e in &ignored {
        assert!(e.detail.contains("another scheme"), "{e:?}");
        assert_eq!(e.alias.as_deref(), Some(visa_alias.as_str()));
    }
    // The visa token is untouched: active, and it pays.
    assert_eq!(token_info(&mut c, &visa_alias).status, TokenStatus::Active);
    assert_eq!(pay(&t, &mut c, &visa_alias), (true, "approved".into()));

    // The same event arriving before the vault has the token (it is parked
    // until the provisioning commits) is ignored at that commit.
    hostile(&t, "visa", json!({"kind": "bad_field", "field": "status"}));
    let p2 = pan("4000", 78_000);
    let alias2 = tokenize(&mut c, &p2, 12, 2031).record.alias;
    wait_refused(&mut c, &alias2, "status");
    let ref2 = t.sim.get("/sim/hostile")["spoiled_token_refs"]
        .as_array()
        .and_then(|a| a.last().cloned())
        .and_then(|r| r.as_str().map(str::to_owned))
        .expect("the spoiled token");
    hostile(
        &t,
        "amex",
        json!({"kind": "cross_scheme_event", "token_ref": ref2, "event": "delete"}),
    );
    until("the event parked", || {
        all_events(&mut c)
            .iter()
            .any(|e| e.kind == "notification_parked" && e.detail.contains(&ref2))
            .then_some(())
    });
    honest(&t, "visa");
    let ti = wait_for(&mut c, &alias2, TokenStatus::Active);
    assert_eq!(ti.token_ref.as_deref(), Some(ref2.as_str()));
    until("the parked event ignored", || {
        all_events(&mut c)
            .iter()
            .any(|e| {
                e.kind == "notification_ignored" && e.alias.as_deref() == Some(alias2.as_str())
            })
            .then_some(())
    });
    assert_eq!(token_info(&mut c, &alias2).status, TokenStatus::Active);
    assert_eq!(pay(&t, &mut c, &alias2), (true, "approved".into()));
    // The amex feed moved past what it ignored: its own events apply.
    sim_event(&t, &amex_ref, "suspend");
    wait_for(&mut c, &amex_alias, TokenStatus::Suspended);
    let number2 = sim_number(&t, &ref2);
    t.env
        .assert_absent_everywhere(&[VISA, AMEX, &p2, &visa_number, &amex_number, &number2]);
}
