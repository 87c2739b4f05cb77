//! Judging other nodes dead: the state machine beside `session`'s advisory locks.
//!
//! Each registered node holds a session advisory lock; PostgreSQL drops it the moment the
//! node's connection goes away, whatever killed the process. A node is dead when its
//! heartbeat is stale, or when its lock has been missing for [`CONFIRM_DEAD_AFTER`] — but a
//! missing lock right after *our* session (re)connected may only mean the database restarted
//! and the node has not re-locked yet, so for [`SESSION_GRACE`] nobody is judged by it unless
//! they were seen re-locked through this very connection. This module judges; it neither
//! takes locks (`session` does) nor rescues jobs (the leader's rescuer does). Between looks the
//! leader's `watch`ers wait on the other nodes' locks and wake the rescuer when one is
//! released, and a suspect is looked at again the moment its confirmation is due, so a
//! SIGKILLed node is judged about [`CONFIRM_DEAD_AFTER`] after its death, not up to a
//! [`RESCUE_EVERY`] later.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mend::store::Result;

use crate::row::micros;
use crate::PgStore;

/// How often the leader looks for dead nodes: a lock check is one cheap query. Deaths of
/// watched nodes wake it sooner (see `watch`).
pub(crate) const RESCUE_EVERY: Duration = Duration::from_millis(200);
/// A node whose lock is missing is dead only if it is still missing this much later (a node
/// whose session was cut reconnects at once and re-locks within this window: a connection,
/// a LISTEN and the lock).
const CONFIRM_DEAD_AFTER: Duration = Duration::from_millis(150);
/// After its own session (re)connects, the leader judges nobody by a missing lock for this
/// long: after a database restart every node needs a moment to take its lock again.
pub(crate) const SESSION_GRACE: Duration = Duration::from_millis(1500);

/// Another node as one look at the database saw it.
#[derive(Debug)]
pub(crate) struct Seen {
    /// The node.
    pub(crate) id: String,
    /// Its heartbeat is older than the cut-off.
    pub(crate) stale: bool,
    /// Nobody holds its advisory lock.
    pub(crate) unlocked: bool,
    /// Its lock key.
    pub(crate) key: i32,
}

/// Our own session connection at the time of a look.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OurSession {
    /// When the current connection was made (`None` while down): it names the connection.
    pub(crate) up_since: Option<Instant>,
    /// How long it has been up.
    pub(crate) up_for: Duration,
}

/// What the judge remembers between looks.
#[derive(Default)]
pub(crate) struct Liveness {
    /// Nodes whose lock was found missing, and when first (see [`CONFIRM_DEAD_AFTER`]).
    suspects: Mutex<HashMap<String, Instant>>,
    /// Nodes seen holding their lock, and through which session connection (its
    /// `up_since`). One seen since this session last connected has taken its lock back after
    /// any outage, so [`SESSION_GRACE`] need not cover it.
    relocked: Mutex<HashMap<String, Instant>>,
}

impl Liveness {
    /// The nodes of `seen` that are dead as of `now`, updating what is remembered.
    pub(crate) fn judge(&self, seen: Vec<Seen>, ours: OurSession, now: Instant) -> Vec<String> {
        let connection = ours.up_since;
        let grace_over = ours.up_for >= SESSION_GRACE;
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        let mut relocked = self.relocked.lock().unwrap_or_else(|p| p.into_inner());
        let mut missing = HashSet::new();
        let mut listed = HashSet::new();
        let mut dead = Vec::new();
        for Seen {
            id,
            stale,
            unlocked,
            ..
        } in seen
        {
            listed.insert(id.clone());
            if stale {
                dead.push(id);
            } else if unlocked {
                // A node that took its lock back since our last reconnect and then lost it
                // has died since: no need to wait out the grace meant for slow re-lockers.
                let back_since_reconnect =
                    connection.is_some() && relocked.get(&id) == connection.as_ref();
                let since = *suspects.entry(id.clone()).or_insert(now);
                if (grace_over || back_since_reconnect)
                    && now.duration_since(since) >= CONFIRM_DEAD_AFTER
                {
                    dead.push(id.clone());
                }
                missing.insert(id);
            } else if let Some(c) = connection {
                relocked.insert(id, c);
            }
        }
        suspects.retain(|id, _| missing.contains(id));
        relocked.retain(|id, _| listed.contains(id));
        dead
    }

    /// How long until the earliest suspect's confirmation is due, if one is still ahead.
    pub(crate) fn next_confirm(&self, now: Instant) -> Option<Duration> {
        let suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        suspects
            .values()
            .map(|since| (*since + CONFIRM_DEAD_AFTER).saturating_duration_since(now))
            .filter(|d| !d.is_zero())
            .min()
    }
}

/// The other nodes that are dead: stale since `stale_before`, or without their lock.
pub(crate) async fn dead_nodes(
    store: &PgStore,
    self_id: &str,
    stale_before: DateTime<Utc>,
) -> Result<Vec<String>> {
    let inner = &store.inner;
    let c = store.client().await?;
    let ns = i64::from(inner.session.ns);
    let rows = c
        .query(
            &inner.sql.dead_nodes,
            &[&self_id, &micros(stale_before), &ns],
        )
        .await
        .map_err(store.pg())?;
    let seen = rows
        .iter()
        .map(|r| {
            Ok(Seen {
                id: r.try_get(0).map_err(store.pg())?,
                stale: r.try_get(1).map_err(store.pg())?,
                unlocked: r.try_get(2).map_err(store.pg())?,
                key: r.try_get(3).map_err(store.pg())?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let alive: Vec<(String, i32)> = seen
        .iter()
        .filter(|s| !s.stale && !s.unlocked)
        .map(|s| (s.id.clone(), s.key))
        .collect();
    inner.watchers.sync(&inner.session, &alive);
    let ours = OurSession {
        up_since: inner.session.up_since(),
        up_for: inner.session.up_for(),
    };
    let now = Instant::now();
    let dead = inner.liveness.judge(seen, ours, now);
    if let Some(due) = inner.liveness.next_confirm(now) {
        // Look again when the confirmation is due rather than at the next tick.
        let rescue = inner.watchers.rescue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(due).await;
            rescue.notify_one();
        });
    }
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: &str, stale: bool, unlocked: bool) -> Seen {
        Seen {
            id: id.to_owned(),
            stale,
            unlocked,
            key: 1,
        }
    }

    fn session(up_since: Option<Instant>, up_for: Duration) -> OurSession {
        OurSession { up_since, up_for }
    }

    #[test]
    fn a_stale_node_is_dead_at_once() {
        let l = Liveness::default();
        let ours = session(None, Duration::ZERO);
        assert_eq!(
            l.judge(vec![seen("a", true, false)], ours, Instant::now()),
            ["a"]
        );
    }

    #[test]
    fn a_missing_lock_is_confirmed_before_the_node_is_judged_dead() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let ours = session(Some(t0), SESSION_GRACE);
        assert!(l.judge(vec![seen("a", false, true)], ours, t0).is_empty());
        let later = t0 + CONFIRM_DEAD_AFTER;
        assert_eq!(l.judge(vec![seen("a", false, true)], ours, later), ["a"]);
        // A node that took its lock back is no longer a suspect.
        assert!(l
            .judge(vec![seen("a", false, false)], ours, later)
            .is_empty());
        assert!(l
            .judge(
                vec![seen("a", false, true)],
                ours,
                later + Duration::from_millis(1)
            )
            .is_empty());
    }

    #[test]
    fn the_next_look_is_due_when_a_suspects_confirmation_is() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let ours = session(Some(t0), SESSION_GRACE);
        assert_eq!(l.next_confirm(t0), None, "no suspect, nothing due");
        assert!(l.judge(vec![seen("a", false, true)], ours, t0).is_empty());
        let step = Duration::from_millis(50);
        assert_eq!(l.next_confirm(t0 + step), Some(CONFIRM_DEAD_AFTER - step));
        // Once due, the look that judges it is the one being made: nothing more to schedule.
        assert_eq!(l.next_confirm(t0 + CONFIRM_DEAD_AFTER), None);
        assert_eq!(
            l.judge(vec![seen("a", false, true)], ours, t0 + CONFIRM_DEAD_AFTER),
            ["a"]
        );
    }

    #[test]
    fn within_the_grace_only_nodes_seen_relocked_on_this_connection_are_judged() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let young = session(Some(t0), Duration::ZERO);
        let later = t0 + CONFIRM_DEAD_AFTER;
        l.judge(vec![seen("back", false, false)], young, t0);
        l.judge(
            vec![seen("back", false, true), seen("slow", false, true)],
            young,
            t0,
        );
        assert_eq!(
            l.judge(
                vec![seen("back", false, true), seen("slow", false, true)],
                young,
                later
            ),
            ["back"]
        );
    }
}
