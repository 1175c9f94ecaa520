//! The checks every attribute shares: the function must be an `async fn`
//! taking `&self` if anything, and the shared options (`key`, `tags` /
//! `tag`, `ttl`, `jitter`, `stale`, `cache`, `crate`) must hold, each as far
//! as the attribute accepts it (the parser fills no other).

use std::collections::HashSet;

use proc_macro2::{Ident, Span, TokenTree};
use quote::ToTokens;
use syn::{Attribute, Expr, Lit, LitStr, Path, Signature, Type};

use super::parameters::{Parameters, name_of};
use super::{Report, Stage};
use crate::args::{Args, MacroKind, Number, Seconds, Setting};
use crate::errors::Errors;
use crate::key::{KeyTemplate, TemplateKind, parse_template};
use crate::plan::{Cfg, Common, ConditionalError, Entry, Lifetime, SourceKind};

/// The shared options, checked: what each back end builds its plan from.
pub(super) struct Front<'a> {
    pub(super) parameters: Parameters<'a>,
    /// Each `key = "..."`: at most one for `#[cached]` and
    /// `#[write_through]`, any number for `#[invalidates]`.
    pub(super) keys: Vec<KeyTemplate>,
    /// `tags = [...]` of `#[cached]` and `#[write_through]`, or each
    /// `tag = "..."` of `#[invalidates]`.
    pub(super) tags: Vec<KeyTemplate>,
    /// `None` when not accepted, missing or wrong (reported).
    ttl: Option<Lifetime>,
    jitter: Option<f64>,
    stale: Option<Lifetime>,
    cache: Option<Expr>,
    runtime: Path,
}

impl<'a> Front<'a> {
    /// Checks the function and the shared options of the attribute `kind`,
    /// pushing every mistake to `report`.
    pub(super) fn check(
        kind: MacroKind,
        args: &Args,
        attrs: &[Attribute],
        signature: &'a Signature,
        report: &mut Report,
    ) -> Self {
        if args.krate.is_none() {
            check_runtime_is_reachable(report.stage(Stage::Syntax));
        }
        check_not_stacked(kind, attrs, report.stage(Stage::Signature));
        check_async(signature, kind, report.stage(Stage::Signature));
        check_receiver(signature, kind, report.stage(Stage::Signature));
        let mut parameters = Parameters::of(signature);
        // `batch(id in ids)` names each id `id`, which the key's
        // placeholders may use like a parameter.
        if let Some(batch) = &args.batch {
            parameters.element = Some(super::batch::element(&batch.value, signature));
        }
        parameters.element_unknown = args.batch.is_none() && args.mentions("batch");

        check_something_is_named(kind, args, report.stage(Stage::Key));
        // A single key's placeholders are checked with the other rules about
        // which parameters the key uses (`skip`, every parameter keyed);
        // `#[invalidates]` checks each of its keys whole, in turn, as tags.
        let key_placeholders = if kind.repeats("key") {
            Stage::Key
        } else {
            Stage::Parameters
        };
        let keys = args.keys.iter().map(|key| &key.value);
        let keys = Templates {
            kind: TemplateKind::Key,
            syntax: Stage::Key,
            placeholders: key_placeholders,
        }
        .check(keys, &parameters, report);
        // The parser fills `tags = [...]` or `tag = "..."`, whichever the
        // attribute accepts.
        check_stored_tag_count(args, report.stage(Stage::Tags));
        let tags = args.tags.iter().flat_map(|tags| &tags.value);
        let tags = tags.chain(args.tag.iter().map(|tag| &tag.value));
        let tags = Templates {
            kind: TemplateKind::Tag,
            syntax: Stage::Tags,
            placeholders: Stage::Tags,
        }
        .check(tags, &parameters, report);

        // Required wherever it is accepted.
        let ttl = kind
            .options()
            .contains(&"ttl")
            .then(|| required_ttl(args, &parameters, report.stage(Stage::Ttl)))
            .flatten();
        let jitter = args
            .jitter
            .as_ref()
            .and_then(|jitter| jitter_fraction(jitter, report.stage(Stage::Jitter)));
        let stale = args
            .stale
            .as_ref()
            .and_then(|stale| lifetime("stale", stale, &parameters, report.stage(Stage::Stale)));

        Front {
            parameters,
            keys,
            tags,
            ttl,
            jitter,
            stale,
            cache: args.cache.as_ref().map(|cache| cache.value.clone()),
            runtime: runtime_path(args.krate.as_ref()),
        }
    }

    /// The part of every plan, with the return type its back end checked
    /// and the mistakes that hold only under a `#[cfg]`.
    pub(super) fn common(
        &self,
        return_type: Type,
        conditional_errors: Vec<ConditionalError>,
    ) -> Common {
        Common {
            function_name: self.parameters.function_name().to_string(),
            cache: self.cache.clone(),
            runtime: self.runtime.clone(),
            return_type,
            conditional_errors,
        }
    }

    /// How `#[cached]` and `#[write_through]` store their value; `None` when
    /// the key or `ttl` is missing or wrong (reported).
    pub(super) fn entry(self) -> Option<Entry> {
        Some(Entry {
            key: self.keys.into_iter().next()?,
            tags: self.tags,
            ttl: self.ttl?,
            jitter: self.jitter,
            stale: self.stale,
        })
    }
}

/// Most tags one entry may carry: each is stored with the value and checked
/// on every read (the runtime's envelope holds at most this many).
const MAX_STORED_TAGS: usize = 64;

/// `tags = [...]` (stored with each value) is bounded; the error points at
/// the first tag past the bound.
fn check_stored_tag_count(args: &Args, errors: &mut Errors) {
    if let Some(tags) = &args.tags
        && let Some(first_extra) = tags.value.get(MAX_STORED_TAGS)
    {
        errors.on(
            first_extra,
            format!(
                "at most {MAX_STORED_TAGS} tags per entry (this is tag {}): each is stored with the value and checked on every read; group entries under a coarser tag",
                MAX_STORED_TAGS + 1
            ),
        );
    }
}

/// Without `crate = "..."`, generated code names the runtime
/// `::cache_runtime`; when `Cargo.toml` renames the dependency, that is
/// reported here once, saying what to write, rather than by rustc at every
/// path as "cannot find `cache_runtime`".
fn check_runtime_is_reachable(errors: &mut Errors) {
    if let Some(name) = crate::manifest::renamed_runtime() {
        errors.at(
            Span::call_site(),
            format!(
                "this crate depends on `cache-runtime` under the name `{name}` (Cargo.toml), so the generated code can't reach it as `::cache_runtime`; add `crate = \"::{name}\"` to the attribute"
            ),
        );
    }
}

/// One attribute of this crate per function, but for `#[invalidates]` and
/// `#[write_through]` together (store one entry, drop others).
/// `#[write_behind]` stacks with none: the others act when the call returns,
/// which for it is before the body has run. An attribute
/// macro sees the attributes written after it on the item, so the first of
/// two reports the second; attributes are recognised by the last segment of
/// their path (`cached`, `cache_runtime::cached`, a re-export of it), so an
/// import under another name goes unnoticed.
fn check_not_stacked(kind: MacroKind, attrs: &[Attribute], errors: &mut Errors) {
    for attr in attrs {
        let Some(last) = attr.path().segments.last() else {
            continue;
        };
        let other = match last.ident.to_string().as_str() {
            "cached" => MacroKind::Cached,
            "invalidates" => MacroKind::Invalidates,
            "write_through" => MacroKind::WriteThrough,
            "write_behind" => MacroKind::WriteBehind,
            _ => continue,
        };
        let message = match (kind, other) {
            (MacroKind::WriteBehind, MacroKind::WriteBehind) => {
                "`#[write_behind]` is written twice on this function: each would queue the write; keep one".to_owned()
            }
            // Anything else runs when the write is queued, not when its body
            // runs: an invalidation before the database has the write lets a
            // reader load the old data back into the cache.
            (MacroKind::WriteBehind, other) | (other, MacroKind::WriteBehind) => format!(
                "`#[write_behind]` and `#[{}]` can't be on one function: `#[write_behind]` returns before the body runs, so `#[{}]` would act before the database has the write; `#[write_behind]` already stores the new value (add `tags` to it to group entries)",
                other.name(),
                other.name()
            ),
            (MacroKind::Cached, MacroKind::Cached) => {
                "`#[cached]` is written twice on this function: each would keep its own entry for every call; keep one".to_owned()
            }
            (MacroKind::Cached, mutation) | (mutation, MacroKind::Cached) => {
                let mutation = mutation.name();
                let why = if mutation == "invalidates" {
                    "a hit skips the body and the invalidation with it, so whether data is invalidated would depend on what was cached"
                } else {
                    "`#[cached]` already stores what the body returns, and a hit skips the body and the write with it"
                };
                format!(
                    "`#[cached]` and `#[{mutation}]` can't be on one function: {why}; put `#[{mutation}]` on the function that changes the data"
                )
            }
            // Storing one entry and deleting others (or storing several)
            // after one write is a sensible combination.
            _ => continue,
        };
        errors.on(attr.path(), message);
    }
}

fn check_async(signature: &Signature, kind: MacroKind, errors: &mut Errors) {
    if signature.asyncness.is_none() {
        let reason = match kind {
            MacroKind::Cached => "loading and storing values may wait on Redis",
            MacroKind::Invalidates => "deleting the entries waits on Redis",
            MacroKind::WriteThrough => "storing the value waits on Redis",
            MacroKind::WriteBehind => "storing the value and queueing the write wait on Redis",
        };
        errors.at(
            signature.fn_token.span,
            format!("`#[{}]` requires an `async fn`: {reason}", kind.name()),
        );
    }
}

/// Only `&self`. `#[cached]`: the receiver is never part of the key, so a
/// method whose result depends on owning or mutating `self` cannot be cached
/// (and a moved or `&mut` receiver would conflict with `cache = self.cache`).
/// `#[invalidates]` / `#[write_through]`: the body is moved into a future
/// while the cache (`cache = self.cache`) stays borrowed. `#[write_behind]`:
/// `&self` is the handle, which the worker owns and lends to each deferred
/// call.
fn check_receiver(signature: &Signature, kind: MacroKind, errors: &mut Errors) {
    let Some(receiver) = signature.receiver() else {
        return;
    };
    let is_shared_reference =
        matches!(&*receiver.ty, Type::Reference(reference) if reference.mutability.is_none());
    if !is_shared_reference {
        let message = match kind {
            MacroKind::Cached => "`#[cached]` methods must take `&self`: a cache hit skips the body, so the result can't depend on taking or changing `self`".to_owned(),
            MacroKind::WriteBehind => "`#[write_behind]` methods must take `&self`: it is the handle the worker owns and lends to each deferred call, which rules out taking or changing `self`".to_owned(),
            MacroKind::Invalidates | MacroKind::WriteThrough => format!(
                "`#[{}]` methods must take `&self`: the body runs in a future while the cache (such as `cache = self.cache`) stays borrowed, which rules out taking or changing `self`",
                kind.name()
            ),
        };
        errors.on(receiver, message);
    }
}

/// `key` is required; `#[invalidates]` needs a `key` or a `tag` instead. An
/// option whose value did not parse was reported, so it is not missing.
fn check_something_is_named(kind: MacroKind, args: &Args, errors: &mut Errors) {
    let has_key = !args.keys.is_empty() || args.mentions("key");
    let has_tag = !args.tag.is_empty() || args.mentions("tag");
    let missing = match kind {
        MacroKind::Cached if !has_key => {
            "missing `key = \"...\"`: every cached function needs a key template, such as `key = \"user:<id>\"`"
        }
        MacroKind::WriteThrough if !has_key => {
            "missing `key = \"...\"`: `#[write_through]` stores the returned value under a key template, such as `key = \"user:<id>\"`"
        }
        MacroKind::WriteBehind if !has_key => {
            "missing `key = \"...\"`: `#[write_behind]` stores the written value under a key template, such as `key = \"user:<id>:seen\"`"
        }
        MacroKind::Invalidates if !has_key && !has_tag => {
            "`#[invalidates]` needs at least one `key = \"...\"` or `tag = \"...\"`: they name what to delete after the body succeeds"
        }
        _ => return,
    };
    errors.at(Span::call_site(), missing);
}

impl Front<'_> {
    /// The rules about what the single key (`#[cached]`, `#[write_through]`)
    /// must render: `skip(...)` is checked, then, when the key is well
    /// formed ("not in the key" would otherwise only be noise), every generic
    /// parameter, and whatever the attribute adds in `also`, is keyed or
    /// skipped. Returns the errors that hold only under a `#[cfg]`.
    pub(super) fn check_keyed(
        &self,
        kind: MacroKind,
        skip: Option<&Setting<Vec<Ident>>>,
        report: &mut Report,
        also: impl FnOnce(&KeyTemplate, &HashSet<String>, &mut Unkeyed),
    ) -> Vec<ConditionalError> {
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        let errors = report.stage(Stage::Parameters);
        let skipped = check_skip_list(kind, skip, key, &self.parameters, errors);
        if !key.well_formed {
            return Vec::new();
        }
        let mut unkeyed = Unkeyed::new(errors);
        also(key, &skipped, &mut unkeyed);
        check_every_generic_is_keyed(key, &skipped, &self.parameters, &mut unkeyed);
        unkeyed.conditional
    }
}

/// Where a parameter missing from the key is reported: at once, or, for one
/// declared under a `#[cfg]`, by the expansion under that same `#[cfg]`, so
/// that only builds that have the parameter require it in the key.
pub(super) struct Unkeyed<'e> {
    pub(super) errors: &'e mut Errors,
    pub(super) conditional: Vec<ConditionalError>,
}

impl<'e> Unkeyed<'e> {
    pub(super) fn new(errors: &'e mut Errors) -> Self {
        Unkeyed {
            errors,
            conditional: Vec::new(),
        }
    }

    pub(super) fn report(&mut self, cfg: &Cfg, span: Span, message: String) {
        if cfg.is_empty() {
            self.errors.at(span, message);
        } else {
            self.conditional.push(ConditionalError {
                cfg: cfg.clone(),
                span,
                message,
            });
        }
    }
}

/// `skip(...)` lists parameters that are not in the key (`#[cached]`), or,
/// where parameters need not be in the key (`#[write_through]`), generic
/// parameters only. Returns the names it lists.
fn check_skip_list(
    kind: MacroKind,
    skip: Option<&Setting<Vec<Ident>>>,
    template: &KeyTemplate,
    parameters: &Parameters,
    errors: &mut Errors,
) -> HashSet<String> {
    let mut skipped = HashSet::new();
    for name in skip.map(|skip| skip.value.as_slice()).unwrap_or_default() {
        if name == "self" {
            errors.at(
                name.span(),
                "the receiver is never part of the key, so it needs no `skip`",
            );
        } else if kind != MacroKind::Cached && parameters.binds(name) {
            errors.at(
                name.span(),
                format!(
                    "`#[{}]` does not require every parameter in the key, so only generic parameters need `skip`; remove `{name}` from `skip(...)`",
                    kind.name()
                ),
            );
        } else if !parameters.binds(name) && !parameters.is_generic(name) {
            errors.at(
                name.span(),
                format!(
                    "`skip` lists `{name}`, which is not a parameter of `{}`",
                    parameters.function_name()
                ),
            );
        } else if template.uses(&name_of(name)) {
            errors.at(
                name.span(),
                format!(
                    "`{name}` is in the key, so it can't be skipped; remove it from `skip(...)`"
                ),
            );
        } else if !skipped.insert(name_of(name)) {
            errors.at(name.span(), format!("`{name}` is listed twice in `skip`"));
        }
    }
    skipped
}

/// Calls that differ only in a const or type parameter run different code
/// (`scaled::<2>(5)` and `scaled::<3>(5)`), so each is in the key (a const
/// renders its value, a type its name) or in `skip`. Lifetimes need
/// nothing. `impl Trait` parameters are anonymous type parameters whose
/// value is keyed with their parameter, and so is a type parameter that is
/// the type of a value the key renders (`<id>` with `id: K`).
fn check_every_generic_is_keyed(
    key: &KeyTemplate,
    skipped: &HashSet<String>,
    parameters: &Parameters,
    unkeyed: &mut Unkeyed,
) {
    for generic in &parameters.generics {
        let name = &generic.name;
        let keyed_by_value =
            generic.kind == SourceKind::TypeGeneric && parameters.is_type_of_keyed_value(name, key);
        if key.uses(name) || skipped.contains(name) || keyed_by_value {
            continue;
        }
        let renders = match generic.kind {
            SourceKind::ConstGeneric => format!("the value of `{name}`"),
            _ => format!("the name of the type `{name}` stands for"),
        };
        let message = format!(
            "{} `{name}` is not in the key, so calls that differ only in `{name}` would share one entry; add `<{name}>` to the key ({renders}), such as `key = \"{}\"`, or `skip({name})` if the result does not depend on it",
            generic.noun(),
            with_placeholder(key, name),
        );
        unkeyed.report(&generic.cfg, generic.ident.span(), message);
    }
}

/// `template` with `<name>` added, as an example: after its leading text
/// (`"s:<id>"` gives `"s:<N>:<id>"`), or at the end if there is no other
/// placeholder.
fn with_placeholder(template: &KeyTemplate, name: &str) -> String {
    let written = &template.written;
    let Some(first) = written.find('<') else {
        return format!("{written}:<{name}>");
    };
    let (lead, rest) = written.split_at(first);
    match lead.chars().last() {
        None => format!("<{name}>:{written}"),
        Some(separator) if !separator.is_ascii_alphanumeric() => {
            format!("{lead}<{name}>{separator}{rest}")
        }
        Some(_) => format!("{written}:<{name}>"),
    }
}

/// How one list of templates is checked, and where its errors are reported.
struct Templates {
    kind: TemplateKind,
    /// Where a malformed template, or one written twice, is reported.
    syntax: Stage,
    /// Where a placeholder that names no parameter is reported.
    placeholders: Stage,
}

impl Templates {
    /// Parses each template and resolves its placeholders; a template
    /// written twice is reported on its second copy.
    fn check<'t>(
        &self,
        literals: impl IntoIterator<Item = &'t LitStr>,
        parameters: &Parameters,
        report: &mut Report,
    ) -> Vec<KeyTemplate> {
        let mut seen = HashSet::new();
        let mut templates = Vec::new();
        for literal in literals {
            let mut template = parse_template(literal, self.kind, report.stage(self.syntax));
            if !seen.insert(template.written.clone()) {
                report.stage(self.syntax).on(
                    literal,
                    format!(
                        "the {} `{}` is written twice",
                        self.kind.noun(),
                        template.written
                    ),
                );
            }
            parameters.resolve_placeholders(&mut template, report.stage(self.placeholders));
            templates.push(template);
        }
        templates
    }
}

/// `crate = "..."`, or `::cache_runtime`.
fn runtime_path(krate: Option<&Setting<Path>>) -> Path {
    krate.map_or_else(
        || syn::parse_quote!(::cache_runtime),
        |krate| krate.value.clone(),
    )
}

/// `ttl`, which has no default.
fn required_ttl(args: &Args, parameters: &Parameters, errors: &mut Errors) -> Option<Lifetime> {
    match &args.ttl {
        Some(ttl) => lifetime("ttl", ttl, parameters, errors),
        None if args.mentions("ttl") => None,
        None => {
            errors.at(
                Span::call_site(),
                "missing `ttl = N`, the seconds a value stays fresh: how stale a value may be is a decision for each function, so there is no default",
            );
            None
        }
    }
}

/// The longest `ttl`, `negative` or `stale`: ten years. Far beyond any
/// useful lifetime of a cached value, and far inside what Redis (expiries in
/// milliseconds as an `i64`) and `Instant` arithmetic represent, even with
/// `ttl + stale` and the most `jitter` added.
pub(super) const MAX_SECONDS: u64 = 10 * 365 * 24 * 60 * 60;

/// `ttl`, `negative`, `stale`: whole seconds above 0, at most
/// [`MAX_SECONDS`], when written as a literal; an expression is left to the
/// compiler (its type) and the runtime (its value, on the first call), once
/// it is known to name nothing of a call: it is evaluated once for every
/// call.
pub(super) fn lifetime(
    name: &str,
    setting: &Setting<Seconds>,
    parameters: &Parameters,
    errors: &mut Errors,
) -> Option<Lifetime> {
    match &setting.value {
        Seconds::Literal(number) => positive_seconds(name, number, errors).map(Lifetime::Seconds),
        Seconds::Expression(expression) => {
            let before = errors.is_empty();
            check_evaluated_once(name, expression.to_token_stream(), parameters, errors);
            (!before || errors.is_empty()).then(|| Lifetime::Expression(expression.clone()))
        }
    }
}

/// Refuses, each on its token, what an expression evaluated once for all
/// calls can't name: a parameter or the receiver (one call's values), a
/// generic parameter or `Self` (the function's value is shared by every
/// type it is instantiated with). A name after `::` or `.` is a path's or a
/// field's, not a variable, and is let through.
fn check_evaluated_once(
    option: &str,
    tokens: proc_macro2::TokenStream,
    parameters: &Parameters,
    errors: &mut Errors,
) {
    let function = parameters.function_name();
    let mut after_path_or_field = false;
    for token in tokens {
        match &token {
            TokenTree::Group(group) => {
                check_evaluated_once(option, group.stream(), parameters, errors);
            }
            TokenTree::Ident(ident) if !after_path_or_field => {
                let why = if ident == "self" {
                    Some("the receiver `self`, which belongs to one call".to_string())
                } else if ident == "Self" {
                    Some("`Self`, which stands for every type of a generic `impl`: name the type (`UserRepo::TTL`)".to_string())
                } else if parameters.binds(ident) {
                    Some(format!(
                        "the parameter `{ident}`, which belongs to one call"
                    ))
                } else if parameters.is_generic(ident) {
                    Some(format!(
                        "the generic parameter `{ident}`, as one value serves every instantiation"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    errors.at(
                        ident.span(),
                        format!("`{option}` is evaluated once, on the first call of `{function}`, for every call: it can't use {why}"),
                    );
                }
            }
            _ => {}
        }
        after_path_or_field = match &token {
            TokenTree::Punct(punct) => matches!(punct.as_char(), ':' | '.'),
            _ => false,
        };
    }
}

/// A literal `ttl`, `negative` or `stale`: whole seconds above 0, at most
/// [`MAX_SECONDS`].
pub(super) fn positive_seconds(name: &str, number: &Number, errors: &mut Errors) -> Option<u64> {
    let Lit::Int(int) = &number.lit else {
        errors.on(number, format!("`{name}` is a whole number of seconds"));
        return None;
    };
    // A literal too large for a `u64` is past the bound too.
    let seconds = int.base10_parse::<u64>().unwrap_or(u64::MAX);
    if seconds == 0 || number.minus.is_some() {
        errors.on(number, format!("`{name}` must be greater than 0 seconds"));
        None
    } else if seconds > MAX_SECONDS {
        errors.on(
            number,
            format!(
                "`{name}` must be at most {MAX_SECONDS} seconds (10 years), the longest lifetime a cached value may have"
            ),
        );
        None
    } else {
        Some(seconds)
    }
}

/// A number written as an integer or a float, without its sign; `None` when
/// it does not parse (reported).
pub(super) fn magnitude(number: &Number, errors: &mut Errors) -> Option<f64> {
    let parsed = match &number.lit {
        Lit::Int(int) => int.base10_parse::<f64>(),
        Lit::Float(float) => float.base10_parse::<f64>(),
        _ => unreachable!("the parser only accepts numeric literals"),
    };
    parsed.map_err(|error| errors.push(error)).ok()
}

/// `jitter`: a fraction F of the TTL with 0 <= F < 1 (at 1 a TTL could be
/// drawn as zero).
fn jitter_fraction(setting: &Setting<Number>, errors: &mut Errors) -> Option<f64> {
    let number = &setting.value;
    match magnitude(number, errors)? {
        // Matches `-0.0` too, which is stored as a plain zero.
        0.0 => Some(0.0),
        magnitude if magnitude < 1.0 && number.minus.is_none() => Some(magnitude),
        _ => {
            errors.on(
                number,
                "`jitter` must be at least 0 and less than 1: it is the fraction of `ttl` by which each stored TTL may vary",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use crate::validate::testing::{
        assert_one, cached, errors_in, errors_of, invalidates, planned, write_through,
    };

    #[test]
    fn requires_async() {
        let errors = errors_of(quote!(key = "k", ttl = 1), quote! { fn f() -> u8 { 1 } });
        let expected =
            "`#[cached]` requires an `async fn`: loading and storing values may wait on Redis";
        assert_eq!(errors, [expected]);
    }

    #[test]
    fn receiver_must_be_a_shared_reference() {
        let shared = [quote!(&self), quote!(&'a self), quote!(self: &Self)];
        for receiver in shared {
            let errors = errors_of(
                quote!(key = "k", ttl = 1),
                quote! { async fn f(#receiver) -> u8 { 1 } },
            );
            assert!(errors.is_empty(), "{receiver}: {errors:?}");
        }
        let other = [
            quote!(self),
            quote!(mut self),
            quote!(&mut self),
            quote!(self: Box<Self>),
        ];
        for receiver in other {
            let errors = errors_of(
                quote!(key = "k", ttl = 1),
                quote! { async fn f(#receiver) -> u8 { 1 } },
            );
            assert_one(&errors, "`#[cached]` methods must take `&self`", &receiver);
        }
    }

    #[test]
    fn key_and_ttl_are_required() {
        let errors = errors_of(quote!(), quote! { async fn f() -> u8 { 1 } });
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("missing `key = \"...\"`"));
        assert!(errors[1].starts_with("missing `ttl = N`"));
    }

    #[test]
    fn ttl_and_negative_are_positive_whole_seconds() {
        let function = quote! { async fn f() -> Option<u8> { None } };
        for (args, expected) in [
            (quote!(ttl = 0), "`ttl` must be greater than 0 seconds"),
            (quote!(ttl = -5), "`ttl` must be greater than 0 seconds"),
            (quote!(ttl = 1.5), "`ttl` is a whole number of seconds"),
            (
                quote!(ttl = 1, negative = 0),
                "`negative` must be greater than 0 seconds",
            ),
            (
                quote!(ttl = 1, negative = 2.0),
                "`negative` is a whole number of seconds",
            ),
            (
                quote!(ttl = 99999999999999999999),
                "`ttl` must be at most 315360000 seconds (10 years), the longest lifetime a cached value may have",
            ),
            (
                quote!(ttl = 315360001),
                "`ttl` must be at most 315360000 seconds (10 years), the longest lifetime a cached value may have",
            ),
            (
                quote!(ttl = 1, negative = 18446744073709551615),
                "`negative` must be at most 315360000 seconds (10 years), the longest lifetime a cached value may have",
            ),
        ] {
            let errors = errors_of(quote!(key = "k", #args), function.clone());
            assert_eq!(errors, [expected], "{args}");
        }
    }

    #[test]
    fn jitter_is_a_fraction_below_one() {
        let function = quote! { async fn f() -> u8 { 1 } };
        for jitter in [
            quote!(0),
            quote!(0.0),
            quote!(-0.0),
            quote!(0.5),
            quote!(0.999),
        ] {
            let errors = errors_of(
                quote!(key = "k", ttl = 1, jitter = #jitter),
                function.clone(),
            );
            assert!(errors.is_empty(), "{jitter}: {errors:?}");
        }
        for jitter in [
            quote!(1),
            quote!(1.0),
            quote!(2.5),
            quote!(-0.1),
            quote!(1e400),
        ] {
            let errors = errors_of(
                quote!(key = "k", ttl = 1, jitter = #jitter),
                function.clone(),
            );
            assert_one(
                &errors,
                "`jitter` must be at least 0 and less than 1",
                &jitter,
            );
        }
    }

    #[test]
    fn placeholders_may_use_fields_of_parameters() {
        let errors = errors_of(
            quote!(key = "user:<user.id>:<user.address.city>", ttl = 1),
            quote! { async fn f(user: &User) -> u8 { 1 } },
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn placeholders_must_name_parameters() {
        let errors = errors_of(
            quote!(key = "user:<uid>:<self.id>", ttl = 1),
            quote! { async fn find(&self, id: u64) -> u8 { 1 } },
        );
        assert_eq!(
            errors,
            [
                "placeholder `<uid>` names no parameter of `find`; its parameters are `id`",
                "placeholder `<self.id>` uses the receiver, which is never part of the key; pass the value as a parameter",
                // `id` is still missing from the key.
                "parameter `id` is not in the key; add `<id>` to the key or `skip(id)`: forgetting one serves one user's data to another",
            ]
        );
        let errors = errors_of(
            quote!(key = "<id>", ttl = 1),
            quote! { async fn all() -> u8 { 1 } },
        );
        assert_eq!(
            errors,
            ["placeholder `<id>` names no parameter: `all` has none"]
        );
    }

    #[test]
    fn a_malformed_key_does_not_also_report_missing_parameters() {
        let errors = errors_of(
            quote!(key = "user:<id", ttl = 1),
            quote! { async fn f(id: u64) -> u8 { 1 } },
        );
        assert_eq!(errors, ["unclosed placeholder `<id` in the key; add `>`"]);
    }

    #[test]
    fn an_option_whose_value_did_not_parse_is_not_also_missing() {
        let errors = errors_of(
            quote!(key = user_key, ttl = "60"),
            quote! { async fn f() -> u8 { 1 } },
        );
        let expected = [
            "expected string literal",
            "`ttl` takes whole seconds as an integer literal (`ttl = 300`), or an expression of a `u64` of seconds or a `Duration` (a constant, `Duration::from_secs(..)`, a value from configuration)",
        ];
        assert_eq!(errors, expected);
    }

    #[test]
    fn a_lifetime_expression_names_nothing_of_a_call() {
        let function =
            quote! { async fn f<T, const N: usize>(&self, id: u64, a: u8, b: u8) -> u8 { 1 } };
        let args = quote!(
            key = "k:<id>:<a>:<b>:<T>:<N>",
            ttl = Duration::from_secs(config::id + self.ttl + id),
            negative = Self::NEGATIVE * (N as u64),
            stale = seconds::<T>(b, settings.a),
        );
        let errors = errors_of(args, function.clone());
        let once = |option: &str, why: &str| {
            format!(
                "`{option}` is evaluated once, on the first call of `f`, for every call: it can't use {why}"
            )
        };
        let one_call = |name: &str| format!("the parameter `{name}`, which belongs to one call");
        let generic = |name: &str| {
            format!("the generic parameter `{name}`, as one value serves every instantiation")
        };
        assert_eq!(
            errors,
            [
                once("ttl", "the receiver `self`, which belongs to one call"),
                once("ttl", &one_call("id")),
                once(
                    "negative",
                    "`Self`, which stands for every type of a generic `impl`: name the type (`UserRepo::TTL`)"
                ),
                once("negative", &generic("N")),
                once("stale", &generic("T")),
                once("stale", &one_call("b")),
            ]
        );
        let args = quote!(
            key = "k:<id>:<a>:<b>:<T>:<N>",
            ttl = TTL,
            stale = config().stale
        );
        let plan = planned(cached(args, function));
        assert!(matches!(
            plan.entry.ttl,
            crate::plan::Lifetime::Expression(_)
        ));
    }

    #[test]
    fn the_longest_lifetime_is_accepted() {
        let errors = errors_of(
            quote!(key = "k", ttl = 315360000, stale = 315360000),
            quote! { async fn f() -> u8 { 1 } },
        );
        assert!(errors.is_empty(), "{errors:?}");
        let errors = errors_of(
            quote!(key = "k", ttl = 1, stale = 315360001),
            quote! { async fn f() -> u8 { 1 } },
        );
        assert_eq!(
            errors,
            [
                "`stale` must be at most 315360000 seconds (10 years), the longest lifetime a cached value may have"
            ]
        );
    }

    #[test]
    fn attributes_of_this_crate_do_not_stack_with_cached() {
        let function = |attribute: proc_macro2::TokenStream| {
            quote! { #attribute async fn f(id: u64) -> u64 { id } }
        };
        let cases = [
            (
                quote!(#[cached(key = "b:<id>", ttl = 1)]),
                "`#[cached]` is written twice on this function: each would keep its own entry for every call; keep one",
            ),
            (
                quote!(#[cache_runtime::invalidates(key = "a:<id>")]),
                "`#[cached]` and `#[invalidates]` can't be on one function: a hit skips the body and the invalidation with it, so whether data is invalidated would depend on what was cached; put `#[invalidates]` on the function that changes the data",
            ),
            (
                quote!(#[doc = "x"] #[write_through(key = "a:<id>", ttl = 1)]),
                "`#[cached]` and `#[write_through]` can't be on one function: `#[cached]` already stores what the body returns, and a hit skips the body and the write with it; put `#[write_through]` on the function that changes the data",
            ),
        ];
        for (attribute, expected) in cases {
            let errors = errors_of(quote!(key = "a:<id>", ttl = 1), function(attribute.clone()));
            assert_eq!(errors, [expected], "{attribute}");
        }
        // `#[invalidates]` and `#[write_through]` see `#[cached]` too; with
        // each other they make sense.
        let errors = errors_in(invalidates(
            quote!(key = "a:<id>"),
            function(quote!(#[cached(key = "a:<id>", ttl = 1)])),
        ));
        assert_one(
            &errors,
            "`#[cached]` and `#[invalidates]` can't be on one function",
            "invalidates",
        );
        let errors = errors_in(write_through(
            quote!(key = "a:<id>", ttl = 1),
            function(quote!(#[invalidates(key = "b:<id>")] #[tracing::instrument])),
        ));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn raw_identifiers_match_however_they_are_written() {
        let function = quote! { async fn f(r#type: u8, r#match: u8) -> u8 { 1 } };
        let errors = errors_of(quote!(key = "<r#type>", ttl = 1, skip(r#match)), function);
        assert!(errors.is_empty(), "{errors:?}");
    }
}
