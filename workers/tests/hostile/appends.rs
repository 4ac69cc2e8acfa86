//! Hostile inputs: a committed file that grows or is rewritten.

#[allow(unused_imports)]
use super::common;
