//! Return shapes: how a function's return value maps to what is cached.
//!
//! A shape splits a returned value into what is stored (the innermost `T`),
//! a "not found" (`None`, cached only with `negative`), or an error, which
//! is never cached. Because only `T` is stored, `User`, `Option<User>`,
//! `Result<User, E>` and `Result<Option<User>, E>` under one key share
//! entries.
//!
//! | return type | marker | stored | `None` | never cached |
//! | --- | --- | --- | --- | --- |
//! | `T` (anything else) | [`Plain`] | `T` | | |
//! | `Option<T>` | [`Option`] | `T` | `None` | |
//! | `Result<T, E>` | [`Result`] | `T` | | `Err` |
//! | `Result<Option<T>, E>` | [`ResultOption`] | `T` | `Ok(None)` | `Err` |
//! | `Option<Result<T, E>>` | [`OptionResult`] | `T` | `None` | `Some(Err)` |
//! | `Result<Result<T, E1>, E2>` | [`ResultResult`] | `T` | | `Err`, `Ok(Err)` |
//!
//! # The type system picks the shape
//!
//! A macro sees the return type as written: it cannot see through an alias
//! (`type ApiResult<T> = Result<T, String>`, `sqlx::Result<T>`) nor tell
//! `std`'s `Result` from a crate's own type of that name. So the expansion
//! asks the compiler instead: `shape_of!(R)` calls [`Select::select`] on a
//! `&&&Of<R>`, and method resolution tries that receiver as it is, then
//! with one reference less, then one less again. The impls of [`Select`]
//! sit at those three depths, the most specific deepest (`Option<Result<T,
//! E>>` and `Result<Option<T>, E>` at `&&&Of`, `Option<T>` and `Result<T,
//! E>` at `&&Of`, any type at `&Of`), so the first that applies is the most
//! specific shape of the resolved type ("autoref specialization"). What it
//! returns is a zero-sized marker whose type the runtime's generic
//! functions take their [`Shape`] from, so a call compiles to the code a
//! marker named by hand would.
//!
//! The choice is made where the function is compiled, for its return type
//! as declared: in `async fn load<T>() -> T` the return type is a plain
//! value, even when `T` is later an `Option`.
//!
//! # Holding a return value across `.await`
//!
//! A return type need not be `Send` (`Result<T, Box<dyn Error>>` is not),
//! while the function's future is, as long as the value is never held
//! across an `.await`. So the runtime splits what the body returned before
//! any further `.await`: an error is handed back at once, and only the
//! value (`Send`, a [`CacheValue`]) or the `None` (which holds nothing) is
//! carried to the end, where the return value is rebuilt from it
//! ([`Shape::from_value`], [`Shape::from_none`]).

use std::convert::Infallible;
use std::marker::PhantomData;

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
pub enum Loaded<V, N, R> {
    /// A value to store and return.
    Value(V),
    /// `None` / `Ok(None)`: stored only as a negative entry, when enabled.
    /// Holds what rebuilds it ([`Shape::from_none`]), not the return value.
    Absent(N),
    /// An error (`Err(..)`, `Some(Err(..))`): returned to the caller as is,
    /// never stored.
    Failed(R),
}

/// Maps a return type `R` to the value that is cached.
///
/// ```
/// use cache_runtime::__private::shape::{self, Loaded, Shape};
///
/// type ApiResult<T> = Result<T, String>;
/// let split = <shape::ResultOption as Shape<ApiResult<Option<u64>>>>::split;
/// assert!(matches!(split(Ok(Some(7))), Loaded::Value(7)));
/// assert!(matches!(split(Ok(None)), Loaded::Absent(())));
/// assert!(matches!(split(Err("down".into())), Loaded::Failed(Err(_))));
/// ```
pub trait Shape<R>: 'static {
    /// The innermost value that is stored.
    type Value: CacheValue;
    /// What a `None` leaves once the return value is split: `()` for the
    /// shapes that have one, [`Infallible`] for the others.
    type None: Copy + Send + Sync + 'static;
    /// Splits what the body returned.
    fn split(returned: R) -> Loaded<Self::Value, Self::None, R>;
    /// Rebuilds the return value from a cached value.
    fn from_value(value: Self::Value) -> R;
    /// Rebuilds the return value from a `None`.
    fn from_none(none: Self::None) -> R;
    /// The `None` a cached negative is returned as, if this shape has one.
    fn none() -> std::option::Option<Self::None>;
}

/// The return value for a cached negative, if the shape has a `None`.
#[inline]
pub(crate) fn absent<R, M: Shape<R>>() -> std::option::Option<R> {
    M::none().map(M::from_none)
}

/// `T`: the value itself.
#[derive(Clone, Copy, Debug)]
pub struct Plain;
/// `Option<T>`: `None` may be cached negatively.
#[derive(Clone, Copy, Debug)]
pub struct Option;
/// `Result<T, E>`: `Err` is never cached.
#[derive(Clone, Copy, Debug)]
pub struct Result;
/// `Result<Option<T>, E>`: `Ok(None)` may be cached negatively, `Err` never is.
#[derive(Clone, Copy, Debug)]
pub struct ResultOption;
/// `Option<Result<T, E>>`: `None` may be cached negatively, `Some(Err)`
/// never is.
#[derive(Clone, Copy, Debug)]
pub struct OptionResult;
/// `Result<Result<T, E1>, E2>`: neither `Err` is ever cached.
#[derive(Clone, Copy, Debug)]
pub struct ResultResult;

type StdOption<T> = std::option::Option<T>;
type StdResult<T, E> = std::result::Result<T, E>;

impl<T: CacheValue> Shape<T> for Plain {
    type Value = T;
    type None = Infallible;
    #[inline]
    fn split(returned: T) -> Loaded<T, Infallible, T> {
        Loaded::Value(returned)
    }
    #[inline]
    fn from_value(value: T) -> T {
        value
    }
    #[inline]
    fn from_none(none: Infallible) -> T {
        match none {}
    }
    #[inline]
    fn none() -> StdOption<Infallible> {
        None
    }
}

impl<T: CacheValue> Shape<StdOption<T>> for Option {
    type Value = T;
    type None = ();
    #[inline]
    fn split(returned: StdOption<T>) -> Loaded<T, (), StdOption<T>> {
        match returned {
            Some(value) => Loaded::Value(value),
            None => Loaded::Absent(()),
        }
    }
    #[inline]
    fn from_value(value: T) -> StdOption<T> {
        Some(value)
    }
    #[inline]
    fn from_none((): ()) -> StdOption<T> {
        None
    }
    #[inline]
    fn none() -> StdOption<()> {
        Some(())
    }
}

impl<T: CacheValue, E> Shape<StdResult<T, E>> for Result {
    type Value = T;
    type None = Infallible;
    #[inline]
    fn split(returned: StdResult<T, E>) -> Loaded<T, Infallible, StdResult<T, E>> {
        match returned {
            Ok(value) => Loaded::Value(value),
            Err(error) => Loaded::Failed(Err(error)),
        }
    }
    #[inline]
    fn from_value(value: T) -> StdResult<T, E> {
        Ok(value)
    }
    #[inline]
    fn from_none(none: Infallible) -> StdResult<T, E> {
        match none {}
    }
    #[inline]
    fn none() -> StdOption<Infallible> {
        None
    }
}

impl<T: CacheValue, E> Shape<StdResult<StdOption<T>, E>> for ResultOption {
    type Value = T;
    type None = ();
    #[inline]
    fn split(returned: StdResult<StdOption<T>, E>) -> Loaded<T, (), StdResult<StdOption<T>, E>> {
        match returned {
            Ok(Some(value)) => Loaded::Value(value),
            Ok(None) => Loaded::Absent(()),
            Err(error) => Loaded::Failed(Err(error)),
        }
    }
    #[inline]
    fn from_value(value: T) -> StdResult<StdOption<T>, E> {
        Ok(Some(value))
    }
    #[inline]
    fn from_none((): ()) -> StdResult<StdOption<T>, E> {
        Ok(None)
    }
    #[inline]
    fn none() -> StdOption<()> {
        Some(())
    }
}

impl<T: CacheValue, E> Shape<StdOption<StdResult<T, E>>> for OptionResult {
    type Value = T;
    type None = ();
    #[inline]
    fn split(returned: StdOption<StdResult<T, E>>) -> Loaded<T, (), StdOption<StdResult<T, E>>> {
        match returned {
            Some(Ok(value)) => Loaded::Value(value),
            None => Loaded::Absent(()),
            Some(Err(error)) => Loaded::Failed(Some(Err(error))),
        }
    }
    #[inline]
    fn from_value(value: T) -> StdOption<StdResult<T, E>> {
        Some(Ok(value))
    }
    #[inline]
    fn from_none((): ()) -> StdOption<StdResult<T, E>> {
        None
    }
    #[inline]
    fn none() -> StdOption<()> {
        Some(())
    }
}

impl<T: CacheValue, E1, E2> Shape<StdResult<StdResult<T, E1>, E2>> for ResultResult {
    type Value = T;
    type None = Infallible;
    #[inline]
    fn split(
        returned: StdResult<StdResult<T, E1>, E2>,
    ) -> Loaded<T, Infallible, StdResult<StdResult<T, E1>, E2>> {
        match returned {
            Ok(Ok(value)) => Loaded::Value(value),
            failed => Loaded::Failed(failed),
        }
    }
    #[inline]
    fn from_value(value: T) -> StdResult<StdResult<T, E1>, E2> {
        Ok(Ok(value))
    }
    #[inline]
    fn from_none(none: Infallible) -> StdResult<StdResult<T, E1>, E2> {
        match none {}
    }
    #[inline]
    fn none() -> StdOption<Infallible> {
        None
    }
}

/// Whether a returned value counts as success for `#[invalidates]` and
/// `#[write_through]`: an error does not, anything else does. No bounds on
/// the value, so it applies to `()` and `Result<(), E>` too.
///
/// ```
/// use cache_runtime::__private::shape::{self, Succeeds};
///
/// type Outcome = Result<std::rc::Rc<u8>, String>;
/// let kept = <shape::Result as Succeeds<Outcome>>::succeeded(Ok(std::rc::Rc::new(1))).unwrap();
/// assert_eq!(*kept, 1);
/// assert!(<shape::Result as Succeeds<Outcome>>::succeeded(Err("no".into())).is_err());
/// ```
pub trait Succeeds<R> {
    /// What a success keeps until the function returns: the `Ok` value of
    /// a `Result`, the whole value otherwise.
    type Kept;
    /// `Ok` with what rebuilds the value after a success, `Err` with the
    /// value itself after an error (returned at once).
    fn succeeded(returned: R) -> StdResult<Self::Kept, R>;
    /// The return value again.
    fn rebuild(kept: Self::Kept) -> R;
}

impl<R> Succeeds<R> for Plain {
    type Kept = R;
    #[inline]
    fn succeeded(returned: R) -> StdResult<R, R> {
        Ok(returned)
    }
    #[inline]
    fn rebuild(kept: R) -> R {
        kept
    }
}

impl<R> Succeeds<R> for Option {
    type Kept = R;
    #[inline]
    fn succeeded(returned: R) -> StdResult<R, R> {
        Ok(returned)
    }
    #[inline]
    fn rebuild(kept: R) -> R {
        kept
    }
}

impl<T, E> Succeeds<StdResult<T, E>> for Result {
    type Kept = T;
    #[inline]
    fn succeeded(returned: StdResult<T, E>) -> StdResult<T, StdResult<T, E>> {
        returned.map_err(Err)
    }
    #[inline]
    fn rebuild(kept: T) -> StdResult<T, E> {
        Ok(kept)
    }
}

impl<T, E> Succeeds<StdResult<StdOption<T>, E>> for ResultOption {
    type Kept = StdOption<T>;
    #[inline]
    fn succeeded(
        returned: StdResult<StdOption<T>, E>,
    ) -> StdResult<StdOption<T>, StdResult<StdOption<T>, E>> {
        returned.map_err(Err)
    }
    #[inline]
    fn rebuild(kept: StdOption<T>) -> StdResult<StdOption<T>, E> {
        Ok(kept)
    }
}

impl<T, E> Succeeds<StdOption<StdResult<T, E>>> for OptionResult {
    type Kept = StdOption<T>;
    #[inline]
    fn succeeded(
        returned: StdOption<StdResult<T, E>>,
    ) -> StdResult<StdOption<T>, StdOption<StdResult<T, E>>> {
        match returned {
            Some(Ok(value)) => Ok(Some(value)),
            None => Ok(None),
            Some(Err(error)) => Err(Some(Err(error))),
        }
    }
    #[inline]
    fn rebuild(kept: StdOption<T>) -> StdOption<StdResult<T, E>> {
        kept.map(Ok)
    }
}

impl<T, E1, E2> Succeeds<StdResult<StdResult<T, E1>, E2>> for ResultResult {
    type Kept = T;
    #[inline]
    fn succeeded(
        returned: StdResult<StdResult<T, E1>, E2>,
    ) -> StdResult<T, StdResult<StdResult<T, E1>, E2>> {
        match returned {
            Ok(Ok(value)) => Ok(value),
            failed => Err(failed),
        }
    }
    #[inline]
    fn rebuild(kept: T) -> StdResult<StdResult<T, E1>, E2> {
        Ok(Ok(kept))
    }
}

/// The shapes that have a `None`, which `negative` caches (see
/// [`negative`] for an example).
#[diagnostic::on_unimplemented(
    message = "`negative` caches \"not found\", but `{R}` has no `None`",
    label = "`negative` needs a return type that can be `None`",
    note = "return `Option<T>` or `Result<Option<T>, E>` (or an alias of one), or remove `negative`"
)]
pub trait HasNone<R> {}

impl<T> HasNone<StdOption<T>> for Option {}
impl<T, E> HasNone<StdResult<StdOption<T>, E>> for ResultOption {}
impl<T, E> HasNone<StdOption<StdResult<T, E>>> for OptionResult {}

/// Checks at compile time that a function with `negative` can return
/// `None` (its shape `M` has one). Does nothing at run time.
///
/// ```
/// use cache_runtime::__private::{shape::negative, shape_of};
///
/// negative::<Option<u64>, _>(shape_of!(Option<u64>));
/// ```
#[inline]
pub fn negative<R, M: HasNone<R>>(_shape: M) {}

/// The return type `R`, as a receiver for [`Select::select`].
///
/// ```
/// use cache_runtime::__private::shape::{self, Of, Select as _};
///
/// type ApiResult<T> = Result<T, String>;
/// let marker = (&&&Of::<ApiResult<u64>>::new()).select();
/// let _: shape::Result = marker;
/// ```
pub struct Of<R>(PhantomData<fn() -> R>);

impl<R> Of<R> {
    /// The receiver for the return type `R`, named.
    #[inline]
    pub const fn new() -> Self {
        Of(PhantomData)
    }

    /// The receiver for the type of `returned` (which may be an `impl
    /// Trait` no expression can name).
    #[inline]
    pub const fn of_val(_returned: &R) -> Self {
        Of(PhantomData)
    }
}

impl<R> Default for Of<R> {
    fn default() -> Self {
        Of::new()
    }
}

/// Picks the shape marker of a return type: call `select` on `&&&Of<R>`
/// (see the module docs); the most specific impl that applies wins.
///
/// ```
/// use cache_runtime::__private::shape::{self, Of, Select as _};
///
/// let _: shape::OptionResult = (&&&Of::<Option<Result<u8, String>>>::new()).select();
/// let _: shape::Option = (&&&Of::<Option<u8>>::new()).select();
/// let _: shape::Plain = (&&&Of::<Vec<Option<u8>>>::new()).select();
/// ```
pub trait Select {
    /// The marker.
    type Shape;
    /// The marker for this return type.
    fn select(self) -> Self::Shape;
}

impl<T, E> Select for &&&Of<StdOption<StdResult<T, E>>> {
    type Shape = OptionResult;
    #[inline]
    fn select(self) -> OptionResult {
        OptionResult
    }
}

impl<T, E> Select for &&&Of<StdResult<StdOption<T>, E>> {
    type Shape = ResultOption;
    #[inline]
    fn select(self) -> ResultOption {
        ResultOption
    }
}

impl<T, E1, E2> Select for &&&Of<StdResult<StdResult<T, E1>, E2>> {
    type Shape = ResultResult;
    #[inline]
    fn select(self) -> ResultResult {
        ResultResult
    }
}

impl<T> Select for &&Of<StdOption<T>> {
    type Shape = Option;
    #[inline]
    fn select(self) -> Option {
        Option
    }
}

impl<T, E> Select for &&Of<StdResult<T, E>> {
    type Shape = Result;
    #[inline]
    fn select(self) -> Result {
        Result
    }
}

impl<R> Select for &Of<R> {
    type Shape = Plain;
    #[inline]
    fn select(self) -> Plain {
        Plain
    }
}

/// The shape marker of a return type, picked by the type system (see the
/// `shape` module): `shape_of!(ApiResult<User>)` is `shape::Result` when
/// `ApiResult<T>` is an alias of `Result<T, E>`.
///
/// Used by generated code, through `__private::shape_of`.
///
/// ```
/// type MaybeUser = Option<String>;
/// let _: cache_runtime::__private::shape::Option =
///     cache_runtime::__private::shape_of!(MaybeUser);
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __cache_shape_of {
    ($returned:ty) => {{
        use $crate::__private::shape::Select as _;
        (&&&$crate::__private::shape::Of::<$returned>::new()).select()
    }};
}

/// [`shape_of!`](crate::__private::shape_of) for the type of a value,
/// which may be an `impl Trait`: `shape_of_val!(&returned)`.
///
/// ```
/// fn numbers() -> Option<impl std::fmt::Display> {
///     let returned = Some(1);
///     let _: cache_runtime::__private::shape::Option =
///         cache_runtime::__private::shape_of_val!(&returned);
///     returned
/// }
/// # numbers();
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! __cache_shape_of_val {
    ($returned:expr) => {{
        use $crate::__private::shape::Select as _;
        (&&&$crate::__private::shape::Of::of_val($returned)).select()
    }};
}

#[cfg(test)]
mod tests {
    use std::any::type_name_of_val;

    use super::*;

    fn name_of<M>(marker: M) -> &'static str {
        let name = type_name_of_val(&marker);
        name.rsplit("::").next().unwrap_or(name)
    }

    type ApiResult<T> = StdResult<T, String>;
    type MaybeUser = StdOption<u64>;

    mod own {
        pub enum Result<T, E> {
            Ok(T),
            Err(E),
        }
    }

    #[test]
    fn the_type_system_picks_the_shape_through_aliases() {
        let cases = [
            (name_of(crate::__cache_shape_of!(u64)), "Plain"),
            (
                name_of(crate::__cache_shape_of!(Vec<StdOption<u64>>)),
                "Plain",
            ),
            (name_of(crate::__cache_shape_of!(MaybeUser)), "Option"),
            (name_of(crate::__cache_shape_of!(ApiResult<u64>)), "Result"),
            (
                name_of(crate::__cache_shape_of!(std::io::Result<u64>)),
                "Result",
            ),
            (
                name_of(crate::__cache_shape_of!(ApiResult<MaybeUser>)),
                "ResultOption",
            ),
            (
                name_of(crate::__cache_shape_of!(StdOption<ApiResult<u64>>)),
                "OptionResult",
            ),
            (
                name_of(crate::__cache_shape_of!(ApiResult<ApiResult<u64>>)),
                "ResultResult",
            ),
            (
                name_of(crate::__cache_shape_of!(own::Result<u64, String>)),
                "Plain",
            ),
            (
                name_of(crate::__cache_shape_of!(StdOption<StdOption<u64>>)),
                "Option",
            ),
        ];
        for (picked, expected) in cases {
            assert_eq!(picked, expected);
        }
        let _ = own::Result::<u8, u8>::Ok(1);
        let _ = own::Result::<u8, u8>::Err(1);
    }

    /// Inside a generic function the declared type decides: `T` is a plain
    /// value whatever it is instantiated with.
    fn generic<T>() -> &'static str {
        name_of(crate::__cache_shape_of!(T))
    }

    fn generic_option<T>() -> &'static str {
        name_of(crate::__cache_shape_of!(StdOption<T>))
    }

    fn generic_result<T, E>() -> &'static str {
        name_of(crate::__cache_shape_of!(StdResult<T, E>))
    }

    #[test]
    fn generic_return_types_take_their_declared_shape() {
        assert_eq!(generic::<StdOption<u64>>(), "Plain");
        assert_eq!(generic_option::<ApiResult<u64>>(), "Option");
        assert_eq!(generic_result::<MaybeUser, String>(), "Result");
    }

    #[test]
    fn values_name_their_own_type() {
        let returned: StdOption<u64> = None;
        assert_eq!(name_of(crate::__cache_shape_of_val!(&returned)), "Option");
    }

    fn split<R, M: Shape<R>>(_: M, returned: R) -> Loaded<M::Value, M::None, R> {
        M::split(returned)
    }

    #[test]
    fn only_values_are_stored_and_errors_come_back_as_returned() {
        let shape = crate::__cache_shape_of!(StdOption<ApiResult<u64>>);
        let returned: [StdOption<ApiResult<u64>>; 3] =
            [Some(Ok(1)), None, Some(Err("no".to_owned()))];
        let [value, none, error] = returned.map(|returned| split(shape, returned));
        assert!(matches!(value, Loaded::Value(1)));
        assert!(matches!(none, Loaded::Absent(())));
        assert!(matches!(error, Loaded::Failed(Some(Err(error))) if error == "no"));
        assert_eq!(
            absent::<StdOption<ApiResult<u64>>, OptionResult>(),
            Some(None)
        );
        let shape = crate::__cache_shape_of!(ApiResult<ApiResult<u64>>);
        let returned: [ApiResult<ApiResult<u64>>; 3] =
            [Ok(Ok(2)), Ok(Err(String::new())), Err(String::new())];
        let [value, inner, outer] = returned.map(|returned| split(shape, returned));
        assert!(matches!(value, Loaded::Value(2)));
        assert!(matches!(inner, Loaded::Failed(Ok(Err(_)))));
        assert!(matches!(outer, Loaded::Failed(Err(_))));
        assert_eq!(absent::<ApiResult<ApiResult<u64>>, ResultResult>(), None);
        assert_eq!(
            absent::<ApiResult<MaybeUser>, ResultOption>(),
            Some(Ok(None))
        );
        assert_eq!(absent::<u64, Plain>(), None);
    }

    #[test]
    fn success_keeps_the_ok_value_and_errors_come_back() {
        assert_eq!(
            <Result as Succeeds<ApiResult<()>>>::succeeded(Ok(())),
            Ok(())
        );
        assert_eq!(
            <Result as Succeeds<ApiResult<()>>>::succeeded(Err("no".to_owned())),
            Err(Err("no".to_owned()))
        );
        assert_eq!(
            <OptionResult as Succeeds<StdOption<ApiResult<u8>>>>::succeeded(Some(Err(
                String::new()
            ))),
            Err(Some(Err(String::new())))
        );
        assert_eq!(
            <OptionResult as Succeeds<StdOption<ApiResult<u8>>>>::rebuild(Some(3)),
            Some(Ok(3))
        );
        assert_eq!(<Plain as Succeeds<u8>>::succeeded(4), Ok(4));
    }
}
