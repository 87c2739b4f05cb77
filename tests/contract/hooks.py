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
