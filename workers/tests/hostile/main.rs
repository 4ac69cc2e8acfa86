//! The hostile-input corpus: inputs, names, pipeline files and settings
//! that a careless user or an attacker would hand sluice, each run through
//! the real `sluice` binary on real folders. Every case here once broke a
//! promise (a valid file not read, a bad record lost or left to poison the
//! pipeline, a secret printed); each test says what sluice does now.
//!
//! One module a kind of input: CSV text, corrupt and deep inputs that used
//! to crash a worker, dead letters, names and links in the inbox, files
//! that grow, and secrets and settings.

#[path = "../common/mod.rs"]
mod common;

mod appends;
mod csv_text;
mod dead_letters;
mod names;
mod poison;
mod secrets;
mod tasks;
