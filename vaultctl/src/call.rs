//! `vaultctl call OP`: any op by name, args as JSON on stdin, the result
//! printed as JSON with card data masked.

use vault_proto::ops::Opcode;
use vault_proto::{BlockingClient, Pan};

use crate::Failure;
use crate::stdin::{ARGS_MAX, read_stdin_wiped};

pub fn call(c: &mut BlockingClient, op: &str) -> Result<(), Failure> {
    let input = read_stdin_wiped(ARGS_MAX, false)
        .map_err(|e| Failure::Usage(format!("cannot read args from stdin: {e}")))?;
    let mut args: serde_json::Value = if input.trim_ascii().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(&input)
            .map_err(|e| Failure::Usage(format!("args are not JSON: {e}")))?
    };
    drop(input);
    let called = c.call(op, &args);
    // The args may hold a PAN: every string in them is wiped.
    wipe_strings(&mut args);
    let mut r: serde_json::Value = called?;
    redact_card_data(&mut r);
    match serde_json::to_string(&r) {
        Ok(s) => println!("{s}"),
        Err(e) => return Err(Failure::Usage(format!("cannot print: {e}"))),
    }
    Ok(())
}

/// `vaultctl call --help`: every op of the registry and who may call it.
pub fn ops_help() -> String {
    let mut help = String::from("Ops, and the roles that may call them:\n");
    for op in Opcode::ALL {
        let roles: Vec<&str> = op.roles().iter().map(|r| r.as_str()).collect();
        help.push_str(&format!("  {:<20} {}\n", op.name(), roles.join(", ")));
    }
    help
}

/// Wipes every string (and key) of a JSON value before it is dropped.
fn wipe_strings(v: &mut serde_json::Value) {
    use zeroize::Zeroize;
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        serde_json::Value::Object(map) => {
            for (_, field) in map.iter_mut() {
                wipe_strings(field);
            }
        }
        _ => {}
    }
}

/// Masks card data in a result before an operator's terminal sees it: `pan`
/// and `network_token` keep their last four digits (as `Pan` prints them),
/// `cryptogram` is replaced. The forwarder's own client gets the values;
/// an operator CLI has no use for them (PCI DSS 3.4: render PAN unreadable
/// wherever it is displayed).
fn redact_card_data(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &mut *field) {
                    ("pan" | "network_token", serde_json::Value::String(number)) => {
                        // Moved into a `Pan`, which wipes it when dropped.
                        let masked = Pan::new(std::mem::take(number)).masked();
                        *field = serde_json::Value::String(masked);
                    }
                    ("cryptogram", serde_json::Value::String(_)) => {
                        *field = serde_json::Value::String("<redacted>".into());
                    }
                    _ => redact_card_data(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_card_data),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::{ops_help, redact_card_data};

    #[test]
    fn call_help_lists_every_op() {
        let help = ops_help();
        for op in vault_proto::ops::Opcode::ALL {
            assert!(
                help.contains(op.name()),
                "{} missing from {help}",
                op.name()
            );
        }
        assert!(help.contains("credentials          forwarder\n"), "{help}");
    }

    #[test]
    fn call_output_masks_card_data() {
        let mut v = serde_json::json!({
            "kind": "network_token",
            "network_token": "4895370012345678",
            "cryptogram": "AQAHobLD1CBOMRA3qejWCm4/tRI=",
            "nested": [{"pan": "4111111111111111", "last4": "1111"}],
            "alias": "abc",
        });
        redact_card_data(&mut v);
        let text = v.to_string();
        for secret in ["4895370012345678", "4111111111111111", "AQAHobLD"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(v["network_token"].as_str().unwrap().ends_with("5678"));
        assert_eq!(v["nested"][0]["last4"], "1111");
        assert_eq!(v["alias"], "abc");
    }
}
