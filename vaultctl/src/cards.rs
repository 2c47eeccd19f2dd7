//! Cards behind aliases: `tokenize` (the PAN from stdin), `status`,
//! `provision`, `remove-pan`, `delete`.

use vault_proto::ops::{self, Op};
use vault_proto::{BlockingClient, Pan};

use crate::Failure;
use crate::output::{print, show_record};
use crate::stdin::{PAN_LINE_MAX, read_stdin_wiped};

pub fn tokenize(
    c: &mut BlockingClient,
    json: bool,
    exp: &str,
    transaction_id: Option<String>,
) -> Result<(), Failure> {
    let (exp_month, exp_year) = parse_exp(exp)?;
    let line = read_stdin_wiped(PAN_LINE_MAX, true)
        .map_err(|e| Failure::Usage(format!("cannot read the PAN from stdin: {e}")))?;
    let pan = Pan::from_bytes(line.trim_ascii())
        .ok_or_else(|| Failure::Usage("the PAN read from stdin is not text".to_owned()))?;
    let r = c.op::<ops::Tokenize>(&ops::TokenizeArgs {
        pan,
        exp_month,
        exp_year,
        transaction_id,
    })?;
    print(json, &r, |r| {
        println!("created      {}", r.created);
        show_record(&r.record);
    });
    Ok(())
}

fn parse_exp(s: &str) -> Result<(u8, u16), Failure> {
    let bad = || Failure::Usage(format!("--exp {s:?}: expected MM/YYYY"));
    let (m, y) = s.split_once('/').ok_or_else(bad)?;
    Ok((m.parse().map_err(|_| bad())?, y.parse().map_err(|_| bad())?))
}

/// `status`, `provision` and `remove-pan`: an op on one alias that answers
/// with the alias's record.
pub fn record<O: Op<Args = ops::AliasArgs, Result = ops::AliasRecord>>(
    c: &mut BlockingClient,
    json: bool,
    alias: String,
) -> Result<(), Failure> {
    let r = c.op::<O>(&ops::AliasArgs { alias })?;
    print(json, &r, show_record);
    Ok(())
}

pub fn delete(c: &mut BlockingClient, json: bool, alias: String) -> Result<(), Failure> {
    let r = c.op::<ops::DeleteAlias>(&ops::AliasArgs { alias })?;
    print(json, &r, |_| println!("deleted"));
    Ok(())
}
