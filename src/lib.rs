//! runbook — runbook automation: Rhai procedures calling typed actions, with named step
//! checkpoints, a durable journal, resume without repeating a finished change, and dry-runs.

pub mod action;
pub mod cli;
mod crash;
pub mod error;
pub mod inventory;
pub mod journal;
pub mod report;
pub mod review;
pub mod runner;
pub mod script;
pub mod secret;
mod suggest;
pub mod tls;
pub mod value;
pub mod watch;
