//! Hostile inputs: corrupt files and deep SQL that used to crash a worker.

#[allow(unused_imports)]
use super::common;
