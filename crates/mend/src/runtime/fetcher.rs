//! The fetcher: one per queue. It waits for free slots, claims as many jobs as there are free
//! slots (and, while the queue is busy, a few more: claiming ahead) in one store call, and
//! spawns an executor for each. It sleeps on the store's wake-up (jobs inserted) or the poll
//! interval, whichever comes first.
//!
//! Claiming ahead: with few slots and short jobs, the slots empty long before the next claim
//! returns, so the queue runs at one round trip per `concurrency` jobs. While the last claim
//! filled every free slot, the fetcher also claims what runs during two claims' round trips
//! at the queue's current pace (at most four jobs per slot), so jobs slower than a round trip
//! get none. A job claimed ahead waits in its executor for a slot, leased and heartbeaten like
//! a running one. Shutdown releases those still waiting without using an attempt, as does a
//! wait past a second (the pace changed; another node may be idle); a cancel reaches them; a
//! `kill -9` loses them like the running ones (they are rescued as `lost`). While a rollout
//! routes this node's claims, nothing is claimed ahead (see below).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{executor, Shared, MAX_CLAIM_BATCH};
use crate::store::ClaimParams;

/// While the queue is busy (the last claim filled every free slot), wait for half the slots to
/// free up, or at most this long, before claiming, so one claim takes many jobs instead of one
/// claim per finished job. It never delays an idle queue: a claim that came back short means
/// the next job starts as soon as it is enqueued.
const BUSY_FETCH_COOLDOWN: Duration = Duration::from_millis(1);

/// Longest pause between claim attempts while the store keeps failing.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// Most jobs claimed ahead per slot. The pace decides how many below this; the cap bounds the
/// jobs a sudden slowdown can leave waiting (each for at most a second: see the executor).
const AHEAD_PER_SLOT: usize = 4;

/// How many round trips' worth of jobs are claimed ahead: two, so a claim that takes twice as
/// long as usual still finds work waiting when it returns.
const AHEAD_ROUND_TRIPS: f64 = 2.0;

/// Weight of the newest sample in the pace's moving averages.
const PACE_WEIGHT: f64 = 0.2;

/// A queue's pace while busy: how long a claim takes and how fast claimed jobs are taken up.
/// Their product is how many jobs run during one claim's round trip.
#[derive(Debug, Default)]
struct Pace {
    /// Seconds per claim (moving average).
    round_trip: f64,
    /// Jobs per second taken while the queue was busy (moving average).
    rate: f64,
    /// When the previous claim returned.
    last: Option<Instant>,
    /// How many jobs it returned.
    last_got: usize,
}

/// Whether `sample` says the pace dropped below half of `rate`: slowing down counts at once
/// (jobs claimed ahead would wait), speeding up is averaged.
fn slower(rate: f64, sample: f64) -> bool {
    sample < rate / 2.0
}

impl Pace {
    /// A claim that took `took` returned `got` jobs at `now`, filling every free slot when
    /// `full`.
    fn claimed(&mut self, got: usize, took: Duration, full: bool, now: Instant) {
        let average = |old: f64, new: f64| {
            if old == 0.0 {
                new
            } else {
                old + PACE_WEIGHT * (new - old)
            }
        };
        self.round_trip = average(self.round_trip, took.as_secs_f64());
        match self.last {
            Some(last) if full => {
                let since = now.duration_since(last).as_secs_f64().max(1e-6);
                let rate = got as f64 / since;
                self.rate = if slower(self.rate, rate) {
                    rate
                } else {
                    average(self.rate, rate)
                };
            }
            // A queue that ran dry starts over: the next busy spell sets its own pace.
            _ if !full => self.rate = 0.0,
            _ => {}
        }
        self.last = Some(now);
        self.last_got = got;
    }

    /// Jobs to claim beyond the free slots at `now`, at most `max`.
    fn ahead(&self, max: usize, now: Instant) -> usize {
        // The time since the last claim is a sample too: if its jobs took much longer to
        // make room than the pace says, they got slower.
        let rate = match self.last {
            Some(last) => {
                let since = now.duration_since(last).as_secs_f64().max(1e-6);
                let provisional = self.last_got as f64 / since;
                if slower(self.rate, provisional) {
                    provisional
                } else {
                    self.rate
                }
            }
            None => self.rate,
        };
        let jobs = (rate * self.round_trip * AHEAD_ROUND_TRIPS).floor();
        if jobs >= max as f64 {
            max
        } else {
            // In range: not negative, below `max`.
            jobs.max(0.0) as usize
        }
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    queue: String,
    concurrency: usize,
    stop: CancellationToken,
) {
    // `run` bounds the attempts running; `claims` bounds the jobs claimed and not yet done,
    // `concurrency` of them plus those claimed ahead (its size follows the pace).
    let run = Arc::new(Semaphore::new(concurrency));
    let claims = Arc::new(Semaphore::new(concurrency));
    let mut claims_size = concurrency;
    let ahead_max = if shared.config.claim_ahead {
        concurrency
            .saturating_mul(AHEAD_PER_SLOT)
            .min(MAX_CLAIM_BATCH)
    } else {
        0
    };
    let mut pace = Pace::default();
    let wake = shared.store.wakeup();
    let mut error_backoff = Duration::from_millis(50);
    let mut busy = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            p = claims.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        if busy {
            // Wait for half the slots to free up (or the cooldown), then claim them together.
            let half = u32::try_from(concurrency / 2)
                .unwrap_or(u32::MAX)
                .saturating_sub(1);
            if half > 0 {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    p = claims.acquire_many(half) => drop(p),
                    _ = tokio::time::sleep(BUSY_FETCH_COOLDOWN) => {}
                }
            }
        }
        // Backpressure: while the completer is far behind, claim nothing more.
        if shared.backlog.available_permits() == 0 {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                p = shared.backlog.acquire() => drop(p),
            }
        }
        // Size the places claimed ahead to the pace now: a long wait for the first place
        // says the jobs got slower. While a rollout routes claims, none: a cut-off must reach
        // every job that has not started, and a job claimed on the canary side would still
        // run the canary after it.
        let plan = shared.plan();
        let wanted_size = concurrency
            + if busy && plan.routes.is_empty() {
                pace.ahead(ahead_max, Instant::now())
            } else {
                0
            };
        if wanted_size > claims_size {
            claims.add_permits(wanted_size - claims_size);
            claims_size = wanted_size;
        } else if wanted_size < claims_size {
            // Only free places can go now; the rest go as their jobs finish (below).
            claims_size -= claims.forget_permits(claims_size - wanted_size);
        }
        let mut permits = vec![first];
        while permits.len() < MAX_CLAIM_BATCH {
            match claims.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        // Shrinking the places claimed ahead: those that came back since go now, and with
        // none left to claim with, wait for the next one back.
        while claims_size > wanted_size {
            let Some(p) = permits.pop() else { break };
            p.forget();
            claims_size -= 1;
        }
        if permits.is_empty() {
            continue;
        }
        // Arm the wake-up before claiming so an insert that lands during the claim is not missed.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        let wanted = permits.len();
        if plan.claims_nothing() {
            // Every kind here is pinned to versions this node does not serve.
            drop(permits);
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(shared.config.poll_interval) => {}
            }
            continue;
        }
        // The places beyond the free slots: their jobs would wait for one.
        let ahead = wanted.saturating_sub(run.available_permits());
        let began = Instant::now();
        let claimed = shared
            .store
            .claim(ClaimParams {
                queue: queue.clone(),
                kinds: plan.kinds.clone(),
                limit: wanted,
                lease_owner: shared.node.id.clone(),
                lease_duration: shared.config.lease_duration,
                now: Utc::now(),
                routes: plan.routes.clone(),
                ahead,
            })
            .await;
        match claimed {
            Ok(jobs) => {
                error_backoff = Duration::from_millis(50);
                let got = jobs.len();
                busy = got == wanted;
                pace.claimed(got, began.elapsed(), busy, Instant::now());
                for job in jobs {
                    let Some(permit) = permits.pop() else { break };
                    let slot = executor::Slot {
                        _claim: permit,
                        run: run.clone(),
                        stop: stop.clone(),
                        canary: plan.routes_to_canary(&job.kind, job.version.as_deref()),
                    };
                    // The enqueue's trace context: the attempt joins that trace and links to the enqueue.
                    let span = tracing::info_span!("job", id = %job.id, kind = %job.kind, queue = %job.queue, attempt = job.attempt, node = %shared.node.id, traceparent = job.trace_parent.as_deref());
                    crate::trace::continue_trace(&span, job.trace_parent.as_deref(), true);
                    shared
                        .tracker
                        .spawn(executor::execute(shared.clone(), job, slot).instrument(span));
                }
                drop(permits);
                // Short of the free slots: the queue ran dry (a queue with limits claims
                // nothing ahead, so it is full at `wanted - ahead`).
                if got < wanted - ahead {
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(shared.config.poll_interval) => {}
                    }
                }
            }
            Err(e) => {
                busy = false;
                drop(permits);
                tracing::warn!(queue = %queue, error = %e, retry_in = ?error_backoff, "claim failed; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(error_backoff) => {}
                }
                error_backoff = (error_backoff * 2).min(MAX_ERROR_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn claims_ahead_what_runs_in_a_round_trip_and_nothing_for_jobs_slower_than_one() {
        let t0 = Instant::now();
        // Jobs that take no time on 16 slots: a full claim of 16 every 1.5 ms, each taking
        // 1 ms. About 10,700 jobs/s × 1 ms × 2 round trips: more than the cap.
        let mut quick = Pace::default();
        for i in 1..=20 {
            quick.claimed(16, ms(1), true, t0 + Duration::from_micros(1500 * i));
        }
        assert_eq!(quick.ahead(16, t0 + ms(31)), 16);
        assert_eq!(quick.ahead(0, t0 + ms(31)), 0, "turned off");

        // Jobs of 60 ms on 16 slots: a full claim of one every ~4 ms.
        let mut slow = Pace::default();
        for i in 1..=20 {
            slow.claimed(1, ms(1), true, t0 + ms(4 * i));
        }
        assert_eq!(slow.ahead(16, t0 + ms(81)), 0);

        // In between: jobs of ~4 ms on 4 slots, a claim of 4 every 4 ms taking 2 ms: 1,000
        // jobs/s × 2 ms × 2 = 4.
        let mut middle = Pace::default();
        for i in 1..=40 {
            middle.claimed(4, ms(2), true, t0 + ms(4 * i));
        }
        assert_eq!(middle.ahead(16, t0 + ms(161)), 4);

        // Jobs that suddenly take long: one full claim a second after the last stops claiming
        // ahead at once.
        let mut turned = Pace::default();
        for i in 1..=20 {
            turned.claimed(16, ms(1), true, t0 + Duration::from_micros(1500 * i));
        }
        turned.claimed(4, ms(1), true, t0 + ms(1030));
        assert_eq!(turned.ahead(16, t0 + ms(1031)), 0);

        // Waiting long for room counts before the next claim returns.
        let mut waited = Pace::default();
        for i in 1..=20 {
            waited.claimed(16, ms(1), true, t0 + Duration::from_micros(1500 * i));
        }
        assert_eq!(waited.ahead(16, t0 + ms(500)), 0);

        // A claim that comes back short (the queue ran dry) starts the pace over.
        quick.claimed(3, ms(1), false, t0 + ms(100));
        assert_eq!(quick.ahead(16, t0 + ms(101)), 0);
    }
}
