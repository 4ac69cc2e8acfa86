//! Hostile inputs: CSV text, quoting, line endings and numbers.

#[allow(unused_imports)]
use super::common;
