//! The value types every layer passes around. No crate imports.

use std::any::Any;
use std::sync::Arc;

/// A cached value of any type (`None` marks a cached negative).
pub(crate) type AnyValue = Arc<dyn Any + Send + Sync>;

/// A tag and the version it had when an entry was loaded.
pub(crate) type TagVersion = (Box<str>, u64);

/// What a load produced, as shared with the callers that waited for it.
#[derive(Clone)]
pub(crate) enum Outcome {
    /// The value the leader stored (or found in L2).
    Value(AnyValue),
    /// The leader got `None`.
    Absent,
    /// The leader's body returned `Err`. Errors are not shared (the error type
    /// need not be `Clone`): each waiter runs its own body.
    Failed,
}

impl Outcome {
    /// The `outcome` field of the span of a load that returned a value
    /// (what [`name`](Outcome::name) says of [`Outcome::Value`]).
    pub(crate) const VALUE_NAME: &'static str = "ok";

    /// The `outcome` field of a load's span.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Outcome::Value(_) => Outcome::VALUE_NAME,
            Outcome::Absent => "none",
            Outcome::Failed => "err",
        }
    }
}
