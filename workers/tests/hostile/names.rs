//! Hostile inputs: names and links in the inbox, and what plain readers of the sink see.

#[allow(unused_imports)]
use super::common;
