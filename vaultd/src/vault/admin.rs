//! Admin views and actions: the queue, scheme pause/resume, events,
//! `provision`, and PAN retention. Every action is audited by the store
//! in the same commit as its effect.

use vault_hsm::Hsm;
use vault_proto::ErrorCode;
use vault_proto::ops::{
    self, AliasRecord, EventView, Events, Handle, JobState, JobView, QueueList, QueueListArgs,
    QueueRetryResult, SchemePaused,
};

use super::cards::now_ms;
use super::{Caller, Vault, VaultError, VaultResult, alias_record};
use crate::store::Store;
use crate::store::queue::ProvisionRequest;
use crate::store::records::{JobRec, job_id_string, parse_job_id};

fn page_limit(limit: u32) -> usize {
    match limit {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

impl<S: Store, H: Hsm> Vault<S, H> {
    /// The state of a job as the console shows it: in flight (the worker
    /// holds it), failed, due (next_at passed) or scheduled.
    fn job_state(
        &self,
        j: &JobRec,
        in_flight: &std::collections::HashSet<u64>,
        now: u64,
    ) -> JobState {
        if in_flight.contains(&j.id) {
            JobState::InFlight
        } else if j.state == JobState::Failed {
            JobState::Failed
        } else if j.next_at <= now {
            JobState::Due
        } else {
            JobState::Scheduled
        }
    }

    pub fn queue_list(&self, a: QueueListArgs) -> VaultResult<QueueList> {
        let limit = page_limit(a.limit);
        let after = match a.after.as_deref() {
            None | Some("") => 0,
            Some(s) => parse_job_id(s).ok_or_else(|| {
                VaultError::refuse(ErrorCode::BadRequest, "`after` is not a job id")
            })?,
        };
        let in_flight = self.tokens.in_flight();
        let now = now_ms();
        let want = a.state;
        let keep = |j: &JobRec| want.is_none_or(|w| self.job_state(j, &in_flight, now) == w);
        // A page may end short of `limit` with a cursor: the store reads a
        // bounded number of jobs per request (PROTOCOL.md: go on while
        // `next` is set).
        let page = self.store.jobs_page(after, limit, &keep)?;
        let (jobs, next) = (page.jobs, page.next.map(job_id_string));
        Ok(QueueList {
            jobs: jobs
                .iter()
                .map(|j| JobView {
                    job_id: job_id_string(j.id),
                    alias: j.alias.clone(),
                    kind: j.kind.as_str().to_owned(),
                    scheme: j.scheme.clone(),
                    state: self.job_state(j, &in_flight, now),
                    attempts: j.attempts,
                    next_at: j.next_at,
                    last_error: j.last_error.clone(),
                })
                .collect(),
            next,
        })
    }

    pub async fn queue_retry(
        &self,
        caller: &Caller,
        job_id: &str,
    ) -> VaultResult<QueueRetryResult> {
        let id = parse_job_id(job_id)
            .ok_or_else(|| VaultError::refuse(ErrorCode::BadRequest, "`job_id` is not a job id"))?;
        let state = self
            .store
            .retry_job(id, caller.audit("queue_retry", None, "ok"))
            .await?
            .ok_or_else(|| VaultError::refuse(ErrorCode::BadRequest, "no such job"))?;
        self.tokens.wake();
        let in_flight = self.tokens.in_flight();
        let state = if in_flight.contains(&id) {
            JobState::InFlight
        } else {
            state
        };
        Ok(QueueRetryResult {
            job_id: job_id.to_owned(),
            state,
        })
    }

    pub async fn scheme_pause(
        &self,
        caller: &Caller,
        scheme: &str,
        paused: bool,
    ) -> VaultResult<SchemePaused> {
        if !self.tokens.has_scheme(scheme) {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                "no token service is configured for that scheme",
            ));
        }
        let op = if paused {
            "scheme_pause"
        } else {
            "scheme_resume"
        };
        let mut audit = caller.audit(op, None, "ok");
        audit.outcome = format!("ok {scheme}");
        self.store.set_paused(scheme, paused, audit).await?;
        self.tokens.set_paused(scheme, paused);
        tracing::info!(scheme, paused, client = %caller.client, "scheme pause changed");
        Ok(SchemePaused {
            scheme: scheme.to_owned(),
            paused,
        })
    }

    pub fn events(&self, after: Option<u64>, limit: u32) -> VaultResult<Events> {
        let page = self
            .store
            .events_page(after.unwrap_or(0), page_limit(limit))?;
        Ok(Events {
            events: page
                .into_iter()
                .map(|(seq, e)| EventView {
                    seq,
                    at: e.at,
                    alias: e.alias,
                    scheme: e.scheme,
                    kind: e.kind,
                    detail: e.detail,
                })
                .collect(),
        })
    }

    /// The `provision` op: queue network token provisioning for an alias.
    pub async fn provision(&self, caller: &Caller, alias: &str) -> VaultResult<AliasRecord> {
        let tenant = caller.tenant.clone().unwrap_or_default();
        let v = self.alias_of_tenant(&tenant, alias)?;
        let policy = self.policy();
        let tokens_on = policy
            .tenants
            .get(&tenant)
            .is_some_and(|t| t.network_tokens)
            && self.tokens.has_scheme(&v.rec.scheme);
        // A card stored before tokens were enabled has no token state yet:
        // the store starts it (PROTOCOL.md, provision).
        if !tokens_on {
            return Err(VaultError::refuse(
                ErrorCode::BadRequest,
                "network tokens are not enabled for this tenant or this card's scheme",
            ));
        }
        match self
            .store
            .request_provision(&tenant, alias, caller.audit("provision", None, "ok"))
            .await?
        {
            ProvisionRequest::NotFound => {
                return Err(VaultError::refuse(
                    ErrorCode::AliasNotFound,
                    "no such alias",
                ));
            }
            ProvisionRequest::NoPan => {
                return Err(VaultError::refuse(
                    ErrorCode::PanRequired,
                    "the PAN was removed; a network token cannot be requested without it",
                ));
            }
            ProvisionRequest::Unchanged => {}
            ProvisionRequest::Queued => self.tokens.wake(),
        }
        let v = self.alias_of_tenant(&tenant, alias)?;
        Ok(alias_record(&v, &policy))
    }
}

// ------------------------------------------------------------ op handlers

impl<S: Store, H: Hsm> Handle<ops::QueueListOp> for Vault<S, H> {
    async fn handle(&self, _: &Caller, a: QueueListArgs) -> VaultResult<QueueList> {
        self.queue_list(a)
    }
}

impl<S: Store, H: Hsm> Handle<ops::QueueRetry> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::JobArgs) -> VaultResult<QueueRetryResult> {
        self.queue_retry(who, &a.job_id).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::SchemePause> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::SchemeArgs) -> VaultResult<SchemePaused> {
        self.scheme_pause(who, &a.scheme, true).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::SchemeResume> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::SchemeArgs) -> VaultResult<SchemePaused> {
        self.scheme_pause(who, &a.scheme, false).await
    }
}

impl<S: Store, H: Hsm> Handle<ops::EventsOp> for Vault<S, H> {
    async fn handle(&self, _: &Caller, a: ops::PageArgs) -> VaultResult<Events> {
        self.events(a.after, a.limit)
    }
}

impl<S: Store, H: Hsm> Handle<ops::Provision> for Vault<S, H> {
    async fn handle(&self, who: &Caller, a: ops::AliasArgs) -> VaultResult<AliasRecord> {
        self.provision(who, &a.alias).await
    }
}
