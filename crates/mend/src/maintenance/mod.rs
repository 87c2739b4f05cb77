//! Background upkeep, one small service per file. Each is safe to run from several processes
//! at once: every pass is one idempotent store call.

pub mod rescuer;
