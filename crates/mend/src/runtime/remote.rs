//! What remote workers serve through this node: the kinds and handler versions they claimed
//! with over HTTP in the last minute. Remote workers are not nodes, so this node reports them
//! as its own (its registered `kinds` and `versions`): a rollout of a version only remote
//! workers run can then be started, `mend doctor` counts their kinds as served, and the Nodes
//! page shows them. Reported at the next heartbeat after a change; forgotten a minute after
//! the last claim that named them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::rollout::Served;
use crate::store::NodeInfo;

/// How long a kind or version stays reported after the last claim that named it: an idle
/// remote worker claims at least every 20 s (the longest claim wait), so it is never dropped.
/// One busy for longer than this on jobs of its own does not claim meanwhile, and its kinds
/// drop out until its next claim.
pub(crate) const REMOTE_SERVED_FOR: Duration = Duration::from_secs(60);

/// The kinds and versions remote workers claimed with, by when each was last named.
#[derive(Default)]
pub(crate) struct RemoteServed {
    seen: Mutex<BTreeMap<(String, Option<String>), Instant>>,
    /// The kinds and versions this node last registered with.
    reported: Mutex<Reported>,
}

type KindsAndVersions = (Vec<String>, BTreeMap<String, Vec<String>>);

/// What the store holds for this node, as far as this node knows.
#[derive(Default)]
enum Reported {
    /// Its own kinds and versions, registered at start.
    #[default]
    Own,
    /// These, registered by a heartbeat.
    These(KindsAndVersions),
    /// Unknown (a registration failed): report at the next heartbeat whatever it is.
    Unknown,
}

impl RemoteServed {
    /// A claim named these kinds and versions (`None`: the unversioned handler).
    pub(crate) fn note(&self, served: &Served, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, versions) in served {
            for v in versions {
                seen.insert((kind.clone(), v.clone()), now);
            }
        }
    }

    /// `own` with what remote workers served within [`REMOTE_SERVED_FOR`] of `now` added to
    /// its kinds and versions, and whether that differs from what was last reported (a new
    /// registration is due). Forgets what has gone quiet.
    pub(crate) fn merged(&self, own: &NodeInfo, now: Instant) -> (NodeInfo, bool) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, at| now.saturating_duration_since(*at) < REMOTE_SERVED_FOR);
        let mut kinds: BTreeSet<String> = own.kinds.iter().cloned().collect();
        let mut versions: BTreeMap<String, BTreeSet<String>> = own
            .versions
            .iter()
            .map(|(k, l)| (k.clone(), l.iter().cloned().collect()))
            .collect();
        for (kind, version) in seen.keys() {
            kinds.insert(kind.clone());
            if let Some(v) = version {
                versions.entry(kind.clone()).or_default().insert(v.clone());
            }
        }
        let node = NodeInfo {
            kinds: kinds.into_iter().collect(),
            versions: versions
                .into_iter()
                .map(|(k, l)| (k, l.into_iter().collect()))
                .collect(),
            ..own.clone()
        };
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let now_reporting = (node.kinds.clone(), node.versions.clone());
        let changed = match &*reported {
            Reported::Own => now_reporting != sorted(own),
            Reported::These(was) => *was != now_reporting,
            Reported::Unknown => true,
        };
        *reported = Reported::These(now_reporting);
        (node, changed)
    }

    /// The last report did not reach the store: the next [`RemoteServed::merged`] reports
    /// again.
    pub(crate) fn forget_reported(&self) {
        *self.reported.lock().unwrap_or_else(|p| p.into_inner()) = Reported::Unknown;
    }
}

/// A node's kinds and versions in the order [`RemoteServed::merged`] reports them.
fn sorted(node: &NodeInfo) -> KindsAndVersions {
    let mut kinds = node.kinds.clone();
    kinds.sort_unstable();
    kinds.dedup();
    let versions = node
        .versions
        .iter()
        .map(|(k, l)| {
            let mut l = l.clone();
            l.sort_unstable();
            l.dedup();
            (k.clone(), l)
        })
        .collect();
    (kinds, versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(kind: &str, version: Option<&str>) -> Served {
        [(kind.to_owned(), vec![version.map(str::to_owned)])]
            .into_iter()
            .collect()
    }

    #[test]
    fn remote_kinds_and_versions_are_reported_while_claimed_and_then_dropped() {
        let own = NodeInfo {
            kinds: vec!["email".into()],
            ..Default::default()
        };
        // Registered unsorted: reporting the same in order is no change.
        let unsorted = NodeInfo {
            kinds: vec!["zip".into(), "email".into()],
            ..Default::default()
        };
        assert!(!RemoteServed::default().merged(&unsorted, Instant::now()).1);
        let r = RemoteServed::default();
        let t0 = Instant::now();
        // Nothing remote yet: what the node registered with, no change.
        let (node, changed) = r.merged(&own, t0);
        assert_eq!(node.kinds, ["email"]);
        assert!(!changed);
        r.note(&served("resize", Some("v2")), t0);
        r.note(&served("resize", None), t0);
        let (node, changed) = r.merged(&own, t0);
        assert_eq!(node.kinds, ["email", "resize"]);
        assert_eq!(node.versions["resize"], ["v2"]);
        assert!(changed, "a new kind is a change");
        assert!(
            !r.merged(&own, t0 + Duration::from_secs(1)).1,
            "reported once"
        );
        // Claimed again later: kept; silent past the window: dropped, and that is a change.
        r.note(&served("resize", Some("v2")), t0 + Duration::from_secs(50));
        let (node, changed) = r.merged(&own, t0 + Duration::from_secs(70));
        assert_eq!(node.versions["resize"], ["v2"]);
        assert!(!changed);
        let (node, changed) = r.merged(&own, t0 + Duration::from_secs(111));
        assert_eq!(node.kinds, ["email"]);
        assert!(node.versions.is_empty());
        assert!(changed);
        // A registration that failed is made again at the next heartbeat.
        r.forget_reported();
        assert!(r.merged(&own, t0 + Duration::from_secs(112)).1);
        assert!(!r.merged(&own, t0 + Duration::from_secs(113)).1);
    }
}
