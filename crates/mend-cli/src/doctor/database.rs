//! Checks of the database itself: reachable, schema version against this build (read without
//! migrating), and the clock of the database server against this host's.

use chrono::{DateTime, Utc};
use mend::store::DoctorStats;

use super::Finding;

/// Clock differences above this are worth fixing: leases, schedules and node liveness all
/// compare times written by different clocks.
const SKEW_WARN: chrono::Duration = chrono::Duration::seconds(2);

/// Reads the schema version and reports reachability and the version; `true` when the store
/// can be opened without migrating (the schema is exactly this build's).
pub(super) async fn reachable_and_schema(url: &str, out: &mut Vec<Finding>) -> bool {
    let postgres = crate::db::is_postgres(url);
    let found = match read_version(url).await {
        Ok(v) => v,
        Err(e) => {
            let fix = if postgres {
                "start PostgreSQL or fix the URL (host, port, database, user, password), and check the network between this host and the server"
            } else {
                "check the path and that this user may read it; a new deployment creates the file with `mend migrate`"
            };
            out.push(Finding::fail(
                "database",
                format!("cannot reach the database: {}", crate::chain(&e)),
                fix,
            ));
            return false;
        }
    };
    out.push(Finding::ok("database", "reachable"));
    let known = crate::db::schema_version(url);
    if found == 0 {
        out.push(Finding::fail(
            "schema",
            format!("no mend schema yet (this mend needs version {known})"),
            "run `mend migrate` (with the same --database) to create it",
        ));
        false
    } else if found < known {
        out.push(Finding::fail(
            "schema",
            format!("the schema is at version {found}, this mend needs version {known}"),
            "run `mend migrate` (with the same --database)",
        ));
        false
    } else if found > known {
        out.push(Finding::fail(
            "schema",
            format!("the schema is at version {found}, newer than this mend knows ({known})"),
            "upgrade mend to the version that wrote this database",
        ));
        false
    } else {
        out.push(Finding::ok(
            "schema",
            format!("version {found} (up to date)"),
        ));
        true
    }
}

/// The database's schema version, without migrating.
async fn read_version(url: &str) -> anyhow::Result<i64> {
    if crate::db::is_postgres(url) {
        return read_pg_version(url).await;
    }
    Ok(mend_sqlite::doctor::schema_version(url)?)
}

#[cfg(feature = "postgres")]
async fn read_pg_version(url: &str) -> anyhow::Result<i64> {
    Ok(mend_postgres::doctor::schema_version(url).await?)
}

#[cfg(not(feature = "postgres"))]
async fn read_pg_version(url: &str) -> anyhow::Result<i64> {
    anyhow::bail!(
        "{}: this mend was built without PostgreSQL support",
        crate::db::redact(url)
    )
}

/// This host's clock against the database server's, where the server has one.
pub(super) fn clock(stats: &DoctorStats, now: DateTime<Utc>, out: &mut Vec<Finding>) {
    let Some(db_now) = stats.database_now else {
        return;
    };
    let skew = db_now - now;
    if skew.abs() > SKEW_WARN {
        out.push(Finding::warn(
            "clock",
            format!(
                "this host's clock is {} ms {} the database server's",
                skew.num_milliseconds().abs(),
                if skew > chrono::Duration::zero() {
                    "behind"
                } else {
                    "ahead of"
                }
            ),
            "run NTP (chrony or systemd-timesyncd) on every host",
        ));
    } else {
        out.push(Finding::ok(
            "clock",
            format!(
                "within {} ms of the database server",
                skew.num_milliseconds().abs()
            ),
        ));
    }
}
