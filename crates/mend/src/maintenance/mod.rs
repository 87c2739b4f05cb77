//! Background upkeep, one small service per file. Each is safe to run from several processes
//! at once: every store call in a pass is idempotent, so two passes racing do no harm.

pub mod history;
pub mod pruner;
pub mod rescuer;
pub mod rollouts;
pub mod scheduler;
