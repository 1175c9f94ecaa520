//! What `validate` hands `expand`: one plan per attribute, holding exactly
//! what that attribute's expansion uses, every rule already checked.
//!
//! The parts the attributes share are structs of their own: [`Common`] (in
//! every plan) and [`Entry`] (how a value is stored: in `#[cached]` and
//! `#[write_through]` plans).

use proc_macro2::{Ident, Span};
use syn::{Expr, PatType, Path, Token, Type};

use crate::key::KeyTemplate;
use crate::shape::Shape;

/// The plan of one attribute.
pub(crate) enum Plan {
    Cached(CachedPlan),
    Invalidates(InvalidatesPlan),
    WriteThrough(WriteThroughPlan),
}

/// What every attribute's expansion needs.
pub(crate) struct Common {
    /// The function's name without `r#`, for logs and metrics.
    pub(crate) function_name: String,
    /// `cache = EXPR`; `None` means `Cache::global()`.
    pub(crate) cache: Option<Expr>,
    /// Where generated code finds the runtime: `::cache_runtime` unless
    /// `crate = "..."` says otherwise.
    pub(crate) runtime: Path,
    /// The declared return type; for `#[invalidates]`, `()` (spanned at the
    /// attribute) when the function declares none.
    pub(crate) return_type: Type,
    /// What the runtime stores, or what counts as success (`Ok`, or any
    /// value).
    pub(crate) shape: Shape,
}

/// How a `#[cached]` or `#[write_through]` function stores its value.
pub(crate) struct Entry {
    /// The key template (`key.written` is the template as written, for logs
    /// and metrics).
    pub(crate) key: KeyTemplate,
    /// `tags = [...]`, in order (none when not given).
    pub(crate) tags: Vec<KeyTemplate>,
    /// Seconds the value is fresh.
    pub(crate) ttl_secs: u64,
    /// The fraction by which each stored TTL may vary.
    pub(crate) jitter: Option<f64>,
    /// Seconds the value is kept, and may be served, after `ttl`.
    pub(crate) stale_secs: Option<u64>,
}

/// A `#[cached]` function.
pub(crate) struct CachedPlan {
    pub(crate) common: Common,
    pub(crate) entry: Entry,
    /// Seconds "not found" (`None`, `Ok(None)`) is cached.
    pub(crate) negative_secs: Option<u64>,
    /// `l1 = false` bypasses the in-process tier; `lock` protects against
    /// stampedes across processes.
    pub(crate) l1: bool,
    pub(crate) lock: bool,
    /// `early`'s beta (1.0 when written alone).
    pub(crate) early: Option<f64>,
    /// Set when `early` or `stale` is: the body then also runs in the
    /// background, from owned copies of the parameters.
    pub(crate) refresh: Option<Refresh>,
}

/// What the expansion needs to run the body again in a background task:
/// which values to copy out of the call's parameters for each run.
pub(crate) struct Refresh {
    /// The name `early` (or else `stale`) in the attribute, where notes about
    /// what the background task needs point.
    pub(crate) option: Span,
    /// The receiver's `self` token, for `&self` methods (cloned, so `Self:
    /// Clone`).
    pub(crate) receiver: Option<Token![self]>,
    /// Every parameter the body can read, in order.
    pub(crate) parameters: Vec<RefreshParameter>,
}

/// A parameter bound to a plain name (`id: u64`, `mut n: u8`, `name: &str`).
pub(crate) struct RefreshParameter {
    /// The parameter as written, whose tokens the copy is spanned over.
    pub(crate) written: PatType,
    pub(crate) mutability: Option<Token![mut]>,
    pub(crate) ident: Ident,
    /// The passing mode.
    pub(crate) passing: Passing,
}

pub(crate) enum Passing {
    /// `T`: cloned.
    ByValue,
    /// `&T`: turned into `T::Owned` with `ToOwned`, then borrowed back as
    /// `&T` inside the task. Holds `T`.
    Borrowed(Box<Type>),
}

/// A `#[write_through]` function: it stores what the body returned.
pub(crate) struct WriteThroughPlan {
    pub(crate) common: Common,
    pub(crate) entry: Entry,
}

/// An `#[invalidates]` function: it deletes keys and drops tags.
pub(crate) struct InvalidatesPlan {
    pub(crate) common: Common,
    /// Each `key = "..."`, in order.
    pub(crate) keys: Vec<KeyTemplate>,
    /// Each `tag = "..."`, in order.
    pub(crate) tags: Vec<KeyTemplate>,
}
