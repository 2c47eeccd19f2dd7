//! `POST /v1/authorize` with cryptograms computed by the software reference.

mod common;

use common::SimProcess;
use scheme_sim::cryptogram;
use serde_json::{Value, json};

struct Card {
    token_ref: String,
    number: String,
    exp_month: u64,
    exp_year: u64,
    key: [u8; 16],
}

fn card(sim: &SimProcess, scheme: &str, key: &str, pan: &str) -> Card {
    let r = sim.provision_ok(scheme, key, pan);
    let token_ref = r["token_ref"].as_str().expect("ref").to_owned();
    let view = sim.token(&token_ref);
    let key: [u8; 16] = hex::decode(view["token_key_hex"].as_str().expect("key"))
        .expect("hex")
        .try_into()
        .expect("16 bytes");
    Card {
        token_ref,
        number: r["token"].as_str().expect("token").to_owned(),
        exp_month: r["exp_month"].as_u64().expect("month"),
        exp_year: r["exp_year"].as_u64().expect("year"),
        key,
    }
}

impl Card {
    fn yymm(&self) -> String {
        format!("{:02}{:02}", self.exp_year % 100, self.exp_month)
    }

    fn cryptogram(&self, amount: u64, currency: &str, atc: u16, eci: &str) -> String {
        cryptogram::compute_base64(
            &self.key,
            &self.number,
            &self.yymm(),
            amount,
            currency,
            atc,
            [0xde, 0xad, 0xbe, atc as u8],
            eci,
        )
    }

    fn request(&self, cryptogram: Option<&str>, amount: u64, currency: &str) -> Value {
        json!({"network_token": self.number, "exp_month": self.exp_month, "exp_year": self.exp_year,
               "cryptogram": cryptogram, "eci": cryptogram.map(|_| "05"), "amount_minor": amount,
               "currency": currency})
    }
}

fn authorize(sim: &SimProcess, body: &Value) -> (bool, String) {
    let a = sim.post("/v1/authorize", body);
    assert_eq!(a.status, 200, "{}", a.body);
    (
        a.body["approved"].as_bool().expect("approved"),
        a.body["reason"].as_str().expect("reason").to_owned(),
    )
}

fn approved() -> (bool, String) {
    (true, "approved".into())
}

fn declined(reason: &str) -> (bool, String) {
    (false, reason.into())
}

#[test]
fn cryptograms_are_checked_and_atcs_never_reused() {
    let sim = SimProcess::start();
    let c = card(&sim, "visa", "k", "4111111111111111");

    let c1 = c.cryptogram(1250, "CHF", 1, "05");
    assert_eq!(
        authorize(&sim, &c.request(Some(&c1), 1250, "CHF")),
        approved()
    );
    assert_eq!(sim.token(&c.token_ref)["last_atc"], 1);
    // Replay of the same cryptogram.
    assert_eq!(
        authorize(&sim, &c.request(Some(&c1), 1250, "CHF")),
        declined("replay")
    );

    // Wrong amount or currency breaks the MAC.
    let c2 = c.cryptogram(1250, "CHF", 2, "05");
    assert_eq!(
        authorize(&sim, &c.request(Some(&c2), 1251, "CHF")),
        declined("cryptogram_invalid")
    );
    assert_eq!(
        authorize(&sim, &c.request(Some(&c2), 1250, "EUR")),
        declined("cryptogram_invalid")
    );
    // A refused cryptogram does not consume its ATC.
    assert_eq!(sim.token(&c.token_ref)["last_atc"], 1);
    assert_eq!(
        authorize(&sim, &c.request(Some(&c2), 1250, "CHF")),
        approved()
    );

    // ATCs may skip but never go back.
    let c9 = c.cryptogram(500, "USD", 9, "05");
    assert_eq!(
        authorize(&sim, &c.request(Some(&c9), 500, "USD")),
        approved()
    );
    let c5 = c.cryptogram(500, "USD", 5, "05");
    assert_eq!(
        authorize(&sim, &c.request(Some(&c5), 500, "USD")),
        declined("replay")
    );
    assert_eq!(sim.token(&c.token_ref)["last_atc"], 9);

    // Wrong ECI, wrong key.
    let mut body = c.request(Some(&c.cryptogram(1, "USD", 10, "05")), 1, "USD");
    body["eci"] = json!("07");
    assert_eq!(authorize(&sim, &body), declined("cryptogram_invalid"));
    let other = card(&sim, "visa", "k2", "4012888888881881");
    let foreign = other.cryptogram(1, "USD", 10, "05");
    assert_eq!(
        authorize(&sim, &c.request(Some(&foreign), 1, "USD")),
        declined("cryptogram_invalid")
    );

    // Malformed cryptograms and a missing ECI.
    let mut bad = hex::decode("020007a1b2c3d4204e311037a9e8d60a6e3fb512").expect("hex");
    assert_eq!(
        authorize(&sim, &c.request(Some(&base64_std(&bad)), 1, "USD")),
        declined("cryptogram_malformed")
    );
    bad[0] = 1;
    bad.push(0);
    assert_eq!(
        authorize(&sim, &c.request(Some(&base64_std(&bad)), 1, "USD")),
        declined("cryptogram_malformed")
    );
    assert_eq!(
        authorize(&sim, &c.request(Some("not base64"), 1, "USD")),
        declined("cryptogram_malformed")
    );
    let mut body = c.request(Some(&c.cryptogram(1, "USD", 11, "05")), 1, "USD");
    body["eci"] = Value::Null;
    assert_eq!(authorize(&sim, &body), declined("cryptogram_malformed"));

    // Key refresh: ATC starts over under the new key.
    let a = sim.post(
        &format!("/tsp/visa/v1/tokens/{}/key", c.token_ref),
        &json!({}),
    );
    assert_eq!(a.status, 200);
    let fresh = card_after_refresh(&sim, &c);
    let r1 = fresh.cryptogram(100, "USD", 1, "05");
    assert_eq!(
        authorize(&sim, &fresh.request(Some(&r1), 100, "USD")),
        approved()
    );
}

fn card_after_refresh(sim: &SimProcess, c: &Card) -> Card {
    let view = sim.token(&c.token_ref);
    Card {
        token_ref: c.token_ref.clone(),
        number: c.number.clone(),
        exp_month: c.exp_month,
        exp_year: c.exp_year,
        key: hex::decode(view["token_key_hex"].as_str().expect("key"))
            .expect("hex")
            .try_into()
            .expect("16 bytes"),
    }
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn merchant_initiated_status_and_expiry_checks() {
    let sim = SimProcess::start();
    let c = card(&sim, "mastercard", "k", "5555555555554444");

    // MIT: no cryptogram.
    assert_eq!(authorize(&sim, &c.request(None, 999, "EUR")), approved());
    assert_eq!(sim.token(&c.token_ref)["last_atc"], 0);

    let mut body = c.request(None, 999, "EUR");
    body["exp_month"] = json!(c.exp_month % 12 + 1);
    assert_eq!(authorize(&sim, &body), declined("expiry_mismatch"));
    body["exp_month"] = json!(c.exp_month);
    body["exp_year"] = json!(c.exp_year + 1);
    assert_eq!(authorize(&sim, &body), declined("expiry_mismatch"));

    let mut unknown = c.request(None, 1, "EUR");
    unknown["network_token"] = json!("5204730000000000");
    assert_eq!(authorize(&sim, &unknown), declined("token_unknown"));

    // Suspended (requestor or issuer), then deleted.
    let path = |a: &str| format!("/tsp/mastercard/v1/tokens/{}/{a}", c.token_ref);
    sim.post(&path("suspend"), &json!({}));
    let good = c.cryptogram(10, "EUR", 1, "05");
    assert_eq!(
        authorize(&sim, &c.request(Some(&good), 10, "EUR")),
        declined("token_not_active")
    );
    assert_eq!(
        authorize(&sim, &c.request(None, 10, "EUR")),
        declined("token_not_active")
    );
    sim.post(&path("resume"), &json!({}));
    assert_eq!(
        authorize(&sim, &c.request(Some(&good), 10, "EUR")),
        approved()
    );
    sim.post(
        &format!("/sim/tokens/{}/events", c.token_ref),
        &json!({"event": "suspend"}),
    );
    assert_eq!(
        authorize(&sim, &c.request(None, 10, "EUR")),
        declined("token_not_active")
    );
    sim.post(
        &format!("/sim/tokens/{}/events", c.token_ref),
        &json!({"event": "delete"}),
    );
    assert_eq!(
        authorize(&sim, &c.request(None, 10, "EUR")),
        declined("token_not_active")
    );

    // An expired token: redigitized to a past expiry.
    let d = card(&sim, "discover", "k", "6011111111111117");
    let a = sim.post(
        &format!("/sim/tokens/{}/events", d.token_ref),
        &json!({"event": "redigitize", "exp_month": 1, "exp_year": 2020}),
    );
    assert_eq!(a.status, 200);
    let mut body = d.request(None, 1, "USD");
    body["exp_month"] = json!(1);
    body["exp_year"] = json!(2020);
    assert_eq!(authorize(&sim, &body), declined("token_expired"));

    let bad = sim.post("/v1/authorize", &json!({"network_token": "1"}));
    assert_eq!(bad.status, 400);
}
