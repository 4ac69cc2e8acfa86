//! Hostile inputs: secrets in URLs and derived values, and settings and files that must be refused.

#[allow(unused_imports)]
use super::common;
