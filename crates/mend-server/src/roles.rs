//! The role table: which roles may call each route, which calls are written to the audit log
//! (and under what action name), and whose answers have their secrets masked. It is the only
//! place that decides access; the auth middleware looks each request up here by its matched
//! route. A route missing from the table is open to `admin` only, and a test walks the OpenAPI
//! document to check every route is listed.

use axum::http::Method;
use mend::auth::Role;

use Role::{Admin, Operator, Producer, Viewer, Worker};

/// Who may read.
const READ: &[Role] = &[Admin, Operator, Viewer];
/// Who may change jobs, queues, limits, cron and rollouts.
const OPERATE: &[Role] = &[Admin, Operator];
/// Who may enqueue.
const ENQUEUE: &[Role] = &[Admin, Producer];
/// Who may run the remote-worker protocol.
const WORK: &[Role] = &[Admin, Worker];
/// Every role.
const ANY: &[Role] = &[Admin, Operator, Producer, Worker, Viewer];
/// Admin only.
const ADMIN: &[Role] = &[Admin];

/// One route's rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The HTTP method.
    pub method: &'static str,
    /// The route as registered (`/v1/jobs/{id}/cancel`).
    pub path: &'static str,
    /// The roles that may call it; empty: no token needed.
    pub roles: &'static [Role],
    /// The audit action (`job.cancel`; `{param}` is replaced by that path parameter); `None`:
    /// not audited.
    pub action: Option<&'static str>,
    /// The path parameter naming the target of an audited call.
    pub target: Option<&'static str>,
    /// Whether the answer carries stored args (masked unless the caller is admin).
    pub mask: bool,
    /// Audited only when the form confirms (`confirm=yes`): the dashboard's bulk actions ask
    /// first, and the question changes nothing.
    pub confirmed_only: bool,
}

impl Rule {
    /// Whether `role` may call the route.
    pub fn allows(&self, role: Role) -> bool {
        self.roles.is_empty() || self.roles.contains(&role)
    }

    /// Whether the route needs no token.
    pub fn is_open(&self) -> bool {
        self.roles.is_empty()
    }
}

const fn r(method: &'static str, path: &'static str, roles: &'static [Role]) -> Rule {
    Rule {
        method,
        path,
        roles,
        action: None,
        target: None,
        mask: false,
        confirmed_only: false,
    }
}

/// A read whose answer may hold args: masked for every role but admin.
const fn read(path: &'static str, roles: &'static [Role]) -> Rule {
    Rule {
        method: "GET",
        path,
        roles,
        action: None,
        target: None,
        mask: true,
        confirmed_only: false,
    }
}

/// A change by an operator (or admin), audited as `action` on path parameter `target`.
const fn change(
    method: &'static str,
    path: &'static str,
    action: &'static str,
    target: Option<&'static str>,
) -> Rule {
    Rule {
        method,
        path,
        roles: OPERATE,
        action: Some(action),
        target,
        mask: true,
        confirmed_only: false,
    }
}

/// Every route of the API and the dashboard.
pub const ROUTES: &[Rule] = &[
    r("GET", "/healthz", &[]),
    r("GET", "/readyz", &[]),
    r("GET", "/openapi.json", ANY),
    r("GET", "/metrics", READ),
    // Jobs.
    r("POST", "/v1/jobs", ENQUEUE),
    r("POST", "/v1/jobs/batch", ENQUEUE),
    read("/v1/jobs", READ),
    // A producer may read a job by id (it got the id when it enqueued): ids are not
    // guessable, and its args are masked like a viewer's.
    read("/v1/jobs/{id}", &[Admin, Operator, Viewer, Producer]),
    change("POST", "/v1/jobs/{id}/cancel", "job.cancel", Some("id")),
    change("POST", "/v1/jobs/{id}/retry", "job.retry", Some("id")),
    // Queues.
    read("/v1/queues", READ),
    change(
        "POST",
        "/v1/queues/{name}/pause",
        "queue.pause",
        Some("name"),
    ),
    change(
        "POST",
        "/v1/queues/{name}/resume",
        "queue.resume",
        Some("name"),
    ),
    // Limits.
    read("/v1/limits", READ),
    read("/v1/limits/{name}", READ),
    change("PUT", "/v1/limits/{name}", "limit.set", Some("name")),
    change("DELETE", "/v1/limits/{name}", "limit.delete", Some("name")),
    // Cron.
    read("/v1/cron", READ),
    change("POST", "/v1/cron", "cron.create", None),
    read("/v1/cron/{name}", READ),
    change("PUT", "/v1/cron/{name}", "cron.replace", Some("name")),
    change("DELETE", "/v1/cron/{name}", "cron.delete", Some("name")),
    change("POST", "/v1/cron/{name}/pause", "cron.pause", Some("name")),
    change(
        "POST",
        "/v1/cron/{name}/resume",
        "cron.resume",
        Some("name"),
    ),
    // Rollouts (gray release).
    read("/v1/rollouts", READ),
    change("POST", "/v1/rollouts", "rollout.start", None),
    read("/v1/rollouts/{id}", READ),
    change(
        "POST",
        "/v1/rollouts/{id}/pause",
        "rollout.pause",
        Some("id"),
    ),
    change(
        "POST",
        "/v1/rollouts/{id}/resume",
        "rollout.resume",
        Some("id"),
    ),
    change(
        "POST",
        "/v1/rollouts/{id}/promote",
        "rollout.promote",
        Some("id"),
    ),
    change(
        "POST",
        "/v1/rollouts/{id}/abort",
        "rollout.abort",
        Some("id"),
    ),
    // History, nodes, audit.
    read("/v1/stats", READ),
    read("/v1/events", READ),
    read("/v1/nodes", READ),
    read("/v1/audit", READ),
    // Looking inside the node: live attempts show args; a profile costs CPU.
    read("/debug/attempts", READ),
    r("GET", crate::routes::debug::PROFILE_PATH, OPERATE),
    // The remote-worker protocol: the job's own record, not audited; args in clear (the
    // worker needs them).
    r("POST", "/v1/workers/claim", WORK),
    r("POST", "/v1/workers/heartbeat", WORK),
    r("POST", "/v1/workers/finish", WORK),
    r("POST", "/v1/jobs/{id}/complete", WORK),
    r("POST", "/v1/jobs/{id}/fail", WORK),
    r("POST", "/v1/jobs/{id}/snooze", WORK),
    r("POST", "/v1/jobs/{id}/release", WORK),
    r("POST", "/v1/jobs/{id}/checkpoint", WORK),
    r("POST", "/v1/jobs/{id}/cleanups", WORK),
    r("POST", "/v1/jobs/{id}/cleanups/{seq}/done", WORK),
    // The dashboard (a session cookie instead of a bearer header).
    r("GET", "/", READ),
    r("GET", "/jobs", READ),
    r("GET", "/jobs/{id}", READ),
    r("GET", "/queues", READ),
    r("GET", "/nodes", READ),
    r("GET", "/rollouts", READ),
    r("GET", "/rollouts/{id}", READ),
    change(
        "POST",
        "/rollouts/{id}/{action}",
        "rollout.{action}",
        Some("id"),
    ),
    Rule {
        confirmed_only: true,
        ..change("POST", "/jobs/bulk", "dashboard.bulk", None)
    },
    change("POST", "/jobs/{id}/{action}", "job.{action}", Some("id")),
    change(
        "POST",
        "/queues/{name}/{action}",
        "queue.{action}",
        Some("name"),
    ),
    r("GET", "/login", &[]),
    r("POST", "/login", &[]),
    r("POST", "/logout", &[]),
    r("GET", "/assets/app.js", &[]),
    r("GET", "/assets/app.css", &[]),
];

/// Admin only: what a route missing from [`ROUTES`] gets.
const UNLISTED: Rule = r("*", "*", ADMIN);

/// The rule of a request: its method and matched route. `None` when no route matched (the
/// answer is 404 or 405 to anyone with a valid token).
pub fn rule(method: &Method, matched: Option<&str>) -> Option<&'static Rule> {
    let matched = matched?;
    // HEAD is answered by the GET route.
    let method = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let mut path_known = false;
    for rule in ROUTES {
        if rule.path == matched {
            path_known = true;
            if rule.method == method {
                return Some(rule);
            }
        }
    }
    // A known route with another method answers 405; an unknown one is admin only.
    (!path_known).then_some(&UNLISTED)
}

/// The roles that may call `rule`, for messages: `admin or operator`.
pub fn roles_text(rule: &Rule) -> String {
    let names: Vec<&str> = rule.roles.iter().map(|r| r.as_str()).collect();
    match names.as_slice() {
        [] => "none".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{} {}", r.method, r.path);
            if r.action.is_some() {
                assert!(!r.allows(Viewer), "{} {}", r.method, r.path);
            }
        }
    }

    #[test]
    fn lookups() {
        let cancel = rule(&Method::POST, Some("/v1/jobs/{id}/cancel")).unwrap();
        assert_eq!(cancel.action, Some("job.cancel"));
        assert!(cancel.allows(Operator) && !cancel.allows(Viewer));
        assert_eq!(roles_text(cancel), "admin or operator");
        assert!(rule(&Method::DELETE, Some("/v1/jobs/{id}/cancel")).is_none());
        assert!(rule(&Method::GET, None).is_none());
        assert_eq!(rule(&Method::GET, Some("/v1/new")).unwrap().roles, ADMIN);
        assert!(rule(&Method::HEAD, Some("/healthz")).unwrap().is_open());
    }
}
