//! Injected lifecycle events and the per-scheme notification feed.

mod common;

use common::{SimProcess, luhn_ok};
use scheme_sim::Scheme;
use serde_json::{Value, json};

fn inject(sim: &SimProcess, token_ref: &str, body: Value) -> u16 {
    let a = sim.post(&format!("/sim/tokens/{token_ref}/events"), &body);
    if a.status == 200 {
        assert_eq!(a.body, json!({}));
    }
    a.status
}

fn feed(sim: &SimProcess, scheme: &str, query: &str) -> Value {
    let a = sim.get(&format!("/tsp/{scheme}/v1/notifications{query}"));
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

#[test]
fn feed_is_ordered_per_scheme_and_paged_by_cursor() {
    let sim = SimProcess::start();
    let v1 = sim.provision_ok("visa", "a", "4111111111111111");
    let v2 = sim.provision_ok("visa", "b", "4012888888881881");
    let mc = sim.provision_ok("mastercard", "c", "5555555555554444");
    let r1 = v1["token_ref"].as_str().expect("ref");
    let r2 = v2["token_ref"].as_str().expect("ref");
    let rm = mc["token_ref"].as_str().expect("ref");

    assert_eq!(feed(&sim, "visa", ""), json!({"events": [], "next": 0}));
    assert_eq!(inject(&sim, r1, json!({"event": "suspend"})), 200);
    assert_eq!(inject(&sim, rm, json!({"event": "suspend"})), 200);
    assert_eq!(
        inject(
            &sim,
            r2,
            json!({"event": "pan_expiry", "exp_month": 4, "exp_year": 2031})
        ),
        200
    );
    assert_eq!(inject(&sim, r1, json!({"event": "resume"})), 200);
    assert_eq!(inject(&sim, r2, json!({"event": "delete"})), 200);

    let all = feed(&sim, "visa", "?after=0");
    let events = all["events"].as_array().expect("events");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(all["next"], 4);
    let kinds: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["token_ref"].as_str().expect("ref"),
                e["event"].as_str().expect("event"),
                e["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            (r1, "suspend", "suspended"),
            (r2, "pan_expiry", "active"),
            (r1, "resume", "active"),
            (r2, "delete", "deleted"),
        ]
    );
    assert_eq!(
        events[1],
        json!({"seq": 2, "token_ref": r2, "event": "pan_expiry", "status": "active",
               "token": null, "exp_month": null, "exp_year": null,
               "pan_exp_month": 4, "pan_exp_year": 2031})
    );
    assert_eq!(events[0]["token"], Value::Null);

    // Paging: limit and cursor.
    let page = feed(&sim, "visa", "?after=1&limit=2");
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!((seqs, page["next"].clone()), (vec![2, 3], json!(3)));
    assert_eq!(
        feed(&sim, "visa", "?after=4"),
        json!({"events": [], "next": 4})
    );
    assert_eq!(
        feed(&sim, "visa", "?after=99"),
        json!({"events": [], "next": 99})
    );

    // Mastercard has its own feed, numbered from 1.
    let m = feed(&sim, "mastercard", "");
    assert_eq!(m["events"][0]["seq"], 1);
    assert_eq!(m["events"][0]["token_ref"], rm);
    assert_eq!(m["events"].as_array().map(Vec::len), Some(1));

    // Statuses changed.
    assert_eq!(sim.token(r1)["status"], "active");
    assert_eq!(sim.token(r2)["status"], "deleted");
    assert_eq!(sim.token(rm)["status"], "suspended");

    // A deleted token takes no more events; unknown tokens are 404.
    assert_eq!(inject(&sim, r2, json!({"event": "resume"})), 409);
    assert_eq!(inject(&sim, "DM4MVInope", json!({"event": "suspend"})), 404);
    assert_eq!(inject(&sim, r1, json!({"event": "pan_expiry"})), 400);
    assert_eq!(inject(&sim, r1, json!({"event": "explode"})), 400);
    assert_eq!(
        feed(&sim, "visa", "")["next"],
        4,
        "refused events are not in the feed"
    );
    assert_eq!(sim.get("/tsp/visa/v1/notifications?after=x").status, 400);
}

#[test]
fn redigitize_changes_number_and_expiry() {
    let sim = SimProcess::start();
    let t = sim.provision_ok("discover", "a", "6011111111111117");
    let tr = t["token_ref"].as_str().expect("ref");
    let old = t["token"].as_str().expect("token");

    // Expiry only.
    assert_eq!(
        inject(
            &sim,
            tr,
            json!({"event": "redigitize", "exp_month": 8, "exp_year": 2033})
        ),
        200
    );
    let e = &feed(&sim, "discover", "")["events"][0];
    assert_eq!(
        (
            e["event"].as_str(),
            e["token"].as_str(),
            e["exp_month"].as_u64(),
            e["exp_year"].as_u64()
        ),
        (Some("redigitize"), Some(old), Some(8), Some(2033))
    );
    assert_eq!(e["pan_exp_month"], Value::Null);

    // New number, expiry kept.
    assert_eq!(
        inject(
            &sim,
            tr,
            json!({"event": "redigitize", "new_token_number": true})
        ),
        200
    );
    let e = &feed(&sim, "discover", "?after=1")["events"][0];
    let new = e["token"].as_str().expect("token");
    assert_ne!(new, old);
    assert!(luhn_ok(new));
    assert_eq!(Scheme::route(new), Some(Scheme::Discover));
    assert_ne!(new[..6], "6011111111111117"[..6]);
    assert_eq!(
        (e["exp_month"].as_u64(), e["exp_year"].as_u64()),
        (Some(8), Some(2033))
    );

    let view = sim.token(tr);
    assert_eq!(
        (
            view["token"].as_str(),
            view["exp_month"].as_u64(),
            view["exp_year"].as_u64()
        ),
        (Some(new), Some(8), Some(2033))
    );

    // The old number no longer authorizes; the new one does (MIT).
    let auth = |number: &str| {
        sim.post(
            "/v1/authorize",
            &json!({"network_token": number, "exp_month": 8, "exp_year": 2033,
            "cryptogram": null, "eci": null, "amount_minor": 100, "currency": "USD"}),
        )
        .body["reason"]
            .clone()
    };
    assert_eq!(auth(old), "token_unknown");
    assert_eq!(auth(new), "approved");
}
