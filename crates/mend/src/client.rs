//! The client: enqueue, inspect, cancel and retry jobs. It talks to the store, so it works in
//! processes that run no worker (a web app that only enqueues); one taken from a running worker
//! ([`crate::WorkerHandle::client`]) also stops that worker's attempts of a cancelled job at
//! once. Cancel has this one entry point: the worker handle, the HTTP API and the CLI (through
//! the API) all come here.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use crate::handler::JobArgs;
use crate::job::{JobRow, NewJob};
use crate::store::{CancelParams, JobPage, ListParams, QueueCount, RetryParams, Store, StoreError};

/// What can go wrong using the [`Client`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Args could not be turned into JSON.
    #[error("job args cannot be encoded as JSON: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Enqueue and manage jobs. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    store: Arc<dyn Store>,
    /// The worker of this process, when the client came from one: a cancel stops its
    /// attempts at once instead of at its next heartbeat.
    local: Option<std::sync::Weak<crate::runtime::Shared>>,
}

impl Client {
    /// A client on `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Client { store, local: None }
    }

    /// A client that also reaches the worker of this process (see [`Client::cancel`]).
    pub(crate) fn with_worker(
        store: Arc<dyn Store>,
        worker: std::sync::Weak<crate::runtime::Shared>,
    ) -> Self {
        Client {
            store,
            local: Some(worker),
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Enqueue one job from typed args.
    pub async fn enqueue<A: JobArgs>(&self, args: &A) -> Result<JobRow, ClientError> {
        self.insert(args.to_new_job()?).await
    }

    /// Enqueue many jobs from typed args in one transaction.
    pub async fn enqueue_many<'a, A: JobArgs>(
        &self,
        args: impl IntoIterator<Item = &'a A>,
    ) -> Result<Vec<JobRow>, ClientError> {
        let jobs = args
            .into_iter()
            .map(|a| a.to_new_job())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.insert_many(jobs).await?)
    }

    /// Enqueue one prepared job.
    pub async fn insert(&self, job: NewJob) -> Result<JobRow, ClientError> {
        let mut rows = self.store.insert_many(vec![job]).await?;
        rows.pop()
            .ok_or_else(|| StoreError::database("insert returned no row").into())
    }

    /// Enqueue prepared jobs in one transaction.
    pub async fn insert_many(&self, jobs: Vec<NewJob>) -> Result<Vec<JobRow>, ClientError> {
        Ok(self.store.insert_many(jobs).await?)
    }

    /// Enqueue one prepared job and say whether it was a duplicate: with unique options
    /// ([`NewJob::with_unique`]) or an idempotency key, an existing job holding the key is
    /// returned with `duplicate: true` and nothing is inserted.
    pub async fn insert_unique(&self, job: NewJob) -> Result<crate::Enqueued, ClientError> {
        self.insert_many_unique(vec![job])
            .await?
            .pop()
            .ok_or_else(|| StoreError::database("insert returned no row").into())
    }

    /// [`Client::insert_unique`] for many jobs in one transaction, in input order.
    pub async fn insert_many_unique(
        &self,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<crate::Enqueued>, ClientError> {
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
        let rows = self.store.insert_many(jobs).await?;
        Ok(crate::Enqueued::from_rows(&ids, rows))
    }

    /// One job.
    pub async fn get(&self, id: Uuid) -> Result<Option<JobRow>, ClientError> {
        Ok(self.store.get(id).await?)
    }

    /// Cancel a job — the one way to cancel, whoever asks (library, HTTP, CLI). A waiting job is
    /// `cancelled` at once. A running one is stopped, its cleanups run (told `Cancelled`) and
    /// it ends `cancelled`: at once when it runs in the worker this client came from
    /// ([`crate::WorkerHandle::client`]), within a heartbeat interval
    /// ([`crate::runtime::DEFAULT_HEARTBEAT_INTERVAL`]) on any other worker or node. A job
    /// whose handler had already returned `Ok` stays `completed`. Returns the job as it is
    /// after the request (`None`: no such job); a finished job is returned unchanged.
    pub async fn cancel(&self, id: Uuid) -> Result<Option<JobRow>, ClientError> {
        Ok(self.cancel_job(id).await?)
    }

    pub(crate) async fn cancel_job(&self, id: Uuid) -> Result<Option<JobRow>, StoreError> {
        let rows = self
            .store
            .cancel(CancelParams {
                ids: vec![id],
                now: Utc::now(),
            })
            .await?;
        if let Some(worker) = self.local.as_ref().and_then(|w| w.upgrade()) {
            worker.stop_job(id, crate::settle::Stop::Cancel);
        }
        Ok(rows.into_iter().next())
    }

    /// Retry a finished job now.
    pub async fn retry(&self, id: Uuid) -> Result<Option<JobRow>, ClientError> {
        let rows = self
            .store
            .retry(RetryParams {
                ids: vec![id],
                now: Utc::now(),
            })
            .await?;
        Ok(rows.into_iter().next())
    }

    /// A page of jobs.
    pub async fn list(&self, params: ListParams) -> Result<JobPage, ClientError> {
        Ok(self.store.list(params).await?)
    }

    /// Counts per queue and state.
    pub async fn queue_counts(&self) -> Result<Vec<QueueCount>, ClientError> {
        Ok(self.store.queue_counts().await?)
    }
}
