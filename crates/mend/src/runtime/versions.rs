//! Attempts per kind and handler version since start, for `/metrics`: outcome counts and run
//! times of every attempt that ran a recorded version (routed kinds: under a rollout, or
//! pinned after one; `""` is the unversioned handler). Jobs of kinds never routed carry no
//! version and cost nothing here.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::histogram::Histogram;
use crate::stats::Ended;

/// One kind and version's counts.
#[derive(Debug, Default)]
pub struct VersionCounts {
    /// Attempts by how they ended, indexed by [`Ended`] (see [`Ended::ALL`]).
    ended: [AtomicU64; Ended::ALL.len()],
    /// How long the attempts ran (those whose run time is known).
    pub run_time: Histogram,
}

impl VersionCounts {
    /// (outcome name, attempts) for every outcome, zeros included, in [`Ended::ALL`]'s order.
    pub fn outcomes(&self) -> [(&'static str, u64); Ended::ALL.len()] {
        Ended::ALL.map(|e| (e.name(), self.ended[e as usize].load(Ordering::Relaxed)))
    }
}

/// The counts of every (kind, version) seen.
#[derive(Debug, Default)]
pub struct VersionStats {
    by: Mutex<BTreeMap<(String, String), Arc<VersionCounts>>>,
}

impl VersionStats {
    /// Counts one attempt of `kind` run by `version`.
    pub(crate) fn record(&self, kind: &str, version: &str, ended: Ended, run: Option<Duration>) {
        let counts = {
            let mut by = self.by.lock().unwrap_or_else(|p| p.into_inner());
            by.entry((kind.to_owned(), version.to_owned()))
                .or_default()
                .clone()
        };
        counts.ended[ended as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(r) = run {
            counts.run_time.observe(r);
        }
    }

    /// Every (kind, version) seen, in order, with its counts.
    pub fn all(&self) -> Vec<((String, String), Arc<VersionCounts>)> {
        let by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        by.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_per_kind_version_and_outcome() {
        let s = VersionStats::default();
        s.record(
            "resize",
            "v2",
            Ended::Completed,
            Some(Duration::from_millis(3)),
        );
        s.record(
            "resize",
            "v2",
            Ended::Retried,
            Some(Duration::from_millis(4)),
        );
        s.record("resize", "v2", Ended::Lost, None);
        s.record(
            "resize",
            "",
            Ended::Completed,
            Some(Duration::from_millis(1)),
        );
        let all = s.all();
        assert_eq!(all.len(), 2);
        let ((kind, version), v2) = &all[1];
        assert_eq!((kind.as_str(), version.as_str()), ("resize", "v2"));
        let o = v2.outcomes();
        assert_eq!(o[0], ("completed", 1));
        assert_eq!(o[1], ("retried", 1));
        assert_eq!(o[4], ("lost", 1));
        assert_eq!(v2.run_time.snapshot().2, 2, "two run times known");
        assert_eq!(all[0].0 .1, "", "the unversioned handler");
        // `ended as usize` indexes Ended::ALL.
        for (i, e) in Ended::ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
        }
    }
}
