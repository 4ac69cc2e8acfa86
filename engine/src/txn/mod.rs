//! A batch's life in the checkpoint log. This module is the only code
//! that builds a log record or reads the log's refusal of one: the
//! runtime calls a step with the time it is, and acts on the outcome.
//!
//! ```text
//! plan_files / plan_stream ──► lease ──► (renew ...) ──► commit ──► publish (replayed after a crash)
//!                                │  └─ runs out ──► lease by another: the first attempt is fenced
//!                                ├─ error ──► fail ──► lease ... fail (the last: gave up) ──► retry ──► pending
//!                                └─ inputs changed, messages handed back ──► abandon
//! ```
//!
//! [`decide`] and the modules beside it hold the decisions as pure
//! functions of what was read; [`steps`] appends and reads the outcome.

pub mod decide;
pub mod leftover;
mod outcome;
pub mod redelivered;
pub mod steps;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use decide::{Claim, SEAL_AT, claim, gives_up, seal_due, sealable};
pub use leftover::{batch_of_token, commits_to_replay, is_leftover, leftover_tokens};
pub use outcome::{Abandoning, Committing, Failing, Leasing, Planning, Produced, Renewed, Retrying, Settled};
pub use redelivered::{Fresh, batches_redelivered, drop_redeliveries, is_orphaned};
pub use steps::{
    Forget, Terms, abandon, commit, fail, fence, lease, plan_files, plan_stream, renew, retry, seal, start,
};
