//! Provisioning: the job queue (`queue`, `retry`) and the schemes
//! (`pause`, `resume`).

use vault_proto::BlockingClient;
use vault_proto::ops::{self, Op};

use crate::Failure;
use crate::output::{fmt_ms, print};

/// A page of jobs, optionally in one state, after the job id `after`.
pub fn queue(
    c: &mut BlockingClient,
    json: bool,
    state: Option<String>,
    limit: u32,
    after: Option<String>,
) -> Result<(), Failure> {
    let state = match state.as_deref() {
        None => None,
        Some("due") => Some(ops::JobState::Due),
        Some("scheduled") => Some(ops::JobState::Scheduled),
        Some("in_flight") => Some(ops::JobState::InFlight),
        Some("failed") => Some(ops::JobState::Failed),
        Some(other) => {
            return Err(Failure::Usage(format!(
                "--state {other:?}: due, scheduled, in_flight or failed"
            )));
        }
    };
    let q = c.op::<ops::QueueListOp>(&ops::QueueListArgs {
        state,
        limit,
        after,
    })?;
    print(json, &q, |q| {
        for j in &q.jobs {
            println!(
                "{} {:<11} {:<10} {:<9} attempts {:<3} next {} {:<32} {}",
                j.job_id,
                j.kind,
                j.scheme,
                j.state.as_str(),
                j.attempts,
                fmt_ms(j.next_at),
                j.alias,
                j.last_error.as_deref().unwrap_or("")
            );
        }
        if let Some(n) = &q.next {
            println!("more: --after {n}");
        }
    });
    Ok(())
}

pub fn retry(c: &mut BlockingClient, json: bool, job_id: String) -> Result<(), Failure> {
    let r = c.op::<ops::QueueRetry>(&ops::JobArgs { job_id })?;
    print(json, &r, |r| println!("{} {}", r.job_id, r.state.as_str()));
    Ok(())
}

/// `pause` and `resume`: the scheme's state after the op.
pub fn switch_scheme<O: Op<Args = ops::SchemeArgs, Result = ops::SchemePaused>>(
    c: &mut BlockingClient,
    json: bool,
    scheme: String,
) -> Result<(), Failure> {
    let r = c.op::<O>(&ops::SchemeArgs { scheme })?;
    print(json, &r, |r| println!("{} paused {}", r.scheme, r.paused));
    Ok(())
}
