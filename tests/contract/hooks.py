"""Schemathesis hooks for mend's contract test: generators for the two string formats the
OpenAPI document names but JSON Schema cannot spell out (a cron expression, an IANA time
zone). Loaded through SCHEMATHESIS_HOOKS by scripts/test-contract.sh."""

import schemathesis
from hypothesis import strategies as st

# Every form mend's cron parser takes: 5 fields, 6 with seconds first, and the @-names.
CRON = [
    "@hourly", "@daily", "@weekly", "@monthly", "@yearly",
    "*/5 * * * *", "0 9 * * 1-5", "15 3 1 * *", "0 0 * * 0",
    "30 */10 * * * *", "0 0 12 * * *",
]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]

schemathesis.openapi.format("cron", st.sampled_from(CRON))
schemathesis.openapi.format("iana-time-zone", st.sampled_from(ZONES))

# `mend serve` runs the built-in executors, and a job of their kinds must carry the args they
# take (`mend_executors::validate`: a URL for `http`, an allowed program for `exec`...). The
# document declares `args` as any JSON for every kind, so generated jobs stay off these three
# kinds; their args are tested by the executors' own tests.
BUILT_IN_KINDS = {"exec", "http", "noop"}


def _kinds(body):
    if not isinstance(body, dict):
        return []
    jobs = body.get("jobs")
    if isinstance(jobs, list):
        return [j.get("kind") for j in jobs if isinstance(j, dict)]
    return [body.get("kind")]


@schemathesis.hook
def filter_body(context, body):
    return not any(isinstance(k, str) and k in BUILT_IN_KINDS for k in _kinds(body))


# Rules across a header and the body, or across the items of a list, that JSON Schema cannot
# state; the operations' descriptions say them and the server answers 422 naming the field.
# Generated cases that break them are dropped, nothing else.
@schemathesis.hook
def filter_case(context, case):
    body = case.body if isinstance(case.body, dict) else {}
    if case.path == "/v1/workers/finish":
        # One outcome per job.
        outcomes = body.get("outcomes")
        ids = [repr(o.get("id")) for o in outcomes if isinstance(o, dict)] if isinstance(outcomes, list) else []
        return len(ids) == len(set(ids))
    if case.path == "/v1/jobs" and case.method.upper() == "POST":
        header = next((v for k, v in (case.headers or {}).items() if k.lower() == "idempotency-key"), None)
        if header is not None:
            # The header is an idempotency key: not with `unique`, and equal to the body's.
            if body.get("unique") is not None:
                return False
            for field in ("idempotency_key", "unique_key"):
                if body.get(field) is not None and body.get(field) != header:
                    return False
    return True
