//! Maintenance: pruning finished jobs.

use super::*;

pub async fn prune_deletes_old_finished_jobs_only(store: Arc<dyn Store>) {
    insert_k(&store, 5).await;
    let c = claim(&store, "default", 4).await;
    complete(
        &store,
        c[..3]
            .iter()
            .map(|j| outcome(j, OutcomeKind::Completed { result: None }))
            .collect(),
    )
    .await;
    let cutoff = Utc::now() + chrono::Duration::seconds(1);
    let gone = prune(&store, cutoff, 2).await;
    assert_eq!(gone, 2, "bounded by the limit");
    let gone = prune(&store, cutoff, 100).await;
    assert_eq!(gone, 1);
    let left = store
        .list(ListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs;
    assert_eq!(left.len(), 2, "the running and the available job stay");
    assert!(left.iter().all(|j| !j.state.is_final()));
    let none = store
        .prune(mend::store::PruneParams {
            finalized_before: Utc::now() - chrono::Duration::hours(1),
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(none, 0);
}

/// Deletes up to `limit` jobs finalized before `finalized_before`; how many went.
async fn prune(store: &Arc<dyn Store>, finalized_before: DateTime<Utc>, limit: usize) -> u64 {
    store
        .prune(mend::store::PruneParams {
            finalized_before,
            limit,
        })
        .await
        .unwrap()
}
