//! `mend chaos`: the drill that proves the guarantees. It starts real `mend serve` nodes on one
//! database, enqueues drill jobs (see `drill.rs`), and while they run it SIGKILLs and restarts
//! nodes, sends one SIGTERM, injects panics, errors and timeouts into attempts, cuts database
//! connections (PostgreSQL) and optionally restarts the database. Then it checks the
//! invariants, measures how fast each kill was healed, and reports.
//!
//! The fault schedule and the jobs' faults come from `--seed`; process scheduling does not, so
//! two runs with one seed inflict the same faults at the same offsets, not the same
//! interleaving.
//!
//! One file per part: `args` (flags and the settings after checks), `plan` (what the seed
//! decides), `cluster` (the node processes), `enqueue` (the jobs' arrival), `faults` (inflicting
//! one fault), `watch` (progress and rescue measurements), `check` (the invariants), `report`
//! (what is printed), `canary` (the gray-release drill: `--bad-canary`, `--good-canary`) and
//! `run` (the drill from start to end).

mod args;
mod canary;
mod check;
mod cluster;
mod enqueue;
mod faults;
mod plan;
mod report;
mod run;
mod watch;

pub(crate) use args::ChaosArgs;
pub(crate) use run::run;
