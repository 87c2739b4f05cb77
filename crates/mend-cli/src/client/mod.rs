//! The client commands of `mend`: `enqueue`, `jobs`, `queues` talk to a running `mend serve`
//! over its HTTP API; `migrate` opens a database locally and brings its schema up to date.
//!
//! Output is an aligned table (or a short sentence) for people, or with `--json` the server's
//! JSON answer as is, one document on stdout. Every failure is one line on stderr and a
//! non-zero exit; problem+json answers are shown as `<detail> (HTTP <status>[, field <f>])`.
//! The bearer token is sent, never printed.
//!
//! One file per part: `api` (the HTTP client and its error lines), `output` (tables, fields,
//! JSON on stdout), one file per command group (`enqueue`, `jobs`, `queues`, `migrate`) and
//! `describe` (one job for people).

mod api;
mod cron;
mod debug;
mod describe;
mod enqueue;
mod jobs;
mod limits;
mod migrate;
mod output;
mod queues;
mod rollouts;

pub(crate) use cron::{cron, CronCommand};
pub(crate) use debug::{debug, DebugCommand};
pub(crate) use enqueue::{enqueue, EnqueueArgs};
pub(crate) use jobs::{jobs, JobsCommand};
pub(crate) use limits::{limits, parse_rate, LimitsCommand};
pub(crate) use migrate::{migrate, MigrateArgs};
pub(crate) use queues::{queues, QueuesCommand};
pub(crate) use rollouts::{rollouts, RolloutsCommand};
