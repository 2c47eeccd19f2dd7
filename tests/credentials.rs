//! `credentials` end to end (issue 4): real vaultd, SoftHSM2 and scheme-sim.
//! Payments authorized at scheme-sim, cryptograms recomputed independently
//! in software, fallbacks, roles, audit, a crash, the PAN rate limit and
//! `vaultctl credentials`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vault_e2e::{
    AMEX, CEILING, DISCOVER, MASTERCARD, TokenEnv, TokenOpts, VISA, as_uid, bin_dir, ceiling_for,
    pan, tokenize, wait_for, wait_for_some, wait_for_state,
};
use vault_proto::client::ClientError;
use vault_proto::ops::{
    self, CredentialKind, Credentials, CredentialsArgs, CredentialsOp, FallbackReason, Initiator,
    NoArgs, TokenStatus,
};
use vault_proto::{BlockingClient, ErrorCode};

const LONG: Duration = CEILING;
/// `poll_interval` of [`TokenOpts::default`]: how often the vault reads
/// the schemes' notification feeds.
const POLL: Duration = Duration::from_secs(1);

/// Tenants and clients beside the harness's root client (uid 0).
const TENANTS: &str = "[[tenant]]\nid = \"t-a\"\nnetwork_tokens = true\n\
[[tenant]]\nid = \"t-b\"\nnetwork_tokens = true\n\
[[tenant]]\nid = \"t-none\"\nnetwork_tokens = true\npan_retention = \"none\"\n";
const CLIENTS: &str = "[[client]]\nname = \"shop-a\"\nuid = 1201\ntenant = \"t-a\"\nroles = [\"merchant\"]\n\
[[client]]\nname = \"fields-a\"\nuid = 1202\ntenant = \"t-a\"\nroles = [\"collector\"]\n\
[[client]]\nname = \"fwd-b\"\nuid = 1203\nroles = [\"forwarder\"]\ntenants = [\"t-b\"]\n\
[[client]]\nname = \"shop-b\"\nuid = 1204\ntenant = \"t-b\"\nroles = [\"merchant\"]\n\
[[client]]\nname = \"fwd-limited\"\nuid = 1205\nroles = [\"forwarder\"]\ntenants = [\"*\"]\npan_credentials_per_minute = 3\n\
[[client]]\nname = \"shop-none\"\nuid = 1206\ntenant = \"t-none\"\nroles = [\"merchant\"]\n";
/// Configured nowhere.
const UNKNOWN_UID: u32 = 1299;

fn start() -> TokenEnv {
    TokenEnv::start(TokenOpts {
        tenants: TENANTS,
        clients: CLIENTS,
        ..TokenOpts::default()
    })
}

fn args(alias: &str, tenant: &str, accept: &[CredentialKind], init: Initiator) -> CredentialsArgs {
    CredentialsArgs {
        alias: alias.to_owned(),
        tenant: tenant.to_owned(),
        accept: accept.to_vec(),
        initiator: init,
        amount_minor: 1250,
        currency: "CHF".into(),
        authenticated_eci: None,
    }
}

const BOTH: &[CredentialKind] = &[CredentialKind::NetworkToken, CredentialKind::Pan];
const TOKEN_ONLY: &[CredentialKind] = &[CredentialKind::NetworkToken];
const PAN_ONLY: &[CredentialKind] = &[CredentialKind::Pan];

/// Customer-initiated, CHF 12.50, tenant `t-a`, token or PAN.
fn cit(alias: &str) -> CredentialsArgs {
    args(alias, "t-a", BOTH, Initiator::Customer)
}

/// A network token answer, taken apart; panics (without card data) otherwise.
struct Nt {
    scheme: String,
    number: String,
    exp_month: u8,
    exp_year: u16,
    cryptogram: Option<String>,
    eci: Option<String>,
    atc: Option<u16>,
    token_ref: String,
}

fn nt(c: Credentials) -> Nt {
    match c {
        Credentials::NetworkToken {
            scheme,
            network_token,
            exp_month,
            exp_year,
            cryptogram,
            eci,
            atc,
            token_ref,
            ..
        } => Nt {
            scheme,
            number: network_token.expose().to_owned(),
            exp_month,
            exp_year,
            cryptogram,
            eci,
            atc,
            token_ref,
        },
        other => panic!("expected a network token, got {other:?}"),
    }
}

fn code(r: Result<Credentials, ClientError>) -> ErrorCode {
    match r {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e
            .code()
            .unwrap_or_else(|| panic!("not a server error: {e}")),
    }
}

/// Tokenizes `p` for `t-a` and waits until its token is active.
fn active_alias(t: &TokenEnv, c: &mut BlockingClient, p: &str) -> (String, String) {
    let alias = tokenize(c, p, 12, 2031).record.alias;
    let r = t.wait_status(c, &alias, LONG);
    let ti = r.token_info.expect("token_info");
    assert_eq!(ti.status, TokenStatus::Active, "{:?}", ti.last_error);
    (alias, ti.token_ref.expect("token_ref"))
}

/// `POST /v1/authorize` → (approved, reason).
fn authorize(t: &TokenEnv, n: &Nt, amount: u64, currency: &str) -> (bool, String) {
    authorize_with(
        t,
        n,
        n.cryptogram.as_deref(),
        n.eci.as_deref(),
        amount,
        currency,
    )
}

fn authorize_with(
    t: &TokenEnv,
    n: &Nt,
    cryptogram: Option<&str>,
    eci: Option<&str>,
    amount: u64,
    currency: &str,
) -> (bool, String) {
    let r = t.sim.post(
        "/v1/authorize",
        &json!({
            "network_token": n.number, "exp_month": n.exp_month, "exp_year": n.exp_year,
            "cryptogram": cryptogram, "eci": eci, "amount_minor": amount, "currency": currency,
        }),
    );
    (
        r["approved"].as_bool().expect("approved"),
        r["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

fn hex16(h: &str) -> [u8; 16] {
    assert_eq!(h.len(), 32);
    let mut k = [0u8; 16];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[2 * i..2 * i + 2], 16).expect("hex");
    }
    k
}

/// The audit records of `op` (one page holds the test's trail), and
/// whether the chain verifies.
fn audit_of(c: &mut BlockingClient, op: &str) -> (Vec<ops::AuditView>, bool) {
    let a = c
        .op::<ops::AuditOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .expect("audit");
    (
        a.records.into_iter().filter(|r| r.op == op).collect(),
        a.chain_ok,
    )
}

// ---------------------------------------------------------------- 1

#[test]
fn customer_payment_is_approved_once_and_merchant_initiated_has_no_cryptogram() {
    let t = start();
    let mut c = t.client();
    let (alias, token_ref) = active_alias(&t, &mut c, VISA);
    let sim = t.sim.get(&format!("/sim/tokens/{token_ref}"));

    let n = nt(c.op::<CredentialsOp>(&cit(&alias)).expect("credentials"));
    assert_eq!(n.scheme, "visa");
    assert_eq!(n.token_ref, token_ref);
    assert_eq!(Some(n.number.as_str()), sim["token"].as_str());
    assert_ne!(n.number, VISA);
    assert_eq!(u64::from(n.exp_month), sim["exp_month"].as_u64().unwrap());
    assert_eq!(u64::from(n.exp_year), sim["exp_year"].as_u64().unwrap());
    assert_eq!(n.eci.as_deref(), Some("07"));
    assert_eq!(n.atc, Some(1));
    let crypt = n.cryptogram.clone().expect("a cryptogram");
    assert_eq!(crypt.len(), 28);

    assert_eq!(authorize(&t, &n, 1250, "CHF"), (true, "approved".into()));
    assert_eq!(
        t.sim.get(&format!("/sim/tokens/{token_ref}"))["last_atc"],
        1
    );
    // The same cryptogram again: a replay.
    assert_eq!(authorize(&t, &n, 1250, "CHF"), (false, "replay".into()));
    // The same cryptogram for another amount or currency: its MAC fails.
    assert_eq!(
        authorize(&t, &n, 1251, "CHF"),
        (false, "cryptogram_invalid".into())
    );
    assert_eq!(
        authorize(&t, &n, 1250, "EUR"),
        (false, "cryptogram_invalid".into())
    );
    // A fresh one is refused for another amount and then approved for its
    // own: the refusal was the amount, not the ATC.
    let n2 = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert_eq!(n2.atc, Some(2));
    assert_ne!(n2.cryptogram, n.cryptogram);
    assert_eq!(
        authorize(&t, &n2, 125_000, "CHF"),
        (false, "cryptogram_invalid".into())
    );
    assert_eq!(
        authorize_with(&t, &n2, n2.cryptogram.as_deref(), Some("05"), 1250, "CHF"),
        (false, "cryptogram_invalid".into()),
        "the ECI is covered by the MAC"
    );
    assert_eq!(authorize(&t, &n2, 1250, "CHF"), (true, "approved".into()));

    // Merchant-initiated: the token, no cryptogram, no ECI, no ATC spent.
    let mit = nt(c
        .op::<CredentialsOp>(&args(&alias, "t-a", BOTH, Initiator::Merchant))
        .unwrap());
    assert_eq!(mit.number, n.number);
    assert_eq!(
        (mit.cryptogram.as_deref(), mit.eci.as_deref(), mit.atc),
        (None, None, None)
    );
    assert_eq!(authorize(&t, &mit, 990, "CHF"), (true, "approved".into()));
    let n3 = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert_eq!(n3.atc, Some(3), "MIT spends no ATC");

    // 3-D Secure ECI passes through and is what the MAC covers.
    let mut a = cit(&alias);
    a.authenticated_eci = Some("05".into());
    let n4 = nt(c.op::<CredentialsOp>(&a).unwrap());
    assert_eq!(n4.eci.as_deref(), Some("05"));
    assert_eq!(authorize(&t, &n4, 1250, "CHF"), (true, "approved".into()));
    // n3 (ATC 3) now comes after ATC 4 was accepted: a replay.
    assert_eq!(authorize(&t, &n3, 1250, "CHF"), (false, "replay".into()));

    // Malformed inputs are refused before any ATC is spent.
    for bad in [
        CredentialsArgs {
            currency: "chf".into(),
            ..cit(&alias)
        },
        CredentialsArgs {
            authenticated_eci: Some("5".into()),
            ..cit(&alias)
        },
    ] {
        assert_eq!(code(c.op::<CredentialsOp>(&bad)), ErrorCode::BadRequest);
    }
    // A receiver that takes nothing: PROTOCOL.md's rule ends in
    // `no_usable_credential`.
    let takes_nothing = CredentialsArgs {
        accept: vec![],
        ..cit(&alias)
    };
    assert_eq!(
        code(c.op::<CredentialsOp>(&takes_nothing)),
        ErrorCode::NoUsableCredential
    );
    let unknown_key = c.call::<_, Value>(
        "credentials",
        &json!({"alias": alias, "tenant": "t-a", "accept": ["pan"], "initiator": "customer",
                "amount_minor": 1, "currency": "CHF", "cvc": "123"}),
    );
    assert_eq!(unknown_key.unwrap_err().code(), Some(ErrorCode::BadRequest));
    assert_eq!(
        nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap()).atc,
        Some(5)
    );
}

#[test]
fn eci_defaults_per_scheme_and_authenticated_eci_passes_through() {
    let t = start();
    let mut c = t.client();
    for (p, scheme, eci) in [
        (VISA, "visa", "07"),
        (MASTERCARD, "mastercard", "06"),
        (AMEX, "amex", "07"),
        (DISCOVER, "discover", "07"),
    ] {
        let (alias, _) = active_alias(&t, &mut c, p);
        let n = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
        assert_eq!(n.scheme, scheme);
        assert_eq!(n.eci.as_deref(), Some(eci), "{scheme}");
        assert_eq!(authorize(&t, &n, 1250, "CHF"), (true, "approved".into()));
        let mut a = cit(&alias);
        a.authenticated_eci = Some("05".into());
        let n = nt(c.op::<CredentialsOp>(&a).unwrap());
        assert_eq!(n.eci.as_deref(), Some("05"), "{scheme}");
        assert_eq!(authorize(&t, &n, 1250, "CHF"), (true, "approved".into()));
    }
}

// ---------------------------------------------------------------- 2

#[test]
fn a_thousand_cryptograms_match_an_independent_software_computation() {
    // The smallest re-initialisation budget: SoftHSM2 is finalised and
    // initialised again (new sessions, handles, key copies) within the
    // thousand, and every cryptogram on either side of it still matches.
    let t = TokenEnv::start(TokenOpts {
        tenants: TENANTS,
        clients: CLIENTS,
        hsm: "reinit_after_objects = 1000",
        ..TokenOpts::default()
    });
    let mut c = t.client();
    let started = Instant::now();
    let mut checked = 0;
    for p in [VISA, MASTERCARD, AMEX, DISCOVER] {
        let (alias, token_ref) = active_alias(&t, &mut c, p);
        let sim = t.sim.get(&format!("/sim/tokens/{token_ref}"));
        let tk = hex16(sim["token_key_hex"].as_str().expect("token_key_hex"));
        let mut last_atc = 0u16;
        for i in 0..250u64 {
            let mut a = cit(&alias);
            a.amount_minor = i * 137 + 1;
            a.currency = ["CHF", "EUR", "USD", "GBP"][(i % 4) as usize].into();
            if i % 5 == 0 {
                a.authenticated_eci = Some(format!("{:02}", i % 8));
            }
            let n = nt(c.op::<CredentialsOp>(&a).unwrap());
            let crypt = n.cryptogram.as_deref().expect("cryptogram");
            let parsed = scheme_sim::cryptogram::parse(crypt).expect("well-formed cryptogram");
            assert_eq!(Some(parsed.atc), n.atc);
            assert_eq!(parsed.atc, last_atc + 1, "ATCs go up by one");
            last_atc = parsed.atc;
            let yymm = format!("{:02}{:02}", n.exp_year % 100, n.exp_month);
            let expected = scheme_sim::cryptogram::compute_base64(
                &tk,
                &n.number,
                &yymm,
                a.amount_minor,
                &a.currency,
                parsed.atc,
                parsed.un,
                n.eci.as_deref().unwrap(),
            );
            // Base64 of 20 bytes: equal strings are equal bytes.
            assert!(expected == crypt, "cryptogram {i} of {} differs", n.scheme);
            checked += 1;
        }
        // The UNs are random: 250 of them are not all equal.
        let n = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
        assert_eq!(n.atc, Some(251));
        assert_eq!(authorize(&t, &n, 1250, "CHF"), (true, "approved".into()));
    }
    assert_eq!(checked, 1000);
    eprintln!("1000 cryptograms checked in {:?}", started.elapsed());
    // The switch to SoftHSM2's standby copy is prepared in the background.
    let (hsm, _) = wait_for_state(CEILING, "a switch to the standby copy", || {
        let hsm = c
            .op::<ops::StatsOp>(&NoArgs {})
            .unwrap()
            .hsm
            .expect("stats.hsm for a PKCS#11 module");
        if hsm.reinitializations >= 1 && hsm.standby_switches >= 1 {
            Ok(hsm)
        } else {
            Err(format!("{hsm:?}"))
        }
    });
    assert_eq!(hsm.reinit_after_objects, 1000);
    assert!(
        hsm.reinitializations >= 1 && hsm.standby_switches >= 1,
        "a session key per cryptogram spends the budget: {hsm:?}"
    );
    assert!(hsm.session_objects < 1000, "{hsm:?}");
    assert!(
        hsm.key_copies_made >= 4,
        "the four token keys are copied: {hsm:?}"
    );
    // Each provisioning ran two background HSM calls (open the PAN; unwrap
    // the key and seal the number), and nothing is left waiting.
    assert!(
        hsm.background_done >= 8 && hsm.background_queued == 0,
        "{hsm:?}"
    );
}

// ---------------------------------------------------------------- 3

#[test]
fn pan_fallbacks_and_no_usable_credential() {
    let t = start();
    let mut c = t.client();
    // The receiver takes only PANs.
    let (alias, _) = active_alias(&t, &mut c, VISA);
    match c
        .op::<CredentialsOp>(&args(&alias, "t-a", PAN_ONLY, Initiator::Customer))
        .unwrap()
    {
        Credentials::Pan {
            scheme,
            pan,
            exp_month,
            exp_year,
            fallback_reason,
        } => {
            assert_eq!(scheme, "visa");
            assert_eq!(pan.expose(), VISA);
            assert_eq!((exp_month, exp_year), (12, 2031));
            assert_eq!(fallback_reason, FallbackReason::ReceiverPanOnly);
        }
        other => panic!("expected the PAN, got {other:?}"),
    }

    // PROTOCOL.md: the token whenever the receiver accepts it and it is
    // active, whatever its place in `accept`.
    let pref = args(
        &alias,
        "t-a",
        &[CredentialKind::Pan, CredentialKind::NetworkToken],
        Initiator::Customer,
    );
    assert_eq!(nt(c.op::<CredentialsOp>(&pref).unwrap()).atc, Some(1));

    // Not eligible: the PAN, "no_token"; a token-only receiver gets nothing.
    t.sim.post(
        "/sim/issuers",
        &json!({"bin_prefix": "400012", "participating": false}),
    );
    let p = pan("400012", 7);
    let ne = tokenize(&mut c, &p, 1, 2031).record.alias;
    let st = t.wait_status(&mut c, &ne, LONG).token_info.unwrap().status;
    assert_eq!(st, TokenStatus::NotEligible);
    match c.op::<CredentialsOp>(&cit(&ne)).unwrap() {
        Credentials::Pan {
            pan,
            fallback_reason,
            ..
        } => {
            assert_eq!(pan.expose(), p);
            assert_eq!(fallback_reason, FallbackReason::NoToken);
        }
        other => panic!("expected the PAN, got {other:?}"),
    }
    assert_eq!(
        code(c.op::<CredentialsOp>(&args(&ne, "t-a", TOKEN_ONLY, Initiator::Customer))),
        ErrorCode::NoUsableCredential
    );

    // Still pending (scheme paused): "no_token" too.
    c.op::<ops::SchemePause>(&ops::SchemeArgs {
        scheme: "amex".into(),
    })
    .unwrap();
    let pending = tokenize(&mut c, AMEX, 3, 2032).record.alias;
    match c.op::<CredentialsOp>(&cit(&pending)).unwrap() {
        Credentials::Pan {
            fallback_reason, ..
        } => assert_eq!(fallback_reason, FallbackReason::NoToken),
        other => panic!("expected the PAN, got {other:?}"),
    }

    // A tenant that keeps no PAN: the token, or nothing.
    let r = t
        .env
        .call_as(
            1206,
            "tokenize",
            &json!({"pan": MASTERCARD, "exp_month": 9, "exp_year": 2031}),
        )
        .expect("tokenize for t-none");
    assert_eq!(r["token_info"]["status"], "active");
    let strict = r["alias"].as_str().unwrap().to_owned();
    assert_eq!(
        code(c.op::<CredentialsOp>(&args(&strict, "t-none", PAN_ONLY, Initiator::Customer))),
        ErrorCode::NoUsableCredential
    );
    let n = nt(c
        .op::<CredentialsOp>(&args(&strict, "t-none", BOTH, Initiator::Customer))
        .unwrap());
    assert_eq!(n.eci.as_deref(), Some("06"));
    assert_eq!(authorize(&t, &n, 1250, "CHF"), (true, "approved".into()));
}

/// Waits until `credentials` stops answering with the network token (the
/// vault read a suspension from the feed).
fn wait_token_unused(
    c: &mut BlockingClient,
    a: &CredentialsArgs,
) -> Result<Credentials, ClientError> {
    wait_for_some(
        ceiling_for(POLL),
        "credentials without the suspended token",
        || {
            let r = c.op::<CredentialsOp>(a);
            (!matches!(r, Ok(Credentials::NetworkToken { .. }))).then_some(r)
        },
    )
}

#[test]
fn token_suspended_at_the_scheme_falls_back_or_leaves_nothing() {
    let t = start();
    let mut c = t.client();
    let (alias, token_ref) = active_alias(&t, &mut c, VISA);
    t.sim.post(
        &format!("/sim/tokens/{token_ref}/events"),
        &json!({"event": "suspend"}),
    );
    match wait_token_unused(&mut c, &cit(&alias)).unwrap() {
        Credentials::Pan {
            pan,
            fallback_reason,
            ..
        } => {
            assert_eq!(pan.expose(), VISA);
            assert_eq!(fallback_reason, FallbackReason::TokenNotActive);
        }
        other => panic!("still the token after suspension: {other:?}"),
    }
    // Suspended token and no PAN (a tenant that keeps none).
    let r = t
        .env
        .call_as(
            1206,
            "tokenize",
            &json!({"pan": MASTERCARD, "exp_month": 9, "exp_year": 2031}),
        )
        .expect("tokenize for t-none");
    let strict = r["alias"].as_str().unwrap().to_owned();
    let strict_ref = r["token_info"]["token_ref"].as_str().unwrap().to_owned();
    t.sim.post(
        &format!("/sim/tokens/{strict_ref}/events"),
        &json!({"event": "suspend"}),
    );
    let a = args(&strict, "t-none", BOTH, Initiator::Customer);
    assert_eq!(
        code(wait_token_unused(&mut c, &a)),
        ErrorCode::NoUsableCredential
    );
    // Resumed: the token again, with an ATC above every one issued.
    t.sim.post(
        &format!("/sim/tokens/{token_ref}/events"),
        &json!({"event": "resume"}),
    );
    wait_for(
        ceiling_for(POLL),
        "the resumed token in credentials",
        || {
            matches!(
                c.op::<CredentialsOp>(&cit(&alias)),
                Ok(Credentials::NetworkToken { .. })
            )
        },
    );
}

// ---------------------------------------------------------------- 4

#[test]
fn only_forwarders_of_the_tenant_get_credentials() {
    let t = start();
    let mut c = t.client();
    let (alias, _) = active_alias(&t, &mut c, VISA);
    let body = |alias: &str, tenant: &str| {
        json!({"alias": alias, "tenant": tenant, "accept": ["network_token", "pan"],
               "initiator": "customer", "amount_minor": 1250, "currency": "CHF"})
    };
    let call = |uid: u32, alias: &str, tenant: &str| {
        t.env
            .call_as(uid, "credentials", &body(alias, tenant))
            .map(|_| ())
            .map_err(|e| e.0)
    };
    assert_eq!(
        call(1201, &alias, "t-a"),
        Err("forbidden".into()),
        "merchant"
    );
    assert_eq!(
        call(1202, &alias, "t-a"),
        Err("forbidden".into()),
        "collector"
    );
    assert_eq!(
        call(UNKNOWN_UID, &alias, "t-a"),
        Err("unauthenticated".into())
    );
    // A forwarder of t-b only.
    assert_eq!(call(1203, &alias, "t-a"), Err("forbidden".into()));
    // Another tenant's alias is not found, whoever asks.
    let b = t
        .env
        .call_as(
            1204,
            "tokenize",
            &json!({"pan": MASTERCARD, "exp_month": 4, "exp_year": 2031}),
        )
        .expect("tokenize for t-b");
    let alias_b = b["alias"].as_str().unwrap().to_owned();
    assert_eq!(
        call(1203, &alias, "t-b"),
        Err("alias_not_found".into()),
        "t-a's alias asked for as t-b"
    );
    assert_eq!(
        code(c.op::<CredentialsOp>(&cit(&alias_b))),
        ErrorCode::AliasNotFound,
        "t-b's alias asked for as t-a"
    );
    assert_eq!(
        code(c.op::<CredentialsOp>(&cit("A0000000000000000000000000000000"))),
        ErrorCode::AliasNotFound
    );
    // The t-b forwarder does get t-b's alias, through the typed client too.
    let got = as_uid(1203, {
        let sock = t.env.socket();
        let a = args(&alias_b, "t-b", PAN_ONLY, Initiator::Customer);
        move || {
            let mut c = BlockingClient::connect(sock).unwrap();
            c.op::<CredentialsOp>(&a)
                .map(|r| matches!(r, Credentials::Pan { .. }))
        }
    });
    assert_eq!(got.ok(), Some(true));
    // The merchant sees neither token number nor cryptogram in its views.
    let rec = t
        .env
        .call_as(1201, "alias_status", &json!({"alias": alias}))
        .unwrap();
    let n = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert!(!rec.to_string().contains(&n.number));

    // Every refusal is audited with its code.
    let (recs, chain_ok) = audit_of(&mut c, "credentials");
    assert!(chain_ok);
    let outcome_of = |uid: u32| -> Vec<&str> {
        recs.iter()
            .filter(|r| r.uid == uid)
            .map(|r| r.outcome.as_str())
            .collect()
    };
    assert_eq!(outcome_of(1201), ["forbidden"]);
    assert_eq!(outcome_of(1202), ["forbidden"]);
    assert_eq!(outcome_of(UNKNOWN_UID), ["unauthenticated"]);
    assert_eq!(
        outcome_of(1203),
        ["forbidden", "alias_not_found", "ok pan receiver_pan_only"]
    );
    assert!(
        recs.iter()
            .filter(|r| r.uid == 1201)
            .all(|r| r.alias.as_deref() == Some(alias.as_str()))
    );
}

// ---------------------------------------------------------------- 5

#[test]
fn every_call_is_audited_and_no_secret_reaches_log_or_disk() {
    let t = start();
    let mut c = t.client();
    let (alias, _) = active_alias(&t, &mut c, VISA);
    let (alias_mc, _) = active_alias(&t, &mut c, MASTERCARD);
    let mut secrets: Vec<String> = vec![VISA.into(), MASTERCARD.into()];
    let mut raw: Vec<Vec<u8>> = Vec::new();
    let mut expected: Vec<(String, String)> = Vec::new();
    for a in [&alias, &alias_mc] {
        for _ in 0..3 {
            let n = nt(c.op::<CredentialsOp>(&cit(a)).unwrap());
            let crypt = n.cryptogram.clone().unwrap();
            raw.push(base64_decode(&crypt));
            secrets.push(crypt);
            secrets.push(n.number.clone());
            expected.push((
                a.clone(),
                format!("ok network_token atc {}", n.atc.unwrap()),
            ));
        }
    }
    let n = nt(c
        .op::<CredentialsOp>(&args(&alias, "t-a", BOTH, Initiator::Merchant))
        .unwrap());
    secrets.push(n.number);
    expected.push((alias.clone(), "ok network_token mit".into()));
    c.op::<CredentialsOp>(&args(&alias, "t-a", PAN_ONLY, Initiator::Customer))
        .unwrap();
    expected.push((alias.clone(), "ok pan receiver_pan_only".into()));
    // Refusals are audited too (by the dispatcher), with the alias.
    assert_eq!(
        code(c.op::<CredentialsOp>(&args(&alias, "t-b", BOTH, Initiator::Customer))),
        ErrorCode::AliasNotFound
    );
    expected.push((alias.clone(), "alias_not_found".into()));
    let n = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert_eq!(n.atc, Some(4));
    secrets.push(n.cryptogram.unwrap());
    expected.push((alias.clone(), "ok network_token atc 4".into()));

    let (recs, chain_ok) = audit_of(&mut c, "credentials");
    assert!(chain_ok);
    let got: Vec<(String, String)> = recs
        .iter()
        .map(|r| (r.alias.clone().unwrap_or_default(), r.outcome.clone()))
        .collect();
    assert_eq!(got, expected);
    assert!(recs.iter().all(|r| r.client == "root" && r.uid == 0));
    for r in &recs {
        for s in &secrets {
            assert!(
                !r.outcome.contains(s.as_str()),
                "a secret in an audit record"
            );
        }
    }

    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    t.env.assert_absent_everywhere(&refs);
    let db = std::fs::read(t.env.db()).unwrap();
    for r in &raw {
        assert!(
            !vault_e2e::contains(&db, r),
            "a cryptogram in the redb file"
        );
        // Its MAC part alone neither.
        assert!(!vault_e2e::contains(&db, &r[7..]));
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for ch in s.bytes().filter(|&b| b != b'=') {
        let v = ALPHABET.iter().position(|&a| a == ch).expect("base64") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

// ---------------------------------------------------------------- 6

/// One issued cryptogram, remembered for the checks after the crash.
#[derive(Clone)]
struct Issued {
    token_ref: String,
    atc: u16,
    nt: Arc<Nt>,
}

fn hammer(
    sock: std::path::PathBuf,
    aliases: Arc<Vec<String>>,
    threads: usize,
    per_thread: Option<usize>,
    out: Arc<Mutex<Vec<Issued>>>,
) -> Vec<std::thread::JoinHandle<usize>> {
    (0..threads)
        .map(|i| {
            let (sock, aliases, out) = (sock.clone(), aliases.clone(), out.clone());
            std::thread::spawn(move || {
                let Ok(mut c) = BlockingClient::connect(&sock) else {
                    return 0;
                };
                let mut k = 0;
                while per_thread.is_none_or(|n| k < n) {
                    let alias = &aliases[(i + k) % aliases.len()];
                    match c.op::<CredentialsOp>(&cit(alias)) {
                        Ok(r) => {
                            let n = nt(r);
                            out.lock().unwrap().push(Issued {
                                token_ref: n.token_ref.clone(),
                                atc: n.atc.expect("atc"),
                                nt: Arc::new(n),
                            });
                        }
                        // The daemon died: stop.
                        Err(ClientError::Io(_) | ClientError::Protocol(_)) => break,
                        Err(e) => panic!("credentials failed: {e}"),
                    }
                    k += 1;
                }
                k
            })
        })
        .collect()
}

/// The ATC journal is folded into the token records every 64 ATCs here
/// (65,536 by default), so the kill lands among folds and trims of the
/// journal, and the restart replays what is left of it over the records.
#[test]
fn sigkill_during_concurrent_payments_never_reissues_an_atc() {
    let mut t = TokenEnv::start(TokenOpts {
        tenants: TENANTS,
        clients: CLIENTS,
        storage: "atc_fold_after = 64",
        ..TokenOpts::default()
    });
    let mut c = t.client();
    let mut aliases = Vec::new();
    for i in 0..10u64 {
        aliases.push(
            tokenize(&mut c, &pan("4000", 70_000 + i), 12, 2031)
                .record
                .alias,
        );
    }
    for a in &aliases {
        assert_eq!(
            t.wait_status(&mut c, a, LONG).token_info.unwrap().status,
            TokenStatus::Active
        );
    }
    drop(c);
    let aliases = Arc::new(aliases);
    let pre = Arc::new(Mutex::new(Vec::new()));
    let handles = hammer(t.env.socket(), aliases.clone(), 16, None, pre.clone());
    wait_for(CEILING, "300 cryptograms before the kill", || {
        pre.lock().unwrap().len() >= 300
    });
    t.daemon().kill9();
    for h in handles {
        h.join().expect("client thread");
    }
    let pre = std::mem::take(&mut *pre.lock().unwrap());
    assert!(pre.len() >= 300, "only {} before the kill", pre.len());
    let log = std::fs::read_to_string(t.env.log_path()).unwrap_or_default();
    assert!(
        log.contains("ATC journal folded"),
        "no fold of the ATC journal before the kill"
    );
    t.restart();

    let post = Arc::new(Mutex::new(Vec::new()));
    for h in hammer(t.env.socket(), aliases.clone(), 16, Some(20), post.clone()) {
        assert_eq!(h.join().unwrap(), 20);
    }
    let post = std::mem::take(&mut *post.lock().unwrap());
    assert_eq!(post.len(), 320);

    let by_token = |v: &[Issued]| {
        let mut m: BTreeMap<String, Vec<Issued>> = BTreeMap::new();
        for i in v {
            m.entry(i.token_ref.clone()).or_default().push(i.clone());
        }
        for l in m.values_mut() {
            l.sort_by_key(|i| i.atc);
        }
        m
    };
    let (pre_t, post_t) = (by_token(&pre), by_token(&post));
    assert_eq!(post_t.len(), 10);
    let mut seen: HashMap<String, HashSet<u16>> = HashMap::new();
    for i in pre.iter().chain(&post) {
        assert!(
            seen.entry(i.token_ref.clone()).or_default().insert(i.atc),
            "ATC {} issued twice",
            i.atc
        );
    }
    for (r, after) in &post_t {
        let before_max = pre_t.get(r).and_then(|l| l.last()).map_or(0, |i| i.atc);
        assert!(
            after[0].atc > before_max,
            "after the restart ATCs must continue above {before_max}, got {}",
            after[0].atc
        );
        // scheme-sim: the last pre-crash cryptogram, then every post-restart
        // one in order, all approved (each ATC above the last accepted).
        if let Some(last) = pre_t.get(r).and_then(|l| l.last()) {
            assert_eq!(
                authorize(&t, &last.nt, 1250, "CHF"),
                (true, "approved".into())
            );
        }
        for i in after {
            assert_eq!(
                authorize(&t, &i.nt, 1250, "CHF"),
                (true, "approved".into()),
                "ATC {}",
                i.atc
            );
        }
        let sim = t.sim.get(&format!("/sim/tokens/{r}"));
        assert_eq!(sim["last_atc"], after.last().unwrap().atc);
    }
    eprintln!(
        "{} cryptograms before the kill, {} after",
        pre.len(),
        post.len()
    );
}

// ---------------------------------------------------------------- 7

#[test]
fn pan_answers_are_rate_limited_per_client() {
    let t = start();
    let mut c = t.client();
    let (alias, _) = active_alias(&t, &mut c, VISA);
    let a = args(&alias, "t-a", PAN_ONLY, Initiator::Customer);
    let results = as_uid(1205, {
        let sock = t.env.socket();
        let a = a.clone();
        let tok = args(&alias, "t-a", BOTH, Initiator::Customer);
        move || {
            let mut c = BlockingClient::connect(sock).unwrap();
            let mut out: Vec<Result<&'static str, vault_proto::WireError>> = Vec::new();
            for _ in 0..4 {
                out.push(
                    c.op::<CredentialsOp>(&a)
                        .map(|_| "pan")
                        .map_err(|e| match e {
                            ClientError::Server(w) => w,
                            other => panic!("{other}"),
                        }),
                );
            }
            // Token answers are not PAN answers: not limited.
            out.push(
                c.op::<CredentialsOp>(&tok)
                    .map(|_| "token")
                    .map_err(|e| match e {
                        ClientError::Server(w) => w,
                        other => panic!("{other}"),
                    }),
            );
            out
        }
    });
    assert!(results[..3].iter().all(|r| r.as_ref().ok() == Some(&"pan")));
    let e = results[3]
        .as_ref()
        .expect_err("the 4th PAN answer is refused");
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.retryable);
    assert_eq!(results[4].as_ref().ok(), Some(&"token"));
    // Other clients have their own (here: no) limit.
    for _ in 0..5 {
        c.op::<CredentialsOp>(&a).expect("root is not limited");
    }
    let (recs, chain_ok) = audit_of(&mut c, "credentials");
    assert!(chain_ok);
    let limited: Vec<_> = recs.iter().filter(|r| r.uid == 1205).collect();
    assert_eq!(limited.len(), 5);
    assert_eq!(limited[3].outcome, "rate_limited");
    assert_eq!(limited[3].alias.as_deref(), Some(alias.as_str()));
    let ev = c.op::<ops::EventsOp>(&ops::PageArgs::default()).unwrap();
    let hits: Vec<_> = ev
        .events
        .iter()
        .filter(|e| e.kind == "pan_rate_limited")
        .collect();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].alias.as_deref(), Some(alias.as_str()));
    assert!(!hits[0].detail.contains(VISA));
}

// ---------------------------------------------------------------- vaultctl

fn vaultctl(t: &TokenEnv, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("vaultctl"))
        .arg("--socket")
        .arg(t.env.socket())
        .args(args)
        .output()
        .expect("run vaultctl");
    assert!(
        out.status.success(),
        "vaultctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// No word of the output looks like a cryptogram (base64, 20+ characters).
fn no_cryptogram_like(out: &str) {
    for w in out.split(|ch: char| ch.is_whitespace() || ch == '"' || ch == ',') {
        let b64 = w
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
        assert!(
            !(b64 && w.len() >= 20 && w.ends_with('=')),
            "cryptogram-like output"
        );
    }
}

#[test]
fn vaultctl_credentials_prints_only_masked_numbers() {
    let t = start();
    let mut c = t.client();
    let (alias, token_ref) = active_alias(&t, &mut c, VISA);
    let number = t.sim.get(&format!("/sim/tokens/{token_ref}"))["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let masked = vault_proto::pan::mask_digits(&number);
    let common = [
        alias.as_str(),
        "--tenant",
        "t-a",
        "--amount",
        "1250",
        "--currency",
        "CHF",
    ];

    let out = vaultctl(&t, &[&["credentials"], &common[..]].concat());
    assert!(!out.contains(&number), "full token number printed");
    assert!(out.contains(&masked), "{out}");
    assert!(out.contains("network_token"));
    assert!(out.contains("cryptogram: present (28 chars)"), "{out}");
    assert!(out.contains("eci              07"), "{out}");
    assert!(out.contains("atc              1"), "{out}");
    no_cryptogram_like(&out);

    let out = vaultctl(
        &t,
        &[&["--json", "credentials"], &common[..], &["--eci", "05"]].concat(),
    );
    assert!(!out.contains(&number));
    no_cryptogram_like(&out);
    let j: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(j["kind"], "network_token");
    assert_eq!(j["masked"], masked.as_str());
    assert_eq!(j["eci"], "05");
    assert_eq!(j["atc"], 2);
    assert_eq!(j["cryptogram_present"], true);
    assert_eq!(j["cryptogram_chars"], 28);
    assert!(j.get("cryptogram").is_none() && j.get("network_token").is_none());

    let out = vaultctl(
        &t,
        &[&["--json", "credentials"], &common[..], &["--mit"]].concat(),
    );
    let j: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(j["cryptogram_present"], false);
    assert!(j["eci"].is_null() && j["atc"].is_null());

    let out = vaultctl(
        &t,
        &[&["credentials"], &common[..], &["--accept", "pan"]].concat(),
    );
    assert!(!out.contains(VISA), "full PAN printed");
    assert!(out.contains("411111xxxxxx1111"), "{out}");
    assert!(out.contains("receiver_pan_only"), "{out}");

    // The MIT and PAN runs spent no ATC: the next one is 3.
    let n = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert_eq!(n.atc, Some(3));
    let _ = c.op::<ops::StatsOp>(&NoArgs {}).unwrap();
}

// ------------------------------------------------------- ATC exhaustion

/// Moves a token's ATC to `atc` in the redb file of a stopped daemon (what
/// 65,000 payments would have done). The ATC journal (`atc_log`, one row of
/// (token_ref, ATC) pairs per group commit) is folded into the records
/// first, as the daemon's fold would, so the record is the token's ATC.
fn set_atc(t: &TokenEnv, token_ref: &str, atc: u16) {
    use redb::ReadableTable;
    use vaultd::store::records::{TokenRec, decode, encode};
    const TOKENS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("tokens");
    const ATC_LOG: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("atc_log");
    let db = redb::Database::open(t.env.db()).expect("open the stopped daemon's database");
    let w = db.begin_write().unwrap();
    {
        let mut tokens = w.open_table(TOKENS).unwrap();
        let mut log = w.open_table(ATC_LOG).unwrap();
        let mut newest = std::collections::BTreeMap::new();
        for row in log.iter().unwrap() {
            let row: Vec<(String, u16)> = decode("atc journal", row.unwrap().1.value()).unwrap();
            newest.extend(row);
        }
        newest.insert(token_ref.to_owned(), atc);
        for (r, atc) in newest {
            let Some(raw) = tokens.get(r.as_str()).unwrap().map(|v| v.value().to_vec()) else {
                continue;
            };
            let mut rec: TokenRec = decode("token", &raw).unwrap();
            rec.atc = atc;
            tokens
                .insert(r.as_str(), encode(&rec).unwrap().as_slice())
                .unwrap();
        }
        log.retain(|_, _| false).unwrap();
    }
    w.commit().unwrap();
}

/// Asks for `alias`'s credentials until its key refresh is done (it may
/// already be): the PAN or nothing meanwhile, never a cryptogram of the old
/// key. Returns the first credentials of the new key.
fn after_key_refresh(c: &mut BlockingClient, alias: &str) -> Nt {
    wait_for_some(LONG, "the key refresh to finish", || {
        match c.op::<CredentialsOp>(&cit(alias)).unwrap() {
            Credentials::Pan { .. } => {
                let only_token = args(alias, "t-a", TOKEN_ONLY, Initiator::Customer);
                let r = c.op::<CredentialsOp>(&only_token);
                if let Ok(c) = r {
                    return Some(nt(c));
                }
                assert_eq!(code(r), ErrorCode::NoUsableCredential);
                None
            }
            other => Some(nt(other)),
        }
    })
}

/// A restored backup never re-issues an ATC. Payments made after the backup
/// spent ATCs the scheme remembers; counting on from the backup's ATC would
/// hand out the same ATCs again (declined as replays at best). After the
/// restore the token's next payment falls back and queues a key refresh;
/// the new key's ATC 1 is approved, and the trail names the restore.
#[test]
fn a_restored_backup_never_reissues_an_atc() {
    let mut t = start();
    let mut c = t.client();
    let (alias, token_ref) = active_alias(&t, &mut c, &pan("4000", 80_011));
    let pay = |c: &mut BlockingClient, want: u16| {
        let n = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
        assert_eq!(n.atc, Some(want));
        assert_eq!(authorize(&t, &n, 1250, "CHF"), (true, "approved".into()));
    };
    for atc in 1..=3 {
        pay(&mut c, atc);
    }
    let backup = t.env.path().join("vault-backup.redb");
    c.op::<ops::BackupOp>(&ops::BackupArgs {
        path: backup.to_string_lossy().into_owned(),
    })
    .expect("backup");
    for atc in 4..=5 {
        pay(&mut c, atc);
    }
    drop(c);

    assert!(t.daemon().terminate().success());
    let out = t
        .env
        .vaultd_cmd(&["restore", "--from", backup.to_str().expect("utf-8")]);
    assert!(out.contains("restored"), "{out}");
    t.restart();
    let mut c = t.client();
    match c.op::<CredentialsOp>(&cit(&alias)).unwrap() {
        Credentials::Pan {
            fallback_reason, ..
        } => assert_eq!(fallback_reason, FallbackReason::TokenNotActive),
        other => panic!("ATC 4 again? expected the PAN, got {other:?}"),
    }
    let fresh = after_key_refresh(&mut c, &alias);
    assert_eq!(fresh.token_ref, token_ref);
    assert_eq!(fresh.atc, Some(1), "the new key starts over at ATC 1");
    assert_eq!(
        authorize(&t, &fresh, 1250, "CHF"),
        (true, "approved".into())
    );
    let (restores, chain_ok) = audit_of(&mut c, "restore");
    assert!(chain_ok);
    assert_eq!(restores.len(), 1, "{restores:?}");
    assert!(
        restores[0].outcome.contains("the ATCs of 1 network tokens"),
        "{:?}",
        restores[0].outcome
    );
}

/// DESIGN.md "Cryptograms": the token whose ATC reached 65,535 makes no
/// more cryptograms; `credentials` falls back as for a non-active token
/// while the queued key refresh runs. Then the new key, unwrapped into the
/// HSM under the same label, makes cryptograms from ATC 1 that scheme-sim
/// approves, and a cryptogram of the old key is refused.
#[test]
fn atc_exhaustion_falls_back_until_the_key_refresh_then_payments_resume() {
    let mut t = start();
    let mut c = t.client();
    let (alias, token_ref) = active_alias(&t, &mut c, &pan("4000", 80_001));
    let n = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert_eq!(n.atc, Some(1));
    assert_eq!(authorize(&t, &n, 1250, "CHF"), (true, "approved".into()));
    drop(c);

    assert!(t.daemon().terminate().success());
    set_atc(&t, &token_ref, u16::MAX - 1);
    t.restart();
    let mut c = t.client();

    // The last ATC of the key.
    let last = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert_eq!(last.atc, Some(u16::MAX));
    assert_eq!(authorize(&t, &last, 1250, "CHF"), (true, "approved".into()));

    // Exhausted: the PAN, as for a token that is not active; a receiver
    // that takes only tokens gets nothing.
    match c.op::<CredentialsOp>(&cit(&alias)).unwrap() {
        Credentials::Pan {
            fallback_reason, ..
        } => assert_eq!(fallback_reason, FallbackReason::TokenNotActive),
        other => panic!("expected the PAN, got {other:?}"),
    }
    let fresh = after_key_refresh(&mut c, &alias);
    assert_eq!(fresh.atc, Some(1), "the new key starts over at ATC 1");
    assert_eq!(fresh.token_ref, token_ref);
    assert_eq!(fresh.number, n.number, "same token, new key");
    assert_eq!(
        authorize(&t, &fresh, 1250, "CHF"),
        (true, "approved".into())
    );
    let next = nt(c.op::<CredentialsOp>(&cit(&alias)).unwrap());
    assert_eq!(next.atc, Some(2));
    assert_eq!(authorize(&t, &next, 1250, "CHF"), (true, "approved".into()));
    // The old key's cryptogram at a higher ATC than any of the new key's:
    // the ATC would pass, the MAC does not.
    assert_eq!(
        authorize(&t, &last, 1250, "CHF"),
        (false, "cryptogram_invalid".into())
    );
    let events = c
        .op::<ops::EventsOp>(&ops::PageArgs {
            after: None,
            limit: 1000,
        })
        .unwrap();
    assert_eq!(
        events
            .events
            .iter()
            .filter(|e| e.kind == "key_refresh_done")
            .count(),
        1,
        "one key refresh"
    );
}
