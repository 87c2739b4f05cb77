//! The session connection: one long-lived connection per store that holds this process's
//! advisory locks (one per registered node, plus the maintenance leader's) and LISTENs for
//! "jobs inserted" and "routing changed" notifications. When it drops (a killed backend, a
//! database restart, a network cut) it reconnects with backoff, takes its locks again and
//! listens again; meanwhile fetchers fall back to polling.
//!
//! The locks are what make a dead node visible within a fifth of a second: PostgreSQL releases a
//! session's locks the moment its connection goes away, whatever killed the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mend::store::{Result, StoreError};
use tokio::sync::{oneshot, Notify};
use tokio_postgres::{AsyncMessage, Client};

use crate::error::map_pg;
use crate::tls::MakeRustls;

/// Longest wait between reconnection attempts: short, so that after a database restart every
/// node is back (and holds its locks again) well within the leader's grace period.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// The payload of the notification that says the stored routing changed (migration 13's
/// trigger on `mend_rollouts`). Every other notification on the channel means "jobs became
/// available"; its payload names the store whose connection sent it (empty: not a store's).
const ROUTES: &str = "routes";

pub(crate) struct Session {
    pub(crate) pg: tokio_postgres::Config,
    /// The same TLS connector as the pools'.
    pub(crate) tls: MakeRustls,
    pub(crate) target: String,
    pub(crate) channel: String,
    pub(crate) ns: i32,
    pub(crate) schema_q: String,
    pub(crate) wake: Arc<Notify>,
    /// The payload of the notifications this store's own connections send (see
    /// `config::Connection::origin`): the store woke its fetchers itself, so they are not
    /// woken again (which cost an empty claim per job picked up while idle).
    origin: String,
    /// Woken when the stored routing changed (a notification with the payload [`ROUTES`]),
    /// and after a reconnect, when a change may have gone unheard.
    pub(crate) routes: Arc<Notify>,
    pub(crate) state: tokio::sync::Mutex<State>,
    /// When the current connection was made; `None` while down.
    up_since: Mutex<Option<Instant>>,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) client: Option<Client>,
    /// Node id → its lock key, for every node registered through this store.
    pub(crate) nodes: HashMap<String, i32>,
    /// Whether this session holds the leader lock.
    pub(crate) leader: bool,
}

impl Session {
    pub(crate) fn new(
        pg: tokio_postgres::Config,
        tls: MakeRustls,
        target: String,
        schema: &str,
        schema_q: String,
        ns: i32,
        origin: String,
    ) -> Self {
        Session {
            pg,
            tls,
            target,
            channel: format!("mend_{schema}"),
            ns,
            schema_q,
            wake: Arc::new(Notify::new()),
            origin,
            routes: Arc::new(Notify::new()),
            state: tokio::sync::Mutex::new(State::default()),
            up_since: Mutex::new(None),
        }
    }

    /// When the current connection was made (`None` while down): it names the connection, so
    /// what was seen through it can be told from what was seen before a reconnect.
    pub(crate) fn up_since(&self) -> Option<Instant> {
        *self.up_since.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the session has been connected (zero while down).
    pub(crate) fn up_for(&self) -> Duration {
        self.up_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Keeps the session connected until the store is dropped. `ready` gets the result of the
    /// first connection attempt, so opening a store fails fast when the database is not there.
    pub(crate) async fn run(self: Arc<Self>, ready: oneshot::Sender<Result<()>>) {
        let mut ready = Some(ready);
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.connect().await {
                Ok(closed) => {
                    let up_at = Instant::now();
                    if let Some(r) = ready.take() {
                        let _ = r.send(Ok(()));
                    } else {
                        tracing::info!(
                            "database session re-established; locks and LISTEN restored"
                        );
                        // A routing change while the session was down went unheard.
                        self.routes.notify_waiters();
                    }
                    backoff = Duration::from_millis(20);
                    let reason = closed
                        .await
                        .unwrap_or_else(|_| "connection task ended".into());
                    *self.up_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    {
                        let mut st = self.state.lock().await;
                        st.client = None;
                        st.leader = false;
                    }
                    tracing::warn!(reason = %reason, "database session lost; reconnecting (fetchers poll meanwhile)");
                    // Idle fetchers no longer hear notifications: let them poll once now.
                    self.wake.notify_waiters();
                    // The first try is at once: the leader takes a lock missing for longer
                    // than `liveness`'s confirmation for a dead node. Not after a connection
                    // that lasted under a second, so one that keeps dropping is not retried
                    // in a tight loop.
                    if up_at.elapsed() >= Duration::from_secs(1) {
                        continue;
                    }
                }
                Err(e) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(Err(e));
                        return;
                    }
                    tracing::warn!(error = %e, retry_in = ?backoff, "reconnecting the database session failed");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Connects, listens and re-takes the node locks. Resolves the returned receiver when the
    /// connection ends.
    async fn connect(&self) -> Result<oneshot::Receiver<String>> {
        let (client, mut conn) = self
            .pg
            .connect(self.tls.clone())
            .await
            .map_err(|e| map_pg(&self.target, e))?;
        let (closed_tx, closed_rx) = oneshot::channel();
        let wake = self.wake.clone();
        let routes = self.routes.clone();
        let origin = self.origin.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            let reason = loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(n))) => match n.payload() {
                        ROUTES => routes.notify_waiters(),
                        own if own == origin => {}
                        _ => wake.notify_waiters(),
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "closed".to_owned(),
                }
            };
            let _ = closed_tx.send(reason);
        });
        let pg = |e| map_pg(&self.target, e);
        client
            .batch_execute(&format!("LISTEN \"{}\"", self.channel))
            .await
            .map_err(pg)?;
        let mut st = self.state.lock().await;
        for (node, key) in &st.nodes {
            // The old backend may take a moment to notice its client is gone.
            let mut taken = false;
            for _ in 0..20 {
                taken = client
                    .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&self.ns, key])
                    .await
                    .map_err(pg)?
                    .get(0);
                if taken {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if !taken {
                // Carrying on without it would have the leader judge this live node dead
                // and run its jobs twice: drop this connection and try again instead.
                tracing::error!(%node, "could not take this node's lock again; another session holds it; reconnecting");
                return Err(StoreError::database(format!(
                    "node {node}'s lock {key} is held by another session"
                )));
            }
        }
        st.client = Some(client);
        st.leader = false;
        *self.up_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(closed_rx)
    }

    /// Takes a lock for a new node (or returns the one it has) and records it.
    pub(crate) async fn lock_node(&self, node: &str) -> Result<i32> {
        let mut st = self.state.lock().await;
        if let Some(key) = st.nodes.get(node) {
            return Ok(*key);
        }
        let client = st.client.as_ref().ok_or_else(|| self.down())?;
        let pg = |e| map_pg(&self.target, e);
        let key: i32 = client
            .query_one(
                &format!(
                    "SELECT nextval('{}.mend_node_lock_seq')::int4",
                    self.schema_q
                ),
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, $2)", &[&self.ns, &key])
            .await
            .map_err(pg)?
            .get(0);
        if !taken {
            return Err(StoreError::database(format!(
                "node lock {key} is held by another session (lock sequence wrapped?)"
            )));
        }
        st.nodes.insert(node.to_owned(), key);
        Ok(key)
    }

    /// Releases the locks of nodes this store registered.
    pub(crate) async fn unlock_nodes(&self, ids: &[String]) {
        let mut st = self.state.lock().await;
        let keys: Vec<i32> = ids.iter().filter_map(|id| st.nodes.remove(id)).collect();
        if let Some(client) = st.client.as_ref() {
            for key in keys {
                if let Err(e) = client
                    .execute("SELECT pg_advisory_unlock($1, $2)", &[&self.ns, &key])
                    .await
                {
                    tracing::debug!(error = %e, "releasing a node lock failed; it goes with the session");
                }
            }
        }
    }

    /// Whether this session leads maintenance, taking the lead if nobody holds it.
    pub(crate) async fn lead(&self) -> Result<bool> {
        let mut st = self.state.lock().await;
        let Some(client) = st.client.as_ref() else {
            return Ok(false);
        };
        if st.leader {
            return Ok(true);
        }
        let taken: bool = client
            .query_one("SELECT pg_try_advisory_lock($1, 0)", &[&self.ns])
            .await
            .map_err(|e| map_pg(&self.target, e))?
            .get(0);
        if taken {
            tracing::info!("this process now leads maintenance (rescue of dead nodes)");
        }
        st.leader = taken;
        Ok(taken)
    }

    fn down(&self) -> StoreError {
        StoreError::Unavailable {
            target: self.target.clone(),
            detail: "the session connection is down; reconnecting".into(),
            source: None,
        }
    }
}
