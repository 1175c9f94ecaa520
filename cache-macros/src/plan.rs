//! What `validate` hands `expand`: one plan per attribute, holding exactly
//! what that attribute's expansion uses, every rule already checked.
//!
//! The parts the attributes share are structs of their own: [`Common`] (in
//! every plan) and [`Entry`] (how a value is stored: in `#[cached]`,
//! `#[write_through]` and `#[write_behind]` plans).

use proc_macro2::{Ident, Span, TokenStream};
use quote::ToTokens;
use syn::{Attribute, Expr, LitStr, PatType, Path, Token, Type};

use crate::key::KeyTemplate;

/// The plan of one attribute.
pub(crate) enum Plan {
    Cached(CachedPlan),
    Invalidates(InvalidatesPlan),
    WriteThrough(WriteThroughPlan),
    WriteBehind(WriteBehindPlan),
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
    /// attribute) when the function declares none. What of it is stored, or
    /// counts as success, the expansion asks the compiler
    /// (`__private::shape_of!`): see `shape.rs`.
    pub(crate) return_type: Type,
    /// Mistakes about parameters that exist only under a `#[cfg]`: reported
    /// by the expansion under the same `#[cfg]`, so only builds that have
    /// the parameter see them.
    pub(crate) conditional_errors: Vec<ConditionalError>,
}

/// The `#[cfg]` attributes (and the `#[cfg_attr]`s that can yield one) a
/// parameter is declared under. The expansion repeats them on every
/// statement it writes about the parameter, so a build without the
/// parameter has none of them.
#[derive(Clone, Default)]
pub(crate) struct Cfg(pub(crate) Vec<Attribute>);

impl Cfg {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl ToTokens for Cfg {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        for attribute in &self.0 {
            attribute.to_tokens(tokens);
        }
    }
}

/// What a placeholder's root names in the signature. Its identifier is the
/// signature's own, so the expansion reads the parameter whatever hygiene
/// the key literal came with (such as a `macro_rules!` caller's
/// `$key:literal`).
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) kind: SourceKind,
    pub(crate) ident: Ident,
    pub(crate) cfg: Cfg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceKind {
    /// A parameter, or a name bound inside a destructuring parameter:
    /// rendered with `Display`.
    Parameter,
    /// A parameter declared as a primitive integer (`id: u64`) and keyed
    /// whole (`<id>`): rendered by the runtime's `KeyBuf::integer`, which
    /// writes what `Display` would without its machinery.
    Integer,
    /// `const N: T`: its value, rendered with `Display`.
    ConstGeneric,
    /// A type parameter: `core::any::type_name::<T>()`.
    TypeGeneric,
}

/// A compile error that holds only where a `#[cfg]` does.
pub(crate) struct ConditionalError {
    pub(crate) cfg: Cfg,
    pub(crate) span: Span,
    pub(crate) message: String,
}

/// How a `#[cached]`, `#[write_through]` or `#[write_behind]` function
/// stores its value.
pub(crate) struct Entry {
    /// The key template (`key.written` is the template as written, for logs
    /// and metrics).
    pub(crate) key: KeyTemplate,
    /// `tags = [...]`, in order (none when not given).
    pub(crate) tags: Vec<KeyTemplate>,
    /// How long the value is fresh.
    pub(crate) ttl: Lifetime,
    /// The fraction by which each stored TTL may vary.
    pub(crate) jitter: Option<f64>,
    /// How long the value is kept, and may be served, after `ttl`.
    pub(crate) stale: Option<Lifetime>,
}

/// `ttl`, `negative` or `stale`.
#[derive(Clone)]
pub(crate) enum Lifetime {
    /// Whole seconds, checked (above 0, at most ten years).
    Seconds(u64),
    /// A `u64` of seconds or a `Duration`, naming nothing of a call: the
    /// runtime evaluates and checks it on the function's first call.
    Expression(Expr),
}

#[cfg(test)]
impl Lifetime {
    /// The seconds of a literal; `None` for an expression.
    pub(crate) fn seconds(&self) -> Option<u64> {
        match self {
            Lifetime::Seconds(seconds) => Some(*seconds),
            Lifetime::Expression(_) => None,
        }
    }
}

/// A `#[cached]` function.
pub(crate) struct CachedPlan {
    pub(crate) common: Common,
    pub(crate) entry: Entry,
    /// `negative`: how long "not found" (`None`, `Ok(None)`) is cached.
    pub(crate) negative: Option<Negative>,
    /// `l1 = false` bypasses the in-process tier; `lock` protects against
    /// stampedes across processes.
    pub(crate) l1: bool,
    pub(crate) lock: bool,
    /// `early`'s beta (1.0 when written alone).
    pub(crate) early: Option<f64>,
    /// Set when `early` or `stale` is: the body then also runs in the
    /// background, from owned copies of the parameters.
    pub(crate) refresh: Option<Refresh>,
    /// Set with `batch(id in ids)`: one entry per element of a parameter,
    /// the body loading only the missing ones (never with `refresh` or
    /// `lock`, which validation refuses alongside it).
    pub(crate) batch: Option<Batch>,
}

/// `batch(id in ids)`: each element of the parameter `ids` is an id with an
/// entry of its own, under the key the template renders with `<id>` bound
/// to it.
pub(crate) struct Batch {
    /// `id`, as the attribute writes it: the expansion binds each element
    /// to it, and the key's `<id>` placeholders resolve to that binding.
    pub(crate) element: Ident,
    /// `ids`, as the signature writes it: the body reads it, rebound to the
    /// missing ids.
    pub(crate) parameter: Ident,
    /// `mut ids`: the `mut` moves from the signature (where the parameter is
    /// only read) to the body's rebinding.
    pub(crate) mutability: Option<Token![mut]>,
    /// `K`, the element type (the id type of the returned `HashMap`).
    pub(crate) element_type: Box<Type>,
    pub(crate) form: BatchForm,
}

/// How the batch parameter holds its ids, and so how the body's rebinding
/// gives them back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BatchForm {
    /// `Vec<K>`: the body gets the `Vec` of missing ids.
    Owned,
    /// `&[K]`: the body gets a slice of the missing ids.
    Borrowed,
}

/// `negative = N`.
pub(crate) struct Negative {
    /// How long a `None` is cached.
    pub(crate) lifetime: Lifetime,
    /// The name `negative` in the attribute: a return type without a `None`
    /// is reported there (by the compiler, which resolves aliases).
    pub(crate) option: Span,
}

/// What the expansion needs to run the body again in a background task:
/// which values to copy out of the call's parameters for each run.
pub(crate) struct Refresh {
    /// The name `early` (or else `stale`) in the attribute, where notes about
    /// what the background task needs point.
    pub(crate) option: Span,
    /// For methods, the receiver (cloned for each run).
    pub(crate) receiver: Option<ReceiverCopy>,
    /// Every parameter the body can read, in order.
    pub(crate) parameters: Vec<RefreshParameter>,
}

/// The receiver `self: &T` (`&self` is `self: &Self`): each run clones `T`
/// (so `Self: Clone`, or `Arc<Self>` for `self: &Arc<Self>`), and the body's
/// `self` is a `&T` borrowing the copy, the type the body was written for.
pub(crate) struct ReceiverCopy {
    pub(crate) self_token: Token![self],
    /// `T`.
    pub(crate) referent: Box<Type>,
}

/// A parameter bound to a plain name (`id: u64`, `mut n: u8`, `name: &str`).
pub(crate) struct RefreshParameter {
    /// The parameter as written, whose tokens the copy is spanned over.
    pub(crate) written: PatType,
    pub(crate) mutability: Option<Token![mut]>,
    pub(crate) ident: Ident,
    /// The passing mode.
    pub(crate) passing: Passing,
    /// Where the parameter exists.
    pub(crate) cfg: Cfg,
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

/// A `#[write_behind]` function: it stores one parameter's value, queues
/// its other parameters for a worker that runs the body later, and has a
/// companion building that worker's handler.
pub(crate) struct WriteBehindPlan {
    /// `return_type` is `()` (spanned at the function's name) when the
    /// function declares none.
    pub(crate) common: Common,
    pub(crate) entry: Entry,
    /// The first parameter when it is a shared reference: the worker owns
    /// one and lends it to each deferred call. `None`: the companion takes
    /// no argument.
    pub(crate) handle: Option<Handle>,
    /// Every other parameter, in order: what travels in the queue.
    pub(crate) queued: Vec<QueuedParameter>,
    /// The signature's parameter list, `(..)`: the tuples of queued values
    /// the expansion builds are spanned there, so a type the queue can't
    /// hold is reported on the parameters (and on its own type, by
    /// `queued_argument`), not on the attribute.
    pub(crate) parameter_list: Span,
    /// `value = param`: which queued parameter the cache stores.
    pub(crate) value: StoredValue,
    /// `queue = "..."`, or the function's name: the queue's name, spanned
    /// where it is written (at the function's name by default).
    pub(crate) queue: LitStr,
    /// `coalesce`: the worker may apply only the last of several queued
    /// writes of one key.
    pub(crate) coalesce: bool,
    /// The function's `#[cfg]`s and lint levels, repeated on the generated
    /// siblings (the body's function and the companion), so they exist in
    /// the same builds and the body is linted as written.
    pub(crate) sibling_attrs: Vec<Attribute>,
}

/// The handle: what the worker owns and lends to each deferred call.
pub(crate) enum Handle {
    /// `db: &Db`: the companion takes a `Db`.
    Parameter { ident: Ident, referent: Box<Type> },
    /// `&self` (or `self: &T`): the companion is a method taking `self` (or
    /// `self: T`).
    Receiver {
        self_token: Token![self],
        referent: Box<Type>,
    },
}

/// A parameter that travels in the queue: a plain name (`mut` aside) and
/// an owned type.
pub(crate) struct QueuedParameter {
    pub(crate) ident: Ident,
    pub(crate) ty: Box<Type>,
}

/// `value = at`.
pub(crate) struct StoredValue {
    /// The parameter's identifier as the signature writes it, so the clone
    /// reads the parameter whatever hygiene the attribute came with.
    pub(crate) parameter: Ident,
    /// Where `at` is written in the attribute: a value the cache can't
    /// store is reported there.
    pub(crate) written: Span,
}
