//! The durable job queue: provisioning, token deletion and key refresh jobs.
//! A job lives in `jobs` by id; while due or scheduled it is also in
//! `job_queue_by_scheme` under (scheme, next_at, id), so the worker reads
//! the due jobs of one scheme in time order, and only of the schemes that
//! can take work: a backlog of a paused or saturated scheme is never read.
//! "In flight" is the worker's in-memory view: a job it holds stays due on
//! disk, so after a crash it is simply due again; the worker skips those
//! by id, and a scheme has at most its concurrency in flight, so a read of
//! `n` due jobs touches at most `n` + that many keys.

use std::future::Future;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use vault_proto::ops::{JobState, TokenStatus};

use super::alias_status::{load_alias, save_alias, set_alias_status};
use super::records::{EventRec, JobKind, JobRec, NtState, StoredKey, TokenRec, decode, encode};
use super::{
    JOB_QUEUE, JOBS, META, RedbStore, StoreError, StoreResult, TOKENS, WriteCtx, count_status,
};
use crate::vault::cards::now_ms;

/// Adds a job, due now.
pub(crate) fn enqueue(
    ctx: &mut WriteCtx<'_>,
    kind: JobKind,
    alias: &str,
    tenant: &str,
    scheme: &str,
    token_ref: Option<String>,
) -> StoreResult<u64> {
    let id = ctx.next_job_id()?;
    put_new_job(
        ctx.txn,
        &new_job(id, kind, alias, tenant, scheme, token_ref, now_ms()),
    )?;
    Ok(id)
}

/// A job due at `now`, with a fresh idempotency key.
pub(crate) fn new_job(
    id: u64,
    kind: JobKind,
    alias: &str,
    tenant: &str,
    scheme: &str,
    token_ref: Option<String>,
    now: u64,
) -> JobRec {
    JobRec {
        id,
        kind,
        alias: alias.to_owned(),
        tenant: tenant.to_owned(),
        scheme: scheme.to_owned(),
        token_ref,
        state: JobState::Due,
        attempts: 0,
        next_at: now,
        last_error: None,
        created_at: now,
        idem: Some(super::records::new_idempotency_key()),
    }
}

/// Stores a new job (its id allocated by the caller) and queues it.
pub(crate) fn put_new_job(txn: &redb::WriteTransaction, job: &JobRec) -> StoreResult<()> {
    txn.open_table(JOBS)?
        .insert(job.id, encode(job)?.as_slice())?;
    queue_insert(txn, job)
}

/// Puts `job` in its scheme's part of the queue at `job.next_at`.
pub(crate) fn queue_insert(txn: &redb::WriteTransaction, job: &JobRec) -> StoreResult<()> {
    txn.open_table(JOB_QUEUE)?
        .insert((job.scheme.as_str(), job.next_at, job.id), ())?;
    Ok(())
}

/// Takes `job` (as stored: its `next_at` then) out of the queue.
pub(crate) fn queue_remove(txn: &redb::WriteTransaction, job: &JobRec) -> StoreResult<()> {
    txn.open_table(JOB_QUEUE)?
        .remove((job.scheme.as_str(), job.next_at, job.id))?;
    Ok(())
}

fn load_job(ctx: &WriteCtx<'_>, id: u64) -> StoreResult<Option<JobRec>> {
    let jobs = ctx.txn.open_table(JOBS)?;
    let v = jobs.get(id)?.map(|v| v.value().to_vec());
    v.map(|v| decode("job", &v)).transpose()
}

/// Removes a job wherever it is.
pub(crate) fn remove_job(ctx: &mut WriteCtx<'_>, id: u64) -> StoreResult<()> {
    if let Some(job) = load_job(ctx, id)? {
        queue_remove(ctx.txn, &job)?;
        ctx.txn.open_table(JOBS)?.remove(id)?;
    }
    Ok(())
}

/// The alias's token is `failed`, with `error` for its `token_info`.
fn fail_alias(ctx: &mut WriteCtx<'_>, alias: &str, error: &str) -> StoreResult<()> {
    if let Some(mut rec) = load_alias(ctx, alias)? {
        set_alias_status(
            ctx,
            alias,
            &mut rec,
            TokenStatus::Failed,
            Some(error.to_owned()),
        )?;
    }
    Ok(())
}

/// How a job ended (or when it runs again), as the worker reports it.
pub enum JobFinish {
    /// A token was issued and its key is in the HSM.
    Provisioned {
        job_id: u64,
        token_ref: String,
        token: Box<TokenRec>,
    },
    /// The TSP refused for good: `NotEligible`, or `Failed` (kept for an
    /// admin to retry).
    Refused {
        job_id: u64,
        status: TokenStatus,
        error: String,
    },
    /// Try again at `next_at`, or give up (`failed`) when out of attempts.
    Retry {
        job_id: u64,
        next_at: u64,
        error: String,
        give_up: bool,
    },
    /// A delete finished.
    Done { job_id: u64 },
    /// A key refresh brought `key`: it replaces the token's stored key and
    /// the ATC starts again, in one commit.
    Refreshed { job_id: u64, key: StoredKey },
}

pub enum FinishOutcome {
    Ok,
    /// The alias went away (deleted) while the job ran: the caller destroys
    /// the token key; a delete job for the token was queued.
    Orphaned {
        token_ref: String,
    },
    /// The token service deleted the token before it was stored (a parked
    /// lifecycle event, `lifecycle::apply_parked`): the caller destroys the
    /// token key.
    DeletedMeanwhile {
        token_ref: String,
    },
    /// A key refresh replaced the token's key. The new key replaced the
    /// old one in the HSM's cache already; with `destroy`, the caller
    /// destroys what is left of the token's keys in the HSM now that the
    /// commit is durable: the `nt.*` object of a token an earlier release
    /// stored, or the new key itself when the token was deleted meanwhile.
    KeyReplaced {
        token_ref: String,
        destroy: bool,
    },
}

/// Most jobs one `jobs_page` reads: a filter that matches few of a long
/// queue (failed jobs among a million due) answers a short page with a
/// cursor instead of reading them all in one request.
pub const JOBS_SCANNED_PER_PAGE: usize = 10_000;

/// What [`QueueStore::jobs_page`] found.
#[derive(Debug, Default)]
pub struct JobsPage {
    pub jobs: Vec<JobRec>,
    /// Set when more jobs may follow: the next page starts after this id.
    pub next: Option<u64>,
}

/// Queue figures for `stats` (in-flight comes from the worker).
#[derive(Debug, Clone, Default)]
pub struct QueueCounts {
    pub due: u64,
    pub scheduled: u64,
    pub failed: u64,
}

pub trait QueueStore {
    /// Up to `limit` due jobs (next_at <= now) of `scheme`, in time order,
    /// skipping the ids `skip` names (the worker's in-flight jobs) before
    /// reading them.
    fn due_jobs(
        &self,
        scheme: &str,
        now: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> StoreResult<Vec<JobRec>>;
    /// The schemes that have jobs in the queue (due or scheduled): one
    /// lookup per scheme, however long the queue.
    fn queued_schemes(&self) -> StoreResult<Vec<String>>;
    fn job(&self, id: u64) -> StoreResult<Option<JobRec>>;
    /// Jobs with id > after, in id order, filtered by `keep`: up to
    /// `limit` of them, from at most [`JOBS_SCANNED_PER_PAGE`] jobs read.
    fn jobs_page(
        &self,
        after: u64,
        limit: usize,
        keep: &dyn Fn(&JobRec) -> bool,
    ) -> StoreResult<JobsPage>;
    fn queue_counts(&self, now: u64) -> StoreResult<QueueCounts>;
    fn paused_schemes(&self) -> StoreResult<Vec<String>>;

    fn finish_job(&self, f: JobFinish) -> impl Future<Output = StoreResult<FinishOutcome>> + Send;
    /// A failed job due again now, attempts reset; the alias back to pending.
    fn retry_job(
        &self,
        id: u64,
        audit: super::records::AuditRec,
    ) -> impl Future<Output = StoreResult<Option<JobState>>> + Send;
    /// Queues provisioning for an alias of `tenant` (the `provision` op).
    fn request_provision(
        &self,
        tenant: &str,
        alias: &str,
        audit: super::records::AuditRec,
    ) -> impl Future<Output = StoreResult<ProvisionRequest>> + Send;
    fn set_paused(
        &self,
        scheme: &str,
        paused: bool,
        audit: super::records::AuditRec,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

pub enum ProvisionRequest {
    NotFound,
    /// Nothing to do (pending already, or a live token).
    Unchanged,
    /// The alias's PAN is gone (and with it any way to request a token).
    NoPan,
    Queued,
}

impl QueueStore for RedbStore {
    fn due_jobs(
        &self,
        scheme: &str,
        now: u64,
        limit: usize,
        skip: &dyn Fn(u64) -> bool,
    ) -> StoreResult<Vec<JobRec>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let r = self.db().begin_read()?;
        let q = r.open_table(JOB_QUEUE)?;
        let jobs = r.open_table(JOBS)?;
        for item in q.range((scheme, 0, 0)..=(scheme, now, u64::MAX))? {
            let (_, _, id) = item?.0.value();
            if skip(id) {
                continue;
            }
            let Some(raw) = jobs.get(id)? else { continue };
            out.push(decode("job", raw.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn queued_schemes(&self) -> StoreResult<Vec<String>> {
        let r = self.db().begin_read()?;
        let q = r.open_table(JOB_QUEUE)?;
        let mut out: Vec<String> = Vec::new();
        loop {
            // The first key after every key of the last scheme found.
            let next = match out.last() {
                None => q.first()?.map(|(k, _)| k.value().0.to_owned()),
                Some(last) => q
                    .range((last.as_str(), u64::MAX, u64::MAX)..)?
                    .map(|item| item.map(|(k, _)| k.value().0.to_owned()))
                    .find(|s| s.as_ref().map_or(true, |s| s != last))
                    .transpose()?,
            };
            match next {
                Some(s) => out.push(s),
                None => return Ok(out),
            }
        }
    }

    fn job(&self, id: u64) -> StoreResult<Option<JobRec>> {
        let r = self.db().begin_read()?;
        let jobs = r.open_table(JOBS)?;
        jobs.get(id)?.map(|v| decode("job", v.value())).transpose()
    }

    fn jobs_page(
        &self,
        after: u64,
        limit: usize,
        keep: &dyn Fn(&JobRec) -> bool,
    ) -> StoreResult<JobsPage> {
        let r = self.db().begin_read()?;
        let jobs = r.open_table(JOBS)?;
        let mut page = JobsPage::default();
        for (read, item) in jobs.range(after.saturating_add(1)..)?.enumerate() {
            let (id, v) = item?;
            let id = id.value();
            if read >= JOBS_SCANNED_PER_PAGE {
                // More may follow: the caller goes on from the last read.
                page.next = Some(id - 1);
                break;
            }
            let job: JobRec = decode("job", v.value())?;
            if keep(&job) {
                page.jobs.push(job);
                if page.jobs.len() >= limit {
                    page.next = Some(id);
                    break;
                }
            }
        }
        Ok(page)
    }

    fn queue_counts(&self, now: u64) -> StoreResult<QueueCounts> {
        let schemes = self.queued_schemes()?;
        let r = self.db().begin_read()?;
        let q = r.open_table(JOB_QUEUE)?;
        let queued = q.len()?;
        // Only the jobs waiting for a later time (retries in back-off) are
        // counted one by one, not a backlog of due jobs.
        let mut scheduled = 0;
        for s in &schemes {
            let later = (s.as_str(), now.saturating_add(1), 0)..=(s.as_str(), u64::MAX, u64::MAX);
            for item in q.range(later)? {
                item?;
                scheduled += 1;
            }
        }
        let all = r.open_table(JOBS)?.len()?;
        Ok(QueueCounts {
            due: queued - scheduled,
            scheduled,
            failed: all.saturating_sub(queued),
        })
    }

    fn paused_schemes(&self) -> StoreResult<Vec<String>> {
        let r = self.db().begin_read()?;
        let meta = r.open_table(META)?;
        let mut out = Vec::new();
        for s in vault_proto::Scheme::ALL {
            if super::meta_u64(&meta, &format!("paused.{s}"))? == 1 {
                out.push(s.name().to_owned());
            }
        }
        Ok(out)
    }

    async fn finish_job(&self, f: JobFinish) -> StoreResult<FinishOutcome> {
        self.writer()
            .write(move |ctx| {
                let id = match &f {
                    JobFinish::Provisioned { job_id, .. }
                    | JobFinish::Refused { job_id, .. }
                    | JobFinish::Retry { job_id, .. }
                    | JobFinish::Done { job_id }
                    | JobFinish::Refreshed { job_id, .. } => *job_id,
                };
                let Some(mut job) = load_job(ctx, id)? else {
                    // Deleted meanwhile (alias deleted): a token issued for
                    // it must not outlive it.
                    return Ok(match f {
                        JobFinish::Provisioned {
                            token_ref, token, ..
                        } => {
                            super::queue::enqueue(
                                ctx,
                                JobKind::Delete,
                                &token.alias,
                                &token.tenant,
                                &token.scheme,
                                Some(token_ref.clone()),
                            )?;
                            FinishOutcome::Orphaned { token_ref }
                        }
                        _ => FinishOutcome::Ok,
                    });
                };
                let alias = job.alias.clone();
                let at = now_ms();
                let mut outcome = FinishOutcome::Ok;
                match f {
                    JobFinish::Provisioned {
                        token_ref, token, ..
                    } => {
                        let owner = ctx
                            .txn
                            .open_table(TOKENS)?
                            .get(token_ref.as_str())?
                            .map(|v| decode::<TokenRec>("token", v.value()))
                            .transpose()?
                            .map(|t| t.alias);
                        if owner.as_deref().is_some_and(|a| a != token.alias) {
                            // Another card's token: never overwritten. The
                            // job fails; an operator may retry it.
                            let error = "the token service answered with a token of another card"
                                .to_owned();
                            queue_remove(ctx.txn, &job)?;
                            job.state = JobState::Failed;
                            job.attempts += 1;
                            job.last_error = Some(error.clone());
                            ctx.txn
                                .open_table(JOBS)?
                                .insert(id, encode(&job)?.as_slice())?;
                            fail_alias(ctx, &alias, &error)?;
                            ctx.event(&EventRec {
                                at,
                                alias: Some(alias),
                                scheme: Some(job.scheme.clone()),
                                kind: "provision_refused".into(),
                                detail: format!("token {token_ref}: {error}"),
                            })?;
                            return Ok(FinishOutcome::Ok);
                        }
                        remove_job(ctx, id)?;
                        let Some(mut rec) = load_alias(ctx, &alias)? else {
                            enqueue(
                                ctx,
                                JobKind::Delete,
                                &alias,
                                &job.tenant,
                                &job.scheme,
                                Some(token_ref.clone()),
                            )?;
                            return Ok(FinishOutcome::Orphaned { token_ref });
                        };
                        let mut tokens = ctx.txn.open_table(TOKENS)?;
                        // The same token again (an idempotent replay of the
                        // request): its ATCs go on from where they are.
                        let mut token = token;
                        let before: Option<TokenRec> = tokens
                            .get(token_ref.as_str())?
                            .map(|v| decode("token", v.value()))
                            .transpose()?;
                        if let Some(before) = &before {
                            token.atc = ctx.atc(&token_ref, before.atc);
                        }
                        tokens.insert(token_ref.as_str(), encode(&token)?.as_slice())?;
                        drop(tokens);
                        super::kek_use::replace(ctx, before.as_ref(), Some(&token));
                        if let Some(nt) = rec.nt.as_mut() {
                            nt.token_ref = Some(token_ref.clone());
                            nt.job = None;
                            nt.active_since = None;
                        }
                        set_alias_status(ctx, &alias, &mut rec, token.status, None)?;
                        ctx.event(&EventRec {
                            at,
                            alias: Some(alias),
                            scheme: Some(job.scheme.clone()),
                            kind: "provisioned".into(),
                            detail: format!(
                                "token {token_ref} {} after {} attempt(s)",
                                token.status.as_str(),
                                job.attempts + 1
                            ),
                        })?;
                        // Events the feed brought before this commit.
                        if super::lifecycle::apply_parked(ctx, &token_ref)?.deleted {
                            return Ok(FinishOutcome::DeletedMeanwhile { token_ref });
                        }
                    }
                    JobFinish::Refused { status, error, .. } => {
                        if status == TokenStatus::Failed {
                            queue_remove(ctx.txn, &job)?;
                            job.state = JobState::Failed;
                            job.attempts += 1;
                            job.last_error = Some(error.clone());
                            ctx.txn
                                .open_table(JOBS)?
                                .insert(id, encode(&job)?.as_slice())?;
                        } else {
                            remove_job(ctx, id)?;
                        }
                        if job.kind == JobKind::Provision
                            && let Some(mut rec) = load_alias(ctx, &alias)?
                        {
                            if status != TokenStatus::Failed
                                && let Some(nt) = rec.nt.as_mut()
                            {
                                nt.job = None;
                            }
                            set_alias_status(ctx, &alias, &mut rec, status, Some(error.clone()))?;
                        }
                        ctx.event(&EventRec {
                            at,
                            alias: Some(alias),
                            scheme: Some(job.scheme.clone()),
                            kind: format!("{}_{}", job.kind.as_str(), status.as_str()),
                            detail: error,
                        })?;
                    }
                    JobFinish::Retry {
                        next_at,
                        error,
                        give_up,
                        ..
                    } => {
                        queue_remove(ctx.txn, &job)?;
                        job.attempts += 1;
                        job.last_error = Some(error.clone());
                        if give_up {
                            job.state = JobState::Failed;
                            if job.kind == JobKind::Provision {
                                fail_alias(ctx, &alias, &error)?;
                            }
                            ctx.event(&EventRec {
                                at,
                                alias: Some(alias),
                                scheme: Some(job.scheme.clone()),
                                kind: format!("{}_failed", job.kind.as_str()),
                                detail: format!("gave up after {} attempts: {error}", job.attempts),
                            })?;
                        } else {
                            job.state = JobState::Scheduled;
                            job.next_at = next_at;
                            queue_insert(ctx.txn, &job)?;
                            if job.kind == JobKind::Provision
                                && let Some(mut rec) = load_alias(ctx, &alias)?
                                && let Some(nt) = rec.nt.as_mut()
                            {
                                nt.last_error = Some(error);
                                save_alias(ctx, &alias, &rec)?;
                            }
                        }
                        ctx.txn
                            .open_table(JOBS)?
                            .insert(id, encode(&job)?.as_slice())?;
                    }
                    JobFinish::Done { .. } | JobFinish::Refreshed { .. } => {
                        remove_job(ctx, id)?;
                        if let JobFinish::Refreshed { key, .. } = f
                            && let Some(r) = &job.token_ref
                        {
                            let mut tokens = ctx.txn.open_table(TOKENS)?;
                            let cur = tokens.get(r.as_str())?.map(|v| v.value().to_vec());
                            if let Some(raw) = cur {
                                let before: TokenRec = decode("token", &raw)?;
                                let deleted = before.status == TokenStatus::Deleted;
                                let destroy = before.key.is_none() || deleted;
                                if !deleted {
                                    let mut t = before.clone();
                                    t.key = Some(key);
                                    t.atc = 0;
                                    t.refresh_pending = false;
                                    t.updated_at = at;
                                    tokens.insert(r.as_str(), encode(&t)?.as_slice())?;
                                    drop(tokens);
                                    ctx.set_atc(r, 0);
                                    super::kek_use::replace(ctx, Some(&before), Some(&t));
                                }
                                outcome = FinishOutcome::KeyReplaced {
                                    token_ref: r.clone(),
                                    destroy,
                                };
                            }
                        }
                        ctx.event(&EventRec {
                            at,
                            alias: Some(alias),
                            scheme: Some(job.scheme.clone()),
                            kind: format!("{}_done", job.kind.as_str()),
                            detail: job.token_ref.clone().unwrap_or_default(),
                        })?;
                    }
                }
                Ok(outcome)
            })
            .await
    }

    async fn retry_job(
        &self,
        id: u64,
        audit: super::records::AuditRec,
    ) -> StoreResult<Option<JobState>> {
        self.writer()
            .write(move |ctx| {
                let Some(mut job) = load_job(ctx, id)? else {
                    return Ok(None);
                };
                let mut audit = audit;
                audit.alias = Some(job.alias.clone());
                if job.state == JobState::Failed {
                    let now = now_ms();
                    job.state = JobState::Due;
                    job.attempts = 0;
                    job.next_at = now;
                    ctx.txn
                        .open_table(JOBS)?
                        .insert(id, encode(&job)?.as_slice())?;
                    queue_insert(ctx.txn, &job)?;
                    if job.kind == JobKind::Provision
                        && let Some(mut rec) = load_alias(ctx, &job.alias)?
                    {
                        if let Some(nt) = rec.nt.as_mut() {
                            nt.job = Some(id);
                        }
                        set_alias_status(ctx, &job.alias, &mut rec, TokenStatus::Pending, None)?;
                    }
                    audit.outcome = "ok requeued".into();
                } else {
                    audit.outcome = "ok unchanged".into();
                }
                ctx.audit(&audit)?;
                Ok(Some(job.state))
            })
            .await
    }

    async fn request_provision(
        &self,
        tenant: &str,
        alias: &str,
        audit: super::records::AuditRec,
    ) -> StoreResult<ProvisionRequest> {
        let tenant = tenant.to_owned();
        let alias = alias.to_owned();
        self.writer()
            .write(move |ctx| {
                let Some(mut rec) = load_alias(ctx, &alias)? else {
                    return Ok(ProvisionRequest::NotFound);
                };
                if rec.tenant != tenant {
                    return Ok(ProvisionRequest::NotFound);
                }
                let mut audit = audit;
                audit.alias = Some(alias.clone());
                let Some(nt) = rec.nt.clone() else {
                    // Stored before network tokens were enabled for its
                    // tenant or scheme: its first token.
                    if rec.pan_removed {
                        return Ok(ProvisionRequest::NoPan);
                    }
                    let id = enqueue(ctx, JobKind::Provision, &alias, &tenant, &rec.scheme, None)?;
                    rec.nt = Some(NtState {
                        status: TokenStatus::Pending,
                        token_ref: None,
                        updated_at: now_ms(),
                        last_error: None,
                        active_since: None,
                        job: Some(id),
                    });
                    count_status(ctx, None, Some(TokenStatus::Pending))?;
                    save_alias(ctx, &alias, &rec)?;
                    audit.outcome =
                        "ok queued (first token of a card stored before network tokens)".into();
                    ctx.audit(&audit)?;
                    return Ok(ProvisionRequest::Queued);
                };
                let live = matches!(
                    nt.status,
                    TokenStatus::Pending
                        | TokenStatus::Active
                        | TokenStatus::Inactive
                        | TokenStatus::Suspended
                );
                if live {
                    audit.outcome = "ok unchanged".into();
                    ctx.audit(&audit)?;
                    return Ok(ProvisionRequest::Unchanged);
                }
                if rec.pan_removed {
                    return Ok(ProvisionRequest::NoPan);
                }
                // A failed job is revived under its own id (same idempotency
                // key: a token the TSP issued before is returned, not a new one).
                let revived = match nt.job.map(|j| load_job(ctx, j)).transpose()?.flatten() {
                    Some(mut job) if job.state == JobState::Failed => {
                        let now = now_ms();
                        job.state = JobState::Due;
                        job.attempts = 0;
                        job.next_at = now;
                        ctx.txn
                            .open_table(JOBS)?
                            .insert(job.id, encode(&job)?.as_slice())?;
                        queue_insert(ctx.txn, &job)?;
                        Some(job.id)
                    }
                    _ => None,
                };
                let id = match revived {
                    Some(id) => id,
                    None => enqueue(ctx, JobKind::Provision, &alias, &tenant, &rec.scheme, None)?,
                };
                if let Some(nt) = rec.nt.as_mut() {
                    nt.job = Some(id);
                    nt.token_ref = None;
                    nt.active_since = None;
                }
                set_alias_status(ctx, &alias, &mut rec, TokenStatus::Pending, None)?;
                audit.outcome = "ok queued".into();
                ctx.audit(&audit)?;
                Ok(ProvisionRequest::Queued)
            })
            .await
    }

    async fn set_paused(
        &self,
        scheme: &str,
        paused: bool,
        audit: super::records::AuditRec,
    ) -> StoreResult<()> {
        let key = format!("paused.{scheme}");
        self.writer()
            .write(move |ctx| {
                ctx.txn
                    .open_table(META)?
                    .insert(key.as_str(), u64::from(paused).to_be_bytes().as_slice())?;
                ctx.audit(&audit)?;
                Ok(())
            })
            .await
    }
}

impl From<std::convert::Infallible> for StoreError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}
