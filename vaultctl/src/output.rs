//! Printing results: `--json` prints the answer as the daemon gave it
//! (pretty), otherwise each command's human lines; and the pieces several
//! commands print the same way.

use serde::Serialize;
use vault_proto::ops;

/// Prints `v` as JSON when `json`, else with `human`.
pub fn print<T: Serialize>(json: bool, v: &T, human: impl FnOnce(&T)) {
    if json {
        match serde_json::to_string_pretty(v) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("vaultctl: cannot print JSON: {e}"),
        }
    } else {
        human(v)
    }
}

pub fn fmt_ms(ms: u64) -> String {
    // Seconds since the epoch are enough for operators and scripts alike.
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// An alias's record: `tokenize`, `status`, `provision`, `remove-pan`.
pub fn show_record(r: &ops::AliasRecord) {
    println!("alias        {}", r.alias);
    println!(
        "card         {} {} exp {:02}/{}{}",
        r.card.scheme,
        r.masked,
        r.card.exp_month,
        r.card.exp_year,
        if r.card.pan_removed {
            " (PAN removed)"
        } else {
            ""
        }
    );
    println!("fingerprint  {}", r.fingerprint);
    match &r.token_info {
        None => println!("token        none"),
        Some(t) => {
            println!("token        {} {}", t.scheme, t.status.as_str());
            if let Some(r) = &t.token_ref {
                println!("token_ref    {r}");
            }
            if let (Some(l4), Some(m), Some(y)) = (&t.token_last4, t.exp_month, t.exp_year) {
                println!("token        ...{l4} exp {m:02}/{y}");
            }
            if let Some(e) = &t.last_error {
                println!("last_error   {e}");
            }
        }
    }
}
