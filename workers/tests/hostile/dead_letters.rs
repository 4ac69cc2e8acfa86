//! Hostile inputs: many malformed records, and one bad file among good ones.

#[allow(unused_imports)]
use super::common;
