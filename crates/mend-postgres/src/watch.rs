//! The maintenance leader's lock watchers: one connection per other node, blocked in
//! `pg_advisory_lock` on that node's lock, so the leader hears of a death the moment
//! PostgreSQL releases the lock (a killed process's backends exit as soon as their sockets
//! close) instead of at its next look. A blocked connection sends nothing while it waits, so
//! idle nodes stay quiet; the price is a connection per watched node on the leader, capped
//! at [`MAX_WATCHED`] (nodes beyond it are found by the leader's periodic look, as before).
//!
//! A watcher that gets the lock gives it back at once (a node whose connection was only cut
//! must be able to re-lock) and wakes the rescuer; `liveness` still confirms the lock stays
//! missing before it judges the node dead.
//!
//! A process that does not lead watches the leader's lock the same way, so that when the
//! leader dies its rescuer tries to take the lead at once rather than at its next tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;

use crate::liveness::SESSION_GRACE;
use crate::session::Session;

/// Most nodes a leader watches with a connection of its own.
pub(crate) const MAX_WATCHED: usize = 32;
/// How long one lock wait lasts before it is issued again. A watcher dropped mid-wait leaves
/// its backend waiting (PostgreSQL does not notice a client gone while it waits on a lock),
/// so the wait is bounded: such a backend goes within this long.
const WAIT_LIMIT: &str = "60s";
/// The name the leader's lock (key 0, see `Session::lead`) is watched under; no node id
/// looks like it.
const LEADER: &str = "(leader)";
/// Pause before a watcher whose connection failed connects again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The running watchers, by node id.
pub(crate) struct Watchers {
    tasks: Mutex<HashMap<String, (i32, JoinHandle<()>)>>,
    /// The rescuer's wake-up.
    pub(crate) rescue: Arc<Notify>,
}

impl Watchers {
    pub(crate) fn new() -> Self {
        Watchers {
            tasks: Mutex::new(HashMap::new()),
            rescue: Arc::new(Notify::new()),
        }
    }

    /// Watches exactly `nodes` (id, lock key: the other nodes seen holding their lock), up to
    /// [`MAX_WATCHED`]: starts a watcher for each new one (or one whose watcher has fired) and
    /// stops those of nodes no longer listed.
    pub(crate) fn sync(&self, session: &Arc<Session>, nodes: &[(String, i32)]) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|id, (key, task)| {
            let keep = !task.is_finished() && nodes.iter().any(|(n, k)| n == id && k == key);
            if !keep {
                task.abort();
            }
            keep
        });
        for (id, key) in nodes {
            if tasks.len() >= MAX_WATCHED {
                break;
            }
            if tasks.contains_key(id) {
                continue;
            }
            // A young process that sees the leader die lets older ones take the lead first:
            // a new leader judges nobody by their locks until its session is past the grace.
            let young_waits = (id == LEADER).then(|| session.clone());
            let task = tokio::spawn(watch(
                session.pg.clone(),
                session.tls.clone(),
                session.ns,
                *key,
                self.rescue.clone(),
                young_waits,
            ));
            tasks.insert(id.clone(), (*key, task));
        }
    }

    /// Watches only the maintenance leader's lock (this process does not lead).
    pub(crate) fn watch_leader(&self, session: &Arc<Session>) {
        self.sync(session, &[(LEADER.to_owned(), 0)]);
    }

    /// Stops every watcher (the session is down, or the store is dropped).
    pub(crate) fn stop_all(&self) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        for (_, (_, task)) in tasks.drain() {
            task.abort();
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Waits for the lock (`ns`, `key`) to be free, takes it, gives it back, and wakes the
/// rescuer (with `young_waits`, not before that session is past `liveness`'s grace).
/// Reconnects when its connection fails; never ends otherwise.
async fn watch(
    pg: tokio_postgres::Config,
    tls: crate::tls::MakeRustls,
    ns: i32,
    key: i32,
    rescue: Arc<Notify>,
    young_waits: Option<Arc<Session>>,
) {
    loop {
        if let Ok((client, conn)) = pg.connect(tls.clone()).await {
            let conn = tokio::spawn(conn);
            let set = format!("SET statement_timeout = '{WAIT_LIMIT}'");
            if client.batch_execute(&set).await.is_ok() {
                loop {
                    match client
                        .query_one("SELECT pg_advisory_lock($1, $2)", &[&ns, &key])
                        .await
                    {
                        Ok(_) => {
                            // Given back at once: a node whose connection was only cut takes
                            // it again when it reconnects (it retries for a second).
                            let _ = client
                                .query_one("SELECT pg_advisory_unlock($1, $2)", &[&ns, &key])
                                .await;
                            conn.abort();
                            if let Some(session) = young_waits {
                                let left = SESSION_GRACE.saturating_sub(session.up_for());
                                tokio::time::sleep(left).await;
                            }
                            rescue.notify_one();
                            return;
                        }
                        Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => continue,
                        Err(_) => break,
                    }
                }
            }
            conn.abort();
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}
