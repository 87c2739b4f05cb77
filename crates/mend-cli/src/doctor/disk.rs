//! SQLite's disk: how long an fsync takes in the database's directory (every commit waits
//! for one), free space there, and the size of the write-ahead log.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::Finding;

/// Commits slower than this per fsync cap throughput at a few dozen batches a second.
const FSYNC_WARN: Duration = Duration::from_millis(50);
/// Free space below this fails (SQLite cannot grow the file or the WAL); below `WARN`, warns.
const FREE_FAIL: u64 = 100 << 20;
const FREE_WARN: u64 = 1 << 30;
/// A WAL this large means checkpoints are not keeping up (usually a long-lived reader).
const WAL_WARN: u64 = 512 << 20;
/// How many fsyncs are timed.
const FSYNC_TRIES: u32 = 5;

/// The three disk checks for the SQLite database `url` names (nothing when it has no file).
pub(super) fn check(url: &str, out: &mut Vec<Finding>) {
    let Ok(path) = mend_sqlite::parse_url(url) else {
        return;
    };
    let file = Path::new(&path);
    if !file.exists() {
        return;
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    out.push(fsync(&dir));
    out.push(free_space(&dir));
    out.push(wal(&path));
}

/// Writes and fsyncs a small temporary file a few times; reports the slowest.
fn fsync(dir: &Path) -> Finding {
    let tmp = dir.join(format!(".mend-doctor-{}.tmp", std::process::id()));
    let timed = (|| -> std::io::Result<Duration> {
        let mut f = std::fs::File::create(&tmp)?;
        let block = [0u8; 4096];
        let mut slowest = Duration::ZERO;
        for _ in 0..FSYNC_TRIES {
            let start = Instant::now();
            f.write_all(&block)?;
            f.sync_all()?;
            slowest = slowest.max(start.elapsed());
        }
        Ok(slowest)
    })();
    let _ = std::fs::remove_file(&tmp);
    match timed {
        Err(e) => Finding::warn(
            "fsync",
            format!("cannot write a test file in {}: {e}", dir.display()),
            "mend must be able to create files next to the database (its WAL and journal); check the directory's permissions",
        ),
        Ok(t) if t > FSYNC_WARN => Finding::warn(
            "fsync",
            format!(
                "an fsync in {} takes up to {} ms; every commit waits for one",
                dir.display(),
                t.as_millis()
            ),
            "put the database on a local SSD (not a network or overlay filesystem)",
        ),
        Ok(t) => Finding::ok(
            "fsync",
            format!("fsync in {} takes up to {} ms", dir.display(), t.as_millis()),
        ),
    }
}

/// Free space for unprivileged users in `dir`.
fn free_space(dir: &Path) -> Finding {
    let st = match rustix::fs::statvfs(dir) {
        Ok(st) => st,
        Err(e) => {
            return Finding::warn(
                "disk_space",
                format!("cannot read the free space of {}: {e}", dir.display()),
                "check the directory exists and is readable",
            )
        }
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let shown = format!("{} MiB free in {}", free >> 20, dir.display());
    if free < FREE_FAIL {
        Finding::fail(
            "disk_space",
            shown,
            "free disk space now: mend cannot commit when the disk is full (lower retention_hours to prune finished jobs sooner)",
        )
    } else if free < FREE_WARN {
        Finding::warn(
            "disk_space",
            shown,
            "free some disk space or move the database to a larger disk",
        )
    } else {
        Finding::ok("disk_space", shown)
    }
}

/// The size of the database's write-ahead log.
fn wal(path: &str) -> Finding {
    let wal = format!("{path}-wal");
    let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    let shown = format!("WAL file is {} MiB", size >> 20);
    if size > WAL_WARN {
        Finding::warn(
            "wal",
            shown,
            "checkpoints are not keeping up: look for a long-running reader (a backup, an open sqlite3 shell) holding a snapshot and end it",
        )
    } else {
        Finding::ok("wal", shown)
    }
}
