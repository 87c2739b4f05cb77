//! The scheduler: on the leader, inserts the job of each due slot of each periodic schedule
//! (`mend_cron`) and moves the schedule on. Which slots run after downtime is
//! `cron::plan`'s decision; this service only reads the due schedules, asks it, and hands the
//! result to the store's compare-and-set (`Store::cron_advance`), so two schedulers racing
//! (a leader change, several SQLite processes) insert each slot's job once. It must not decide
//! anything about slots itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::cron::{self, Periodic};
use crate::store::{AdvanceCronParams, DueCronParams, Result, Store, UpsertCronParams};

/// How often the leader looks for due slots: a slot's job is inserted within a quarter second
/// of it, and an idle look is one indexed read.
pub const SCHEDULER_TICK: Duration = Duration::from_millis(250);

/// Schedules handled per pass; more wait for the next tick.
pub const DUE_BATCH: usize = 100;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Jobs inserted (or found already inserted) for due slots.
    pub inserted: usize,
    /// Slots skipped by the catch-up policy.
    pub skipped: usize,
    /// Schedules another scheduler advanced first.
    pub lost_races: usize,
}

/// Runs a pass every [`SCHEDULER_TICK`] while this process leads, until `stop`.
pub async fn run(store: Arc<dyn Store>, stop: CancellationToken) {
    super::while_leading(
        store,
        "scheduling periodic jobs",
        SCHEDULER_TICK,
        stop,
        |store| async move { pass(store.as_ref(), Utc::now()).await.map(|_| ()) },
    )
    .await;
}

/// One pass at `now` (tests pass their own): every due schedule's slots are planned and
/// advanced. Does not ask whether this process leads; [`run`] does.
pub async fn pass(store: &dyn Store, now: DateTime<Utc>) -> Result<PassReport> {
    let mut report = PassReport::default();
    let mut first_error = None;
    let due = store
        .cron_due(DueCronParams {
            now,
            limit: DUE_BATCH,
        })
        .await?;
    for row in due {
        let schedule = match row.periodic.validate() {
            Ok(s) => s,
            Err(e) => {
                // Only a row written by hand (or by a newer mend) gets here.
                tracing::warn!(schedule = %row.periodic.name, error = %e, "stored schedule is invalid; skipping it");
                continue;
            }
        };
        let plan = cron::plan(
            &schedule,
            row.periodic.catch_up,
            row.periodic.catch_up_max,
            row.next_slot,
            now,
        );
        if plan.more_skipped || !plan.skipped.is_empty() {
            tracing::warn!(
                schedule = %row.periodic.name,
                policy = %row.periodic.catch_up,
                skipped = plan.skipped.len(),
                more_not_listed = plan.more_skipped,
                since = %row.next_slot,
                "missed periodic slots skipped by the catch-up policy"
            );
        }
        let jobs = plan.run.iter().map(|s| row.job_for(*s)).collect();
        let advance = store
            .cron_advance(AdvanceCronParams {
                name: row.periodic.name.clone(),
                expected_next_slot: row.next_slot,
                next_slot: plan.next_slot,
                slots: plan.run.clone(),
                jobs,
                runs_before: row.recent_runs.clone(),
                skipped: cron::merge_skipped(&row.skipped, &plan.skipped),
                now,
            })
            .await;
        match advance {
            Ok(Some(jobs)) => {
                report.inserted += jobs.len();
                report.skipped += plan.skipped.len();
            }
            Ok(None) => report.lost_races += 1,
            // One schedule failing must not starve the others: the rest of the pass goes on,
            // and the pass reports the first error once it is done.
            Err(e) => {
                tracing::warn!(schedule = %row.periodic.name, error = %e, "inserting a periodic job failed; will try again");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Stores the schedules declared in code or in `mend.toml` (each checked first: none is
/// stored if one is invalid). A schedule already stored keeps its paused flag, history and,
/// unless its expression or zone changed, its next slot.
pub async fn declare(
    store: &dyn Store,
    schedules: &[Periodic],
    now: DateTime<Utc>,
) -> std::result::Result<(), DeclareError> {
    let mut checked = Vec::with_capacity(schedules.len());
    for p in schedules {
        let schedule = p.validate().map_err(|e| DeclareError::Invalid {
            name: p.name.clone(),
            error: e,
        })?;
        checked.push((p, schedule));
    }
    for (p, schedule) in checked {
        store
            .cron_upsert(UpsertCronParams {
                periodic: p.clone(),
                next_slot: schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC),
                now,
            })
            .await?;
    }
    Ok(())
}

/// Why declared schedules could not be stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeclareError {
    /// A declaration was refused; nothing was stored.
    #[error("periodic job {name:?} is invalid: {error}")]
    Invalid {
        /// The schedule's name as declared.
        name: String,
        /// The field at fault.
        error: cron::CronError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
