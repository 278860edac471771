//! Integration tests: one binary, a module per feature, each running the real `runbook`
//! binary against real servers on loopback.

mod support;

mod actions;
mod approval;
mod bad_input;
mod check;
mod concurrency;
#[cfg(feature = "crash-injection")]
mod crash;
mod dns;
mod dry_run;
mod example;
mod journal;
mod kube;
mod layout;
mod lock;
mod on_failure;
mod pg;
mod prom;
mod redis;
mod report;
mod resume;
mod run;
mod runbooks;
mod scenarios;
mod secrets;
mod sequences;
mod stack;
mod store;
mod timer;
mod tls;
mod topology;
mod watch;
