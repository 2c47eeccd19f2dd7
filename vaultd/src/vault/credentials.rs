//! `credentials`: what the in-scope forwarder sends a payment with. The
//! network token with a fresh cryptogram when the receiver takes tokens and
//! the token is active, else the PAN where it is kept, decided here only.
//!
//! Cryptogram (DESIGN.md, normative): the ATC is committed durably first
//! (so no ATC is ever issued twice), then inside the HSM a session key is
//! derived from the token key and the ATC, and an AES-CMAC over the
//! payment data gives the MAC; bytes `0x01 ‖ ATC ‖ UN ‖ MAC[0..13]`, base64.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use vault_hsm::Hsm;
use vault_proto::ops::{
    self, CredentialKind, Credentials, CredentialsArgs, FallbackReason, Handle, Initiator,
    TokenStatus,
};
use vault_proto::{ErrorCode, Pan};
use zeroize::Zeroizing;

use super::cards::now_ms;
use super::{Caller, Vault, VaultError, VaultResult};
use crate::store::records::EventRec;
use crate::store::{AtcOutcome, Store};

/// Per-client fixed-window counter of PAN-returning answers (PCI
/// tokenization guidelines: monitor and limit de-tokenization).
#[derive(Default)]
pub struct PanLimiter {
    windows: Mutex<HashMap<String, (u64, u32)>>,
}

impl PanLimiter {
    /// Counts one answer; false when the client is over its rate.
    fn allow(&self, client: &str, per_minute: u32, now: u64) -> bool {
        let Ok(mut w) = self.windows.lock() else {
            return false;
        };
        let slot = w.entry(client.to_owned()).or_insert((now, 0));
        if now.saturating_sub(slot.0) >= 60_000 {
            *slot = (now, 0);
        }
        if slot.1 >= per_minute {
            return false;
        }
        slot.1 += 1;
        true
    }
}

/// The payment data the MAC covers (DESIGN.md "Cryptograms"). It holds the
/// token number in clear, so it is wiped when dropped.
pub fn cryptogram_data(
    token: &str,
    exp_yymm: &str,
    amount_minor: u64,
    currency: &str,
    atc: u16,
    un: [u8; 4],
    eci: &str,
) -> Zeroizing<Vec<u8>> {
    let mut d = Zeroizing::new(Vec::with_capacity(2 + token.len() + 4 + 8 + 3 + 2 + 4 + 2));
    d.push(0x01);
    d.push(token.len() as u8);
    d.extend_from_slice(token.as_bytes());
    d.extend_from_slice(exp_yymm.as_bytes());
    d.extend_from_slice(&amount_minor.to_be_bytes());
    d.extend_from_slice(currency.as_bytes());
    d.extend_from_slice(&atc.to_be_bytes());
    d.extend_from_slice(&un);
    d.extend_from_slice(eci.as_bytes());
    d
}

/// `0x01 ‖ ATC ‖ UN ‖ MAC[0..13]`, standard base64 with padding.
pub fn cryptogram_string(atc: u16, un: [u8; 4], mac: &[u8; 16]) -> String {
    let mut c = [0u8; 20];
    c[0] = 0x01;
    c[1..3].copy_from_slice(&atc.to_be_bytes());
    c[3..7].copy_from_slice(&un);
    c[7..].copy_from_slice(&mac[..13]);
    base64::engine::general_purpose::STANDARD.encode(c)
}

/// Default ECI of a customer-initiated payment without 3-D Secure. A
/// stored token's scheme is always a known one (configuration refuses
/// others); "07" stands for any other.
fn default_eci(scheme: &str) -> &'static str {
    scheme
        .parse::<vault_proto::Scheme>()
        .map_or("07", vault_proto::Scheme::default_eci)
}

impl<S: Store, H: Hsm> Vault<S, H> {
    pub async fn credentials(
        &self,
        caller: &Caller,
        a: CredentialsArgs,
    ) -> VaultResult<Credentials> {
        let serves = caller
            .tenants
            .as_ref()
            .is_none_or(|ts| ts.contains(&a.tenant));
        if !serves {
            return Err(VaultError::refuse(
                ErrorCode::Forbidden,
                "this forwarder does not serve that tenant",
            ));
        }
        // An empty `accept` takes nothing: PROTOCOL.md's rule ends in
        // `no_usable_credential` for it, like any receiver we cannot serve.
        if a.currency.len() != 3 || !a.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                "`currency` must be three upper-case letters (ISO 4217)",
            ));
        }
        if let Some(e) = &a.authenticated_eci
            && (e.len() != 2 || !e.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                "`authenticated_eci` must be two digits",
            ));
        }
        let v = self.alias_of_tenant(&a.tenant, &a.alias)?;
        let wants_token = a.accept.contains(&CredentialKind::NetworkToken);
        let wants_pan = a.accept.contains(&CredentialKind::Pan);

        let token_active = v
            .token
            .as_ref()
            .is_some_and(|t| t.status == TokenStatus::Active);
        if wants_token
            && token_active
            && let (Some(t), Some(token_ref)) = (
                &v.token,
                v.rec.nt.as_ref().and_then(|n| n.token_ref.clone()),
            )
        {
            let audit = caller.audit("credentials", Some(a.alias.clone()), "ok network_token");
            match a.initiator {
                Initiator::Merchant => {
                    // No cryptogram, no ATC: only the record of the call.
                    let mut audit = audit;
                    audit.outcome = "ok network_token mit".into();
                    self.store.audit(audit).await?;
                    let (alias, ct) = (a.alias.clone(), t.token_ct.clone());
                    let number = self
                        .hsm(move |h| h.open(&alias, "token", &ct))
                        .await
                        .map(|p| Pan::from_bytes(&p))?
                        .ok_or_else(|| {
                            VaultError::refuse(ErrorCode::Internal, "stored token is not text")
                        })?;
                    return Ok(Credentials::NetworkToken {
                        scheme: t.scheme.clone(),
                        network_token: number,
                        exp_month: t.exp_month,
                        exp_year: t.exp_year,
                        cryptogram: None,
                        eci: None,
                        atc: None,
                        par: t.par.clone(),
                        token_ref,
                    });
                }
                Initiator::Customer => match self.store.next_atc(&token_ref, audit).await? {
                    (AtcOutcome::Issued { atc, token }, committed) => {
                        let eci = a
                            .authenticated_eci
                            .clone()
                            .unwrap_or_else(|| default_eci(&token.scheme).to_owned());
                        let (alias, ct, r) =
                            (a.alias.clone(), token.token_ct.clone(), token_ref.clone());
                        let (scheme, key) = (token.scheme.clone(), token.key.clone());
                        let yymm = format!("{:02}{:02}", token.exp_year % 100, token.exp_month);
                        let (amount, currency, eci2) =
                            (a.amount_minor, a.currency.clone(), eci.clone());
                        // The cryptogram is made while the ATC's commit
                        // syncs, and leaves only once that commit is durable
                        // (DESIGN.md: no ATC is ever issued twice).
                        let cryptogram = self.hsm(move |h| {
                            let mut un = [0u8; 4];
                            h.random(&mut un)?;
                            let raw = h.open(&alias, "token", &ct)?;
                            let number =
                                Pan::from_bytes(&raw).ok_or(vault_hsm::HsmError::Integrity)?;
                            let d = cryptogram_data(
                                number.expose(),
                                &yymm,
                                amount,
                                &currency,
                                atc,
                                un,
                                &eci2,
                            );
                            let key = key.as_ref().map(|k| k.as_hsm(&scheme));
                            let mac = h.cryptogram_mac(&r, key, atc, &d)?;
                            Ok((number, cryptogram_string(atc, un, &mac)))
                        });
                        let (made, durable) = tokio::join!(cryptogram, committed.wait());
                        durable?;
                        let (number, cryptogram) = made?;
                        return Ok(Credentials::NetworkToken {
                            scheme: token.scheme.clone(),
                            network_token: number,
                            exp_month: token.exp_month,
                            exp_year: token.exp_year,
                            cryptogram: Some(cryptogram),
                            eci: Some(eci),
                            atc: Some(atc),
                            par: token.par.clone(),
                            token_ref,
                        });
                    }
                    // Suspended meanwhile, or ATCs spent: fall back below,
                    // once a queued key refresh is durable.
                    (AtcOutcome::NotActive | AtcOutcome::Exhausted, committed) => {
                        committed.wait().await?;
                    }
                },
            }
        }

        let reason = if !wants_token {
            FallbackReason::ReceiverPanOnly
        } else {
            match v.token.as_ref().map(|t| t.status) {
                None
                | Some(TokenStatus::Pending | TokenStatus::NotEligible | TokenStatus::Failed) => {
                    FallbackReason::NoToken
                }
                Some(_) => FallbackReason::TokenNotActive,
            }
        };
        let none = || {
            VaultError::refuse(
                ErrorCode::NoUsableCredential,
                "nothing this receiver accepts is available for the alias",
            )
        };
        if !wants_pan || v.rec.pan_removed {
            return Err(none());
        }
        let ct = self.store.pan_ciphertext(&a.alias)?.ok_or_else(none)?;
        if let Some(limit) = caller.pan_per_minute
            && !self.limiter.allow(&caller.client, limit, now_ms())
        {
            let _ = self
                .store
                .add_event(EventRec {
                    at: now_ms(),
                    alias: Some(a.alias.clone()),
                    scheme: Some(v.rec.scheme.clone()),
                    kind: "pan_rate_limited".into(),
                    detail: format!(
                        "client {} passed {limit} PAN answers per minute",
                        caller.client
                    ),
                })
                .await;
            tracing::warn!(client = %caller.client, limit, "PAN de-tokenization rate limit reached");
            return Err(VaultError::refuse(
                ErrorCode::RateLimited,
                "too many PAN answers for this client; retry later",
            ));
        }
        let reason_str = match reason {
            FallbackReason::ReceiverPanOnly => "receiver_pan_only",
            FallbackReason::NoToken => "no_token",
            FallbackReason::TokenNotActive => "token_not_active",
        };
        // The PAN leaves only after the call is on the audit trail.
        self.store
            .audit(caller.audit(
                "credentials",
                Some(a.alias.clone()),
                format!("ok pan {reason_str}"),
            ))
            .await?;
        let alias = a.alias.clone();
        let pan = self
            .hsm(move |h| h.open(&alias, "pan", &ct))
            .await
            .map(|p| Pan::from_bytes(&p))?
            .ok_or_else(|| VaultError::refuse(ErrorCode::Internal, "stored PAN is not text"))?;
        Ok(Credentials::Pan {
            scheme: v.rec.scheme.clone(),
            pan,
            exp_month: v.rec.exp_month,
            exp_year: v.rec.exp_year,
            fallback_reason: reason,
        })
    }
}

// ------------------------------------------------------------ op handler

impl<S: Store, H: Hsm> Handle<ops::CredentialsOp> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: CredentialsArgs) -> VaultResult<Credentials> {
        self.credentials(who, a).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_layout_matches_design_vector() {
        let d = cryptogram_data(
            "4895370012345678",
            "2911",
            1250,
            "CHF",
            7,
            [0xa1, 0xb2, 0xc3, 0xd4],
            "07",
        );
        assert_eq!(d[0], 0x01);
        assert_eq!(d[1], 16);
        assert_eq!(&d[2..18], b"4895370012345678");
        assert_eq!(&d[18..22], b"2911");
        assert_eq!(&d[22..30], &1250u64.to_be_bytes());
        assert_eq!(&d[30..33], b"CHF");
        assert_eq!(&d[33..35], &[0, 7]);
        assert_eq!(&d[35..39], &[0xa1, 0xb2, 0xc3, 0xd4]);
        assert_eq!(&d[39..], b"07");
        // With the MAC of the test vector, the string is the vector's.
        let mac: [u8; 16] = [
            0x20, 0x4e, 0x31, 0x10, 0x37, 0xa9, 0xe8, 0xd6, 0x0a, 0x6e, 0x3f, 0xb5, 0x12, 0, 0, 0,
        ];
        assert_eq!(
            cryptogram_string(7, [0xa1, 0xb2, 0xc3, 0xd4], &mac),
            "AQAHobLD1CBOMRA3qejWCm4/tRI="
        );
    }
}
