//! Return shapes: how a function's return value maps to what is cached.
//!
//! The macro picks a marker by the last path segment of the return type
//! (`Option`, `Result`, `Result<Option<..>>`, anything else), and the
//! [`Shape`] impl for that marker splits the value into what is stored (the
//! innermost `T`), a negative (`None`), or an error that is never cached.
//! Because only `T` is stored, `User`, `Option<User>`, `Result<User, E>` and
//! `Result<Option<User>, E>` under one key share entries.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// What a cached value must be. Implemented for every type with the bounds.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached",
    label = "cached values need `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`",
    note = "derive `Clone, serde::Serialize, serde::Deserialize` on the value type"
)]
pub trait CacheValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T> CacheValue for T where T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

/// What one run of the body produced.
pub enum Loaded<V, R> {
    /// A value to store and return.
    Value(V),
    /// `None` / `Ok(None)` (carried back to the caller as is): stored only as
    /// a negative entry, when enabled.
    Absent(R),
    /// `Err(..)`: returned to the caller as is, never stored.
    Failed(R),
}

/// Maps a return type `R` to the value that is cached.
pub trait Shape<R>: 'static {
    /// The innermost value that is stored.
    type Value: CacheValue;
    /// Splits what the body returned.
    fn split(returned: R) -> Loaded<Self::Value, R>;
    /// Rebuilds the return value from a cached value.
    fn from_value(value: Self::Value) -> R;
    /// The return value for a cached negative, if this shape has one.
    fn absent() -> std::option::Option<R>;
    /// What a returned value holds, without consuming it.
    fn peek(returned: &R) -> Loaded<&Self::Value, ()>;
}

/// `T`: the value itself.
pub struct Plain;
/// `Option<T>`: `None` may be cached negatively.
pub struct Option;
/// `Result<T, E>`: `Err` is never cached.
pub struct Result;
/// `Result<Option<T>, E>`: `Ok(None)` may be cached negatively, `Err` never is.
pub struct ResultOption;

impl<T: CacheValue> Shape<T> for Plain {
    type Value = T;
    #[inline]
    fn split(returned: T) -> Loaded<T, T> {
        Loaded::Value(returned)
    }
    #[inline]
    fn from_value(value: T) -> T {
        value
    }
    #[inline]
    fn absent() -> std::option::Option<T> {
        None
    }
    fn peek(returned: &T) -> Loaded<&T, ()> {
        Loaded::Value(returned)
    }
}

impl<T: CacheValue> Shape<std::option::Option<T>> for Option {
    type Value = T;
    #[inline]
    fn split(returned: std::option::Option<T>) -> Loaded<T, std::option::Option<T>> {
        match returned {
            Some(value) => Loaded::Value(value),
            None => Loaded::Absent(None),
        }
    }
    #[inline]
    fn from_value(value: T) -> std::option::Option<T> {
        Some(value)
    }
    #[inline]
    fn absent() -> std::option::Option<std::option::Option<T>> {
        Some(None)
    }
    fn peek(returned: &std::option::Option<T>) -> Loaded<&T, ()> {
        returned.as_ref().map_or(Loaded::Absent(()), Loaded::Value)
    }
}

impl<T: CacheValue, E> Shape<std::result::Result<T, E>> for Result {
    type Value = T;
    #[inline]
    fn split(returned: std::result::Result<T, E>) -> Loaded<T, std::result::Result<T, E>> {
        match returned {
            Ok(value) => Loaded::Value(value),
            Err(error) => Loaded::Failed(Err(error)),
        }
    }
    #[inline]
    fn from_value(value: T) -> std::result::Result<T, E> {
        Ok(value)
    }
    #[inline]
    fn absent() -> std::option::Option<std::result::Result<T, E>> {
        None
    }
    fn peek(returned: &std::result::Result<T, E>) -> Loaded<&T, ()> {
        returned.as_ref().map_or(Loaded::Failed(()), Loaded::Value)
    }
}

impl<T: CacheValue, E> Shape<std::result::Result<std::option::Option<T>, E>> for ResultOption {
    type Value = T;
    #[inline]
    fn split(
        returned: std::result::Result<std::option::Option<T>, E>,
    ) -> Loaded<T, std::result::Result<std::option::Option<T>, E>> {
        match returned {
            Ok(Some(value)) => Loaded::Value(value),
            Ok(None) => Loaded::Absent(Ok(None)),
            Err(error) => Loaded::Failed(Err(error)),
        }
    }
    #[inline]
    fn from_value(value: T) -> std::result::Result<std::option::Option<T>, E> {
        Ok(Some(value))
    }
    #[inline]
    fn absent() -> std::option::Option<std::result::Result<std::option::Option<T>, E>> {
        Some(Ok(None))
    }
    fn peek(returned: &std::result::Result<std::option::Option<T>, E>) -> Loaded<&T, ()> {
        match returned {
            Ok(Some(value)) => Loaded::Value(value),
            Ok(None) => Loaded::Absent(()),
            Err(_) => Loaded::Failed(()),
        }
    }
}

/// Whether a returned value counts as success for `#[invalidates]` and
/// `#[write_through]`: `Err` does not, anything else does. No bounds on the
/// value, so it applies to `()` and `Result<(), E>` too.
pub trait Succeeds<R> {
    /// True unless `returned` is an `Err`.
    fn succeeded(returned: &R) -> bool;
}

impl<R> Succeeds<R> for Plain {
    fn succeeded(_: &R) -> bool {
        true
    }
}

impl<R> Succeeds<R> for Option {
    fn succeeded(_: &R) -> bool {
        true
    }
}

impl<T, E> Succeeds<std::result::Result<T, E>> for Result {
    fn succeeded(returned: &std::result::Result<T, E>) -> bool {
        returned.is_ok()
    }
}

impl<T, E> Succeeds<std::result::Result<T, E>> for ResultOption {
    fn succeeded(returned: &std::result::Result<T, E>) -> bool {
        returned.is_ok()
    }
}
