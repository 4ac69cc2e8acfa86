//! Decoding records into Arrow, shared by the sources: CSV and JSON read
//! record by record with the malformed ones set aside ([`records`]), and
//! stream messages, one record each ([`messages`]); float values too large
//! for their type are told from infinities ([`floats`]).

pub(crate) mod floats;
#[cfg(any(feature = "kafka", feature = "amqp"))]
pub(crate) mod messages;
pub(crate) mod records;
