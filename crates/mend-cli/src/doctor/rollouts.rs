//! The check of handler versions against the routes rollouts left: a kind pinned to a
//! promoted version, or a rollout's canary or stable side, that no live node serves. Claims
//! route by version, so such jobs wait however many nodes serve the kind (a deploy that
//! dropped the promoted version, say) — and nothing else would say why.

use mend::rollout::RouteState;
use mend::store::NodeInfo;

use super::Finding;

/// One finding per side that nodes serving its kind cannot run; one `ok` when every side can.
pub(super) fn check(routes: &[RouteState], live: &[NodeInfo], out: &mut Vec<Finding>) {
    let mut found = false;
    for r in routes {
        let serving: Vec<&NodeInfo> = live.iter().filter(|n| n.kinds.contains(&r.kind)).collect();
        if serving.is_empty() {
            // No live node serves the kind at all: the unserved-kind check speaks for it.
            continue;
        }
        let served = mend::node::versions_served(serving.iter().copied(), &r.kind);
        let has = |v: &str| served.contains(v);
        let mut sides: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = r.canary.as_deref().filter(|_| r.share > 0) {
            if !has(c) {
                sides.push(("canary", c));
            }
        }
        // An unversioned stable side cannot be told from what nodes report (they list named
        // versions only); a named one can.
        if let Some(s) = r.stable.as_deref() {
            if r.share < mend::rollout::FULL_SHARE && !has(s) {
                sides.push((
                    if r.canary.is_some() {
                        "stable"
                    } else {
                        "pinned"
                    },
                    s,
                ));
            }
        }
        for (side, version) in sides {
            found = true;
            let what = match side {
                "pinned" => format!(
                    "kind `{}` runs only on version `{version}` (since rollout {})",
                    r.kind, r.rollout
                ),
                _ => format!(
                    "the {side} side of rollout {} runs version `{version}` of `{}`",
                    r.rollout, r.kind
                ),
            };
            out.push(Finding::warn(
                "rollout_versions",
                format!(
                    "{what}, but no live node serves it (they serve {}): those jobs wait",
                    if served.is_empty() {
                        "no named version".to_owned()
                    } else {
                        served.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                ),
                format!(
                    "deploy a node with version `{version}` of `{}` (Registry::register_version), or `mend rollouts start {} --version V` to move the kind to a version that is served",
                    r.kind, r.kind
                ),
            ));
        }
    }
    if !found {
        out.push(Finding::ok(
            "rollout_versions",
            "every routed version of a served kind has a live node serving it",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn node(kind: &str, versions: &[&str]) -> NodeInfo {
        NodeInfo {
            id: "n".into(),
            kinds: vec![kind.into()],
            versions: [(
                kind.to_owned(),
                versions.iter().map(|v| (*v).to_owned()).collect(),
            )]
            .into_iter()
            .filter(|(_, l): &(String, Vec<String>)| !l.is_empty())
            .collect(),
            ..Default::default()
        }
    }

    fn route(canary: Option<&str>, stable: Option<&str>, share: u32) -> RouteState {
        RouteState {
            rollout: Uuid::nil(),
            finished_at: None,
            kind: "resize".into(),
            canary: canary.map(Into::into),
            stable: stable.map(Into::into),
            share,
            active: canary.is_some(),
        }
    }

    fn warnings(routes: &[RouteState], live: &[NodeInfo]) -> Vec<String> {
        let mut out = Vec::new();
        check(routes, live, &mut out);
        let warned: Vec<String> = out
            .iter()
            .filter(|f| f.status != super::super::Status::Ok)
            .map(|f| f.message.clone())
            .collect();
        if warned.is_empty() {
            assert_eq!(out.len(), 1, "one ok finding: {}", out.len());
        }
        warned
    }

    #[test]
    fn a_promoted_version_no_node_serves_is_named() {
        // v2 was promoted; the nodes were redeployed with v1 and v3 only.
        let w = warnings(
            &[route(None, Some("v2"), 0)],
            &[node("resize", &["v1", "v3"])],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("runs only on version `v2`") && w[0].contains("they serve v1, v3"),
            "{w:?}"
        );
        // Served: nothing to say.
        assert!(warnings(&[route(None, Some("v2"), 0)], &[node("resize", &["v2"])]).is_empty());
    }

    #[test]
    fn each_side_of_a_rollout_is_checked() {
        let r = route(Some("v3"), Some("v2"), 1_000);
        let w = warnings(std::slice::from_ref(&r), &[node("resize", &["v2"])]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("canary side") && w[0].contains("`v3`"),
            "{w:?}"
        );
        let w = warnings(std::slice::from_ref(&r), &[node("resize", &["v3"])]);
        assert!(w.len() == 1 && w[0].contains("stable side"), "{w:?}");
        // A canary cut off (share 0) routes nothing to it.
        assert!(warnings(
            &[route(Some("v3"), Some("v2"), 0)],
            &[node("resize", &["v2"])]
        )
        .is_empty());
        // An unversioned stable side is not judged.
        assert!(warnings(
            &[route(Some("v3"), None, 1_000)],
            &[node("resize", &["v3"])]
        )
        .is_empty());
    }

    #[test]
    fn a_kind_no_live_node_serves_is_left_to_the_unserved_check() {
        assert!(warnings(&[route(None, Some("v2"), 0)], &[node("email", &[])]).is_empty());
    }
}
