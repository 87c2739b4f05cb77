//! `mend bench --finished N`: stores N finished jobs before the clocks start, so a run shows
//! whether the cost per job stays flat as the table of kept jobs grows (issue 13's target:
//! 10,000,000 finished jobs, throughput within 20% of an empty table, memory flat).
//!
//! The rows are written set-based in the database (PostgreSQL `generate_series`, a recursive
//! CTE on SQLite), in chunks of one transaction each, not through the store: ten million
//! jobs through `insert_many` and a worker would take longer than the runs they serve. They
//! look like what mend keeps after a busy hour: `completed` on a queue of their own, one
//! attempt, finalized over the hour before the fill (well inside the default week of
//! retention, so the bench's pruner leaves them alone). Their ids are fixed (a UUIDv7 whose
//! time is 2020-01-01 plus the row's number in milliseconds), so they sort before any job
//! the bench enqueues, and a second run finds the chunks already there and skips them: fill
//! once, then alternate runs against the filled database and an empty one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The queue the finished jobs are stored on.
pub(crate) const QUEUE: &str = "bench-history";
/// Rows per transaction.
const CHUNK: i64 = 250_000;
/// The time part of row 0's id: 2020-01-01T00:00:00Z in milliseconds.
const ID_EPOCH_MS: i64 = 1_577_836_800_000;
/// The span the rows' `finalized_at` is spread over, ending at the fill.
const SPREAD: Duration = Duration::from_secs(3600);

/// Stores `n` finished jobs in the database at `url` (already migrated). Says on stderr
/// what it does when it writes anything.
pub(crate) async fn finished(url: &str, n: u64) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let n = i64::try_from(n).context("--finished is too large")?;
    let now_us = chrono::Utc::now().timestamp_micros();
    let spread_us = i64::try_from(SPREAD.as_micros()).unwrap_or(i64::MAX);
    let started = Instant::now();
    let written = if crate::db::is_postgres(url) {
        postgres(url, n, now_us, spread_us).await?
    } else {
        let path = mend_sqlite::parse_url(url)?;
        tokio::task::spawn_blocking(move || sqlite(&path, n, now_us, spread_us))
            .await
            .context("the SQLite fill panicked")??
    };
    if written > 0 {
        eprintln!(
            "stored {written} finished jobs on queue {QUEUE} in {:.1} s ({n} wanted, the rest were there)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The chunks `[from, to]` of rows `0..n`. A chunk whose last row is stored is skipped; rows
/// of a chunk stored in part (a smaller N earlier: chunks end where N says) are left as they
/// are by the insert, which ignores ids already there.
fn chunks(n: i64) -> impl Iterator<Item = (i64, i64)> {
    (0..n)
        .step_by(usize::try_from(CHUNK).unwrap_or(usize::MAX))
        .map(move |from| (from, (from + CHUNK).min(n) - 1))
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str, n: i64, now_us: i64, spread_us: i64) -> anyhow::Result<u64> {
    let schema = mend_postgres::split_schema(url)
        .1
        .unwrap_or_else(|| "mend".to_owned());
    if schema.contains('"') {
        bail!("the schema name {schema:?} cannot hold a double quote");
    }
    let client = mend_postgres::connect(url)
        .await
        .context("connecting to fill the table")?;
    // Row g's id: the time part is `ID_EPOCH_MS` ($1) + g, the random part g.
    let id = |g: &str| {
        format!("(lpad(to_hex($1::int8 + {g}), 12, '0') || '70008' || lpad(to_hex({g}), 15, '0'))::uuid")
    };
    let exists = client
        .prepare(&format!(
            "SELECT EXISTS (SELECT 1 FROM \"{schema}\".mend_jobs WHERE id = {})",
            id("$2::int8")
        ))
        .await?;
    // One attempt, finished over the hour before `now`, in the order of the ids.
    let insert = client
        .prepare(&format!(
            "INSERT INTO \"{schema}\".mend_jobs \
               (id, queue, kind, args, state, attempt, max_attempts, run_at, created_at, \
                attempted_at, finalized_at) \
             SELECT {}, $2, 'mend.bench.noop', '{{}}'::json, 'completed', 1, 25, t, t, t, t \
             FROM generate_series($3::int8, $4::int8) AS g, \
                  LATERAL (SELECT to_timestamp(($5::int8 - $6::int8 + $6::int8 * g / $7::int8) / 1e6) AS t) AS at \
             ON CONFLICT (id) DO NOTHING",
            id("g")
        ))
        .await?;
    let mut written = 0;
    for (from, to) in chunks(n) {
        let there: bool = client
            .query_one(&exists, &[&ID_EPOCH_MS, &to])
            .await?
            .get(0);
        if there {
            continue;
        }
        written += client
            .execute(
                &insert,
                &[&ID_EPOCH_MS, &QUEUE, &from, &to, &now_us, &spread_us, &n],
            )
            .await
            .with_context(|| format!("storing finished jobs {from}..={to}"))?;
        eprintln!("  {} of {n} finished jobs stored", to + 1);
    }
    if written > 0 {
        // What a table that grew over time has had: its statistics and visibility map.
        client
            .batch_execute(&format!("VACUUM (ANALYZE) \"{schema}\".mend_jobs"))
            .await
            .context("vacuuming after the fill")?;
    }
    Ok(written)
}

#[cfg(not(feature = "postgres"))]
async fn postgres(url: &str, _: i64, _: i64, _: i64) -> anyhow::Result<u64> {
    bail!(
        "{}: this mend was built without PostgreSQL support",
        crate::db::redact(url)
    )
}

fn sqlite(path: &str, n: i64, now_us: i64, spread_us: i64) -> anyhow::Result<u64> {
    let conn = rusqlite::Connection::open(path).with_context(|| format!("opening {path}"))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Row g's id, as on PostgreSQL.
    let id = |g: &str| format!("unhex(printf('%012x70008%015x', ?1 + {g}, {g}))");
    let mut written = 0;
    for (from, to) in chunks(n) {
        let there: bool = conn.query_row(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM mend_jobs WHERE id = {})",
                id("?2")
            ),
            rusqlite::params![ID_EPOCH_MS, to],
            |r| r.get(0),
        )?;
        if there {
            continue;
        }
        let tx = conn.unchecked_transaction()?;
        let rows = tx
            .execute(
                &format!(
                    "INSERT OR IGNORE INTO mend_jobs \
                       (id, queue, kind, args, state, attempt, max_attempts, run_at, created_at, \
                        attempted_at, finalized_at) \
                     WITH RECURSIVE s(g) AS (SELECT ?3 UNION ALL SELECT g + 1 FROM s WHERE g < ?4) \
                     SELECT {}, ?2, 'mend.bench.noop', '{{}}', 'completed', 1, 25, t, t, t, t \
                     FROM (SELECT g, ?5 - ?6 + ?6 * g / ?7 AS t FROM s)",
                    id("g")
                ),
                rusqlite::params![ID_EPOCH_MS, QUEUE, from, to, now_us, spread_us, n],
            )
            .with_context(|| format!("storing finished jobs {from}..={to}"))?;
        tx.commit()?;
        written += u64::try_from(rows).unwrap_or(0);
        eprintln!("  {} of {n} finished jobs stored", to + 1);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_row_once() {
        let got: Vec<_> = chunks(2 * CHUNK + 3).collect();
        assert_eq!(
            got,
            [
                (0, CHUNK - 1),
                (CHUNK, 2 * CHUNK - 1),
                (2 * CHUNK, 2 * CHUNK + 2)
            ]
        );
        assert_eq!(chunks(1).collect::<Vec<_>>(), [(0, 0)]);
    }
}
