//! Test support for mend backends: the store conformance suite, run by every backend through
//! [`store_conformance!`], so the backends cannot drift apart.
//!
//! A backend's test file names a factory that returns a fresh, empty, migrated store (or
//! `None` with a printed reason when the backend's server is not available, so the tests say
//! they were skipped instead of pretending to pass):
//!
//! ```ignore
//! async fn fresh() -> Option<mend_test::TestStore> { ... }
//! mend_test::store_conformance!(fresh);
//! ```
//!
//! And the one test harness every crate's integration tests share: [`env`](mod@env) (a temp dir and a
//! fresh store, SQLite or a PostgreSQL schema), [`wait`] (bounded waits that say what they
//! awaited), [`sync`] (gates and logs for handlers), [`process`] (spawn, signal and reap real
//! processes; [`on_both_backends!`]), [`http`] (the router in memory, a socket client, a
//! scripted server), [`handler`] (registries whose handlers share a test's log or gate, and
//! `job_args!` for test args types) and [`ending`] (how a test handler ends). Tests use these
//! instead of copies of their own.

#![expect(clippy::unwrap_used, clippy::expect_used, missing_docs)]

pub mod conformance;
pub mod ending;
pub mod env;
pub mod fault;
pub mod handler;
pub mod http;
pub mod pg;
pub mod process;
pub mod sync;
pub mod wait;

use std::any::Any;
use std::sync::Arc;

use mend::Store;

/// A store for one test, plus whatever must live as long as it (a temp dir, a schema guard).
pub struct TestStore {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Dropped after the test.
    pub guard: Box<dyn Any + Send>,
}

impl TestStore {
    /// `store`, keeping `guard` alive until the test ends.
    pub fn new(store: impl Store, guard: impl Any + Send) -> TestStore {
        TestStore {
            store: Arc::new(store),
            guard: Box::new(guard),
        }
    }
}

/// Generates one `#[tokio::test]` per conformance check for a backend factory.
#[macro_export]
macro_rules! store_conformance {
    ($factory:path) => {
        $crate::store_conformance!(@tests $factory;
            insert_and_get_round_trip,
            insert_validation_stores_nothing,
            unique_key_returns_the_existing_job,
            future_run_at_is_scheduled_and_promoted_when_due,
            claim_order_is_priority_then_run_at_then_id,
            claim_respects_queue_kinds_and_limit,
            concurrent_claims_never_share_a_job,
            complete_is_fenced_by_owner_and_attempt,
            outcomes_move_jobs_as_the_state_machine_says,
            extend_leases_reports_lost_and_cancel_requests,
            rescue_takes_dead_nodes_and_expired_leases_only,
            rescue_quarantines_a_poison_pill,
            rescue_discards_when_out_of_attempts,
            rescue_cancels_a_job_whose_cancel_was_requested,
            cancel_waiting_and_running_jobs,
            a_cancel_request_wins_over_retry_snooze_and_release,
            retry_finished_jobs,
            list_filters_and_pages_without_gaps,
            queue_counts_per_state,
            nodes_register_heartbeat_and_deregister,
            paused_queues_are_not_claimed,
            prune_deletes_old_finished_jobs_only,
            timeline_tells_each_jobs_story,
            checkpoints_are_fenced_and_reach_the_next_attempt,
            insert_wakes_idle_fetchers,
            dead_nodes_are_the_stale_ones_never_this_one,
            durable_cleanups_are_written_down_fenced_and_removed_when_run,
            limits_are_set_listed_replaced_and_deleted,
            a_per_key_concurrency_limit_holds_busy_keys_at_claim,
            a_rate_limit_caps_starts_across_claims,
            a_kind_limit_leaves_other_kinds_of_the_queue_alone,
            a_queue_with_limits_claims_nothing_ahead,
            full_rate_buckets_are_pruned_and_spent_ones_kept,
            // Periodic jobs (cron).
            cron_schedules_upsert_list_pause_and_delete,
            cron_advance_is_a_compare_and_set,
            cron_one_job_per_slot_when_schedulers_race,
            cron_scheduler_catches_up_by_policy,
            // unique jobs
            unique_by_kind_and_by_all_args,
            unique_by_a_subset_of_args,
            unique_per_queue_or_across_queues,
            unique_within_a_period,
            unique_states_decide_how_long_a_key_is_held,
            retrying_a_finished_job_whose_key_is_taken_is_refused,
            unique_options_are_validated_before_anything_is_stored,
            // mend doctor
            doctor_stats_find_waiting_kinds_stuck_leases_and_failed_cleanups,
            // the dashboard
            dashboard_filters_counts_and_deletes,
            // dashboard history
            stats_flushes_add_up_and_merge_by_group,
            stats_percentiles_of_a_known_distribution,
            history_pruning_removes_old_minutes_and_events_only,
            events_round_trip_newest_first_by_kind,
            node_facts_round_trip_and_heartbeats_update_them,
            // gray release
            rollouts_are_stored_compared_and_set_and_routed,
            routed_claims_take_only_the_served_side_and_record_the_version,
            a_plain_claim_forgets_the_version_of_an_earlier_routed_attempt,
            a_canarys_failed_jobs_go_back_to_stable_with_their_attempts,
            version_samples_add_up_and_are_pruned,
            nodes_report_the_versions_they_serve
        );
    };
    ($factory:path, effects = $kit:expr) => {
        $crate::store_conformance!($factory);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn completion_commits_with_its_effect_or_not_at_all() {
            let Some(t) = $factory().await else { return };
            $crate::conformance::completion_commits_with_its_effect_or_not_at_all(
                t.store.clone(),
                $kit,
            )
            .await;
            drop(t);
        }
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(t) = $factory().await else { return };
                $crate::conformance::$name(t.store.clone()).await;
                drop(t);
            }
        )*
    };
}
