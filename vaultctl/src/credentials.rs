//! `vaultctl credentials`: payment credentials for an alias, shown
//! redacted for diagnostics (it issues a real cryptogram and spends an ATC).

use clap::Args;
use serde::Serialize;
use vault_proto::BlockingClient;
use vault_proto::ops;

use crate::Failure;
use crate::output::print;

/// The arguments of `vaultctl credentials`.
#[derive(Args)]
pub struct CredentialsCmd {
    alias: String,
    /// The tenant the alias belongs to.
    #[arg(long)]
    tenant: String,
    /// What the receiver takes, in order of preference.
    #[arg(long, value_delimiter = ',', default_value = "network_token,pan")]
    accept: Vec<String>,
    /// Merchant-initiated (no cryptogram, no ECI); default customer-initiated.
    #[arg(long)]
    mit: bool,
    /// Amount in minor units (e.g. 1250 for 12.50).
    #[arg(long)]
    amount: u64,
    /// ISO 4217 alphabetic currency code, e.g. CHF.
    #[arg(long)]
    currency: String,
    /// ECI of a 3-D Secure authentication, passed through.
    #[arg(long)]
    eci: Option<String>,
}

pub fn credentials(c: &mut BlockingClient, json: bool, cmd: CredentialsCmd) -> Result<(), Failure> {
    let args = ops::CredentialsArgs {
        alias: cmd.alias,
        tenant: cmd.tenant,
        accept: parse_accept(&cmd.accept)?,
        initiator: if cmd.mit {
            ops::Initiator::Merchant
        } else {
            ops::Initiator::Customer
        },
        amount_minor: cmd.amount,
        currency: cmd.currency,
        authenticated_eci: cmd.eci,
    };
    // The answer holds the full number and the cryptogram: only its
    // redacted view leaves this block, and the `Pan` zeroizes on drop.
    let redacted = RedactedCredentials::of(&c.op::<ops::CredentialsOp>(&args)?);
    print(json, &redacted, RedactedCredentials::show);
    Ok(())
}

/// What `vaultctl credentials` may show of a `credentials` answer: the
/// number masked, the cryptogram reduced to its presence and length.
#[derive(Serialize)]
struct RedactedCredentials {
    kind: &'static str,
    scheme: String,
    masked: String,
    exp_month: u8,
    exp_year: u16,
    eci: Option<String>,
    atc: Option<u16>,
    cryptogram_present: bool,
    cryptogram_chars: Option<usize>,
    par: Option<String>,
    token_ref: Option<String>,
    fallback_reason: Option<&'static str>,
}

impl RedactedCredentials {
    fn of(c: &ops::Credentials) -> Self {
        match c {
            ops::Credentials::NetworkToken {
                scheme,
                network_token,
                exp_month,
                exp_year,
                cryptogram,
                eci,
                atc,
                par,
                token_ref,
            } => RedactedCredentials {
                kind: "network_token",
                scheme: scheme.clone(),
                masked: network_token.masked(),
                exp_month: *exp_month,
                exp_year: *exp_year,
                eci: eci.clone(),
                atc: *atc,
                cryptogram_present: cryptogram.is_some(),
                cryptogram_chars: cryptogram.as_ref().map(String::len),
                par: par.clone(),
                token_ref: Some(token_ref.clone()),
                fallback_reason: None,
            },
            ops::Credentials::Pan {
                scheme,
                pan,
                exp_month,
                exp_year,
                fallback_reason,
            } => RedactedCredentials {
                kind: "pan",
                scheme: scheme.clone(),
                masked: pan.masked(),
                exp_month: *exp_month,
                exp_year: *exp_year,
                eci: None,
                atc: None,
                cryptogram_present: false,
                cryptogram_chars: None,
                par: None,
                token_ref: None,
                fallback_reason: Some(match fallback_reason {
                    ops::FallbackReason::ReceiverPanOnly => "receiver_pan_only",
                    ops::FallbackReason::NoToken => "no_token",
                    ops::FallbackReason::TokenNotActive => "token_not_active",
                }),
            },
        }
    }

    fn show(&self) {
        let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!("kind             {}", self.kind);
        println!("scheme           {}", self.scheme);
        let label = if self.kind == "pan" {
            "pan"
        } else {
            "network_token"
        };
        println!("{label:<16} {}", self.masked);
        println!("expiry           {:02}/{}", self.exp_month, self.exp_year);
        if self.kind == "network_token" {
            println!("eci              {}", opt(self.eci.clone()));
            println!("atc              {}", opt(self.atc.map(|a| a.to_string())));
            match self.cryptogram_chars {
                Some(n) => println!("cryptogram: present ({n} chars)"),
                None => println!("cryptogram: none"),
            }
            println!("token_ref        {}", opt(self.token_ref.clone()));
            println!("par              {}", opt(self.par.clone()));
        }
        if let Some(r) = self.fallback_reason {
            println!("fallback_reason  {r}");
        }
    }
}

fn parse_accept(kinds: &[String]) -> Result<Vec<ops::CredentialKind>, Failure> {
    kinds
        .iter()
        .map(|k| match k.trim() {
            "network_token" => Ok(ops::CredentialKind::NetworkToken),
            "pan" => Ok(ops::CredentialKind::Pan),
            other => Err(Failure::Usage(format!(
                "--accept {other:?}: expected network_token or pan"
            ))),
        })
        .collect()
}
