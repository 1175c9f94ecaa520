//! Rules that span the attribute's options and the function they decorate,
//! turning [`CachedArgs`] plus the function into a [`CachedFn`] that
//! `expand.rs` only has to write out.

use std::collections::HashSet;

use proc_macro2::{Ident, Span};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Expr, FnArg, ItemFn, Lit, Pat, PatType, Path, ReturnType, Signature, Token, Type};

use crate::args::{CachedArgs, Number, Setting};
use crate::errors::Errors;
use crate::key::{KeyTemplate, parse_key_template};
use crate::shape::Shape;

/// A `#[cached]` function whose every rule holds: what the expansion needs.
pub(crate) struct CachedFn {
    /// The function's name without `r#`, for logs and metrics.
    pub(crate) function_name: String,
    /// The key template as written, for logs and metrics.
    pub(crate) template: String,
    pub(crate) key: KeyTemplate,
    pub(crate) ttl_secs: u64,
    pub(crate) jitter: Option<f64>,
    pub(crate) negative_secs: Option<u64>,
    pub(crate) l1: bool,
    pub(crate) lock: bool,
    /// `early`'s beta (1.0 when written alone).
    pub(crate) early: Option<f64>,
    pub(crate) stale_secs: Option<u64>,
    /// Set when `early` or `stale` is: the body then also runs in the
    /// background, from owned copies of the parameters.
    pub(crate) refresh: Option<Refresh>,
    /// `cache = EXPR`; `None` means `Cache::global()`.
    pub(crate) cache: Option<Expr>,
    /// Where generated code finds the runtime: `::cache_runtime` unless
    /// `crate = "..."` says otherwise.
    pub(crate) runtime: Path,
    pub(crate) return_type: Type,
    pub(crate) shape: Shape,
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

/// Checks every rule, reporting all violations to `errors` (which may already
/// hold parse errors). Returns the plan only when there are no errors at all.
pub(crate) fn validate_cached(
    args: CachedArgs,
    function: &ItemFn,
    mut errors: Errors,
) -> syn::Result<CachedFn> {
    let signature = &function.sig;
    check_async(signature, &mut errors);
    check_receiver(signature, &mut errors);
    let returned = returned_value(signature, &mut errors);

    let key = match &args.key {
        Some(key) => {
            // Parsed into its own collector: when the template itself is
            // malformed, "parameter not in the key" would only be noise.
            let mut key_errors = Errors::new();
            let template = parse_key_template(&key.value, &mut key_errors);
            let template_is_valid = key_errors.is_empty();
            errors.append(key_errors);
            Some((key.value.value(), template, template_is_valid))
        }
        None if args.mentions("key") => None,
        None => {
            errors.at(
                Span::call_site(),
                "missing `key = \"...\"`: every cached function needs a key template, such as `key = \"user:<id>\"`",
            );
            None
        }
    };

    let ttl_secs = match &args.ttl {
        Some(ttl) => positive_seconds("ttl", ttl, &mut errors),
        None if args.mentions("ttl") => None,
        None => {
            errors.at(
                Span::call_site(),
                "missing `ttl = N`, the seconds a value stays fresh: how stale a value may be is a decision for each function, so there is no default",
            );
            None
        }
    };
    let jitter = args
        .jitter
        .as_ref()
        .and_then(|jitter| jitter_fraction(jitter, &mut errors));
    let negative_secs = args.negative.as_ref().and_then(|negative| {
        if let Some((return_type, shape)) = &returned
            && !shape.has_none()
        {
            errors.at(
                negative.name,
                format!(
                    "`negative` caches \"not found\", but `{}` returns `{}`, which has no `None`; return `Option<T>` or `Result<Option<T>, E>`",
                    signature.ident.unraw(),
                    compact(return_type),
                ),
            );
        }
        positive_seconds("negative", negative, &mut errors)
    });

    let lock = args.lock.is_some();
    let early = args
        .early
        .as_ref()
        .and_then(|early| early_beta(early, &mut errors));
    let stale_secs = args
        .stale
        .as_ref()
        .and_then(|stale| positive_seconds("stale", stale, &mut errors));
    // Checked even when the option's value was wrong, so that every mistake
    // shows in one build.
    let mut background_options = Vec::new();
    if args.early.is_some() || args.mentions("early") {
        background_options.push("early");
    }
    if args.stale.is_some() || args.mentions("stale") {
        background_options.push("stale");
    }
    let option = args
        .early
        .as_ref()
        .map(|early| early.name)
        .or_else(|| args.stale.as_ref().map(|stale| stale.name))
        .unwrap_or_else(Span::call_site);
    let refresh = (!background_options.is_empty())
        .then(|| refresh_plan(signature, &background_options, option, &mut errors));

    let parameters = parameter_bindings(signature);
    if let Some((_, template, template_is_valid)) = &key {
        check_placeholders(template, &parameters, signature, &mut errors);
        let skipped = check_skip_list(
            args.skip.as_ref(),
            template,
            &parameters,
            signature,
            &mut errors,
        );
        if *template_is_valid {
            check_every_parameter_is_keyed(template, &skipped, &parameters, &mut errors);
        }
    }

    match (key, ttl_secs, returned) {
        (Some((template, key, _)), Some(ttl_secs), Some((return_type, shape))) => {
            errors.into_result()?;
            Ok(CachedFn {
                function_name: signature.ident.unraw().to_string(),
                template,
                key,
                ttl_secs,
                jitter,
                negative_secs,
                l1: args.l1.is_none_or(|l1| l1.value.value),
                lock,
                early,
                stale_secs,
                refresh,
                cache: args.cache.map(|cache| cache.value),
                runtime: args
                    .krate
                    .map_or_else(|| syn::parse_quote!(::cache_runtime), |krate| krate.value),
                return_type,
                shape,
            })
        }
        // Whatever made a part missing was reported above.
        _ => Err(errors
            .into_result()
            .expect_err("a missing part is always reported")),
    }
}

fn check_async(signature: &Signature, errors: &mut Errors) {
    if signature.asyncness.is_none() {
        errors.at(
            signature.fn_token.span,
            "`#[cached]` requires an `async fn`: loading and storing values may wait on Redis",
        );
    }
}

/// Only `&self`: the receiver is never part of the key, so a method whose
/// result depends on owning or mutating `self` cannot be cached (and a
/// moved or `&mut` receiver would conflict with `cache = self.cache`).
fn check_receiver(signature: &Signature, errors: &mut Errors) {
    let Some(receiver) = signature.receiver() else {
        return;
    };
    let is_shared_reference =
        matches!(&*receiver.ty, Type::Reference(reference) if reference.mutability.is_none());
    if !is_shared_reference {
        errors.on(
            receiver,
            "`#[cached]` methods must take `&self`: a cache hit skips the body, so the result can't depend on taking or changing `self`",
        );
    }
}

/// The return type and its shape; `None` (with an error) for `()`.
fn returned_value(signature: &Signature, errors: &mut Errors) -> Option<(Type, Shape)> {
    match &signature.output {
        ReturnType::Type(_, return_type) if mentions_impl_trait(return_type) => {
            errors.on(
                return_type,
                "`#[cached]` needs a concrete return type, not `impl Trait`: cached values are deserialized into it",
            );
            None
        }
        ReturnType::Type(_, return_type) if !is_unit(return_type) => {
            Some(((**return_type).clone(), Shape::of(return_type)))
        }
        ReturnType::Type(_, unit) => {
            errors.on(
                unit,
                "a `#[cached]` function must return a value; `()` leaves nothing to cache",
            );
            None
        }
        ReturnType::Default => {
            errors.at(
                signature.ident.span(),
                format!(
                    "`{}` returns nothing, so there is nothing to cache; `#[cached]` needs a return value",
                    signature.ident.unraw()
                ),
            );
            None
        }
    }
}

/// A type as a user would write it (`Result<String, io::Error>`), where
/// printing tokens would give `Result < String , io :: Error >`.
fn compact(ty: &Type) -> String {
    let printed = ty.to_token_stream().to_string();
    let mut compacted = String::new();
    let mut previous = "";
    for piece in printed.split(' ') {
        let is_word =
            |text: &str| text.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '\'');
        if (is_word(previous) && is_word(piece)) || matches!(previous, "," | "+") || piece == "+" {
            compacted.push(' ');
        }
        compacted.push_str(piece);
        previous = piece;
    }
    compacted
}

fn mentions_impl_trait(ty: &Type) -> bool {
    fn has_impl(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => has_impl(group.stream()),
            _ => false,
        })
    }
    has_impl(ty.to_token_stream())
}

fn is_unit(ty: &Type) -> bool {
    match ty {
        Type::Tuple(tuple) => tuple.elems.is_empty(),
        Type::Paren(paren) => is_unit(&paren.elem),
        Type::Group(group) => is_unit(&group.elem),
        _ => false,
    }
}

/// `ttl` and `negative`: a whole number of seconds, at least 1.
fn positive_seconds(name: &str, setting: &Setting<Number>, errors: &mut Errors) -> Option<u64> {
    let number = &setting.value;
    let Lit::Int(int) = &number.lit else {
        errors.on(number, format!("`{name}` is a whole number of seconds"));
        return None;
    };
    match int.base10_parse::<u64>() {
        Ok(seconds) if seconds > 0 && number.minus.is_none() => Some(seconds),
        Ok(_) => {
            errors.on(number, format!("`{name}` must be greater than 0 seconds"));
            None
        }
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// `jitter`: a fraction F of the TTL with 0 <= F < 1 (at 1 a TTL could be
/// drawn as zero).
fn jitter_fraction(setting: &Setting<Number>, errors: &mut Errors) -> Option<f64> {
    let number = &setting.value;
    let magnitude = match &number.lit {
        Lit::Int(int) => int.base10_parse::<f64>(),
        Lit::Float(float) => float.base10_parse::<f64>(),
        _ => unreachable!("the parser only accepts numeric literals"),
    };
    match magnitude {
        // Matches `-0.0` too, which is stored as a plain zero.
        Ok(0.0) => Some(0.0),
        Ok(magnitude) if magnitude < 1.0 && number.minus.is_none() => Some(magnitude),
        Ok(_) => {
            errors.on(
                number,
                "`jitter` must be at least 0 and less than 1: it is the fraction of `ttl` by which each stored TTL may vary",
            );
            None
        }
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// `early`'s beta: any finite number above 0; `early` alone means 1.0.
fn early_beta(setting: &Setting<Option<Number>>, errors: &mut Errors) -> Option<f64> {
    let Some(number) = &setting.value else {
        return Some(1.0);
    };
    let beta = match &number.lit {
        Lit::Int(int) => int.base10_parse::<f64>(),
        Lit::Float(float) => float.base10_parse::<f64>(),
        _ => unreachable!("the parser only accepts numeric literals"),
    };
    match beta {
        Ok(beta) if beta > 0.0 && beta.is_finite() && number.minus.is_none() => Some(beta),
        Ok(_) => {
            errors.on(
                number,
                "`early` must be greater than 0: it scales how early before expiry a hot key is refreshed (`early` alone means 1.0; larger refreshes earlier)",
            );
            None
        }
        Err(error) => {
            errors.push(error);
            None
        }
    }
}

/// `early` and `stale` run the body again in a spawned task, after the call
/// that started it may have returned: the task owns copies of the receiver
/// and of every parameter, so each parameter must be a name (to copy) and
/// none may be a `&mut` (which cannot be copied). The other requirements
/// (`Clone`, `Send`, `'static`) are left to the type checker, whose errors
/// the expansion points at the parameter concerned.
fn refresh_plan(
    signature: &Signature,
    options: &[&str],
    option: Span,
    errors: &mut Errors,
) -> Refresh {
    let runs = match options {
        [one] => format!("`{one}` runs"),
        _ => format!(
            "{} run",
            options
                .iter()
                .map(|option| format!("`{option}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    };
    let mut receiver = None;
    let mut parameters = Vec::new();
    for input in &signature.inputs {
        let typed = match input {
            FnArg::Receiver(written) => {
                receiver = Some(written.self_token);
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let ident = match &*typed.pat {
            Pat::Ident(binding) if binding.by_ref.is_none() && binding.subpat.is_none() => {
                Some(binding)
            }
            // Binds nothing the body can read: nothing to copy.
            Pat::Wild(_) => continue,
            pattern => {
                errors.on(
                    pattern,
                    format!(
                        "{runs} the body in the background from a copy of each parameter, so parameters must be plain names: bind the value to a name and destructure it in the body"
                    ),
                );
                None
            }
        };
        let passing = match referent(&typed.ty) {
            Some((true, _)) => {
                errors.on(
                    &typed.ty,
                    format!(
                        "{runs} the body in the background, where it may outlive the call, so it can't take a `&mut` parameter; pass the value by `&` or by value"
                    ),
                );
                continue;
            }
            Some((false, referent)) => Passing::Borrowed(Box::new(referent.clone())),
            None => Passing::ByValue,
        };
        if let Some(binding) = ident {
            parameters.push(RefreshParameter {
                written: typed.clone(),
                mutability: binding.mutability,
                ident: binding.ident.clone(),
                passing,
            });
        }
    }
    Refresh {
        option,
        receiver,
        parameters,
    }
}

/// For a reference type `&T` / `&mut T` (through invisible groups and
/// parentheses): whether it is `&mut`, and `T`.
fn referent(ty: &Type) -> Option<(bool, &Type)> {
    match ty {
        Type::Reference(reference) => Some((reference.mutability.is_some(), &reference.elem)),
        Type::Group(group) => referent(&group.elem),
        Type::Paren(paren) => referent(&paren.elem),
        _ => None,
    }
}

/// A name the function body can use that came from a parameter: the
/// parameter itself, or a name bound inside a destructuring pattern such as
/// `(a, b): (u32, u32)`, which each count as a parameter of their own.
struct Binding<'a> {
    ident: &'a Ident,
    /// Without `r#`, so `r#type` in the signature matches `<r#type>` and
    /// `skip(r#type)` however each is written.
    name: String,
}

fn parameter_bindings(signature: &Signature) -> Vec<Binding<'_>> {
    let mut bindings = Vec::new();
    for input in &signature.inputs {
        if let FnArg::Typed(typed) = input {
            collect_bindings(&typed.pat, &mut bindings);
        }
    }
    bindings
}

fn collect_bindings<'a>(pattern: &'a Pat, bindings: &mut Vec<Binding<'a>>) {
    match pattern {
        Pat::Ident(ident) => {
            bindings.push(Binding {
                ident: &ident.ident,
                name: name_of(&ident.ident),
            });
            if let Some((_, subpattern)) = &ident.subpat {
                collect_bindings(subpattern, bindings);
            }
        }
        Pat::Tuple(tuple) => tuple
            .elems
            .iter()
            .for_each(|elem| collect_bindings(elem, bindings)),
        Pat::TupleStruct(tuple) => {
            tuple
                .elems
                .iter()
                .for_each(|elem| collect_bindings(elem, bindings));
        }
        Pat::Struct(fields) => {
            fields
                .fields
                .iter()
                .for_each(|field| collect_bindings(&field.pat, bindings));
        }
        Pat::Slice(slice) => slice
            .elems
            .iter()
            .for_each(|elem| collect_bindings(elem, bindings)),
        Pat::Reference(reference) => collect_bindings(&reference.pat, bindings),
        Pat::Paren(paren) => collect_bindings(&paren.pat, bindings),
        Pat::Type(typed) => collect_bindings(&typed.pat, bindings),
        // Every alternative binds the same names.
        Pat::Or(or) => {
            if let Some(first) = or.cases.first() {
                collect_bindings(first, bindings);
            }
        }
        // `_`, literals, ranges, paths, `..`: nothing the body can read.
        _ => {}
    }
}

fn name_of(ident: &Ident) -> String {
    ident.unraw().to_string()
}

fn names(parameters: &[Binding]) -> String {
    parameters
        .iter()
        .map(|parameter| format!("`{}`", parameter.ident))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every placeholder must start with a parameter's name.
fn check_placeholders(
    template: &KeyTemplate,
    parameters: &[Binding],
    signature: &Signature,
    errors: &mut Errors,
) {
    for placeholder in template.placeholders() {
        let root = &placeholder.root;
        if root == "self" {
            errors.at(
                placeholder.span,
                format!(
                    "placeholder `{}` uses the receiver, which is never part of the key; pass the value as a parameter",
                    placeholder.written
                ),
            );
        } else if !parameters
            .iter()
            .any(|parameter| parameter.name == name_of(root))
        {
            let function = signature.ident.unraw();
            let message = if parameters.is_empty() {
                format!(
                    "placeholder `{}` names no parameter: `{function}` has none",
                    placeholder.written
                )
            } else {
                format!(
                    "placeholder `{}` names no parameter of `{function}`; its parameters are {}",
                    placeholder.written,
                    names(parameters)
                )
            };
            errors.at(placeholder.span, message);
        }
    }
}

/// `skip(...)` may only list parameters that are not in the key. Returns the
/// names it lists.
fn check_skip_list(
    skip: Option<&Setting<Vec<Ident>>>,
    template: &KeyTemplate,
    parameters: &[Binding],
    signature: &Signature,
    errors: &mut Errors,
) -> HashSet<String> {
    let mut skipped = HashSet::new();
    for name in skip.map(|skip| skip.value.as_slice()).unwrap_or_default() {
        if name == "self" {
            errors.at(
                name.span(),
                "the receiver is never part of the key, so it needs no `skip`",
            );
        } else if !parameters
            .iter()
            .any(|parameter| parameter.name == name_of(name))
        {
            errors.at(
                name.span(),
                format!(
                    "`skip` lists `{name}`, which is not a parameter of `{}`",
                    signature.ident.unraw()
                ),
            );
        } else if template
            .placeholders()
            .any(|placeholder| name_of(&placeholder.root) == name_of(name))
        {
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

/// The rule that keeps users apart: a parameter that is in neither the key
/// nor `skip` would let calls that differ only in it share one entry.
fn check_every_parameter_is_keyed(
    template: &KeyTemplate,
    skipped: &HashSet<String>,
    parameters: &[Binding],
    errors: &mut Errors,
) {
    for parameter in parameters {
        let name = &parameter.name;
        let in_key = template
            .placeholders()
            .any(|placeholder| name_of(&placeholder.root) == *name);
        if !in_key && !skipped.contains(name) {
            errors.at(
                parameter.ident.span(),
                format!(
                    "parameter `{name}` is not in the key; add `<{name}>` to the key or `skip({name})`: forgetting one serves one user's data to another"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::{ToTokens, quote};

    use super::*;
    use crate::args::parse_cached_args;

    fn validate(args: TokenStream, function: TokenStream) -> Result<CachedFn, Vec<String>> {
        let mut errors = Errors::new();
        let args = parse_cached_args(args, &mut errors);
        let function: ItemFn = syn::parse2(function).expect("test function parses");
        validate_cached(args, &function, errors)
            .map_err(|error| error.into_iter().map(|error| error.to_string()).collect())
    }

    fn errors_of(args: TokenStream, function: TokenStream) -> Vec<String> {
        match validate(args, function) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        }
    }

    #[test]
    fn accepts_the_full_example() {
        let cached = validate(
            quote!(
                key = "org:<org>:user:<id>",
                ttl = 300,
                jitter = 0.2,
                negative = 60,
                cache = self.cache,
                skip(filter)
            ),
            quote!(
                pub async fn find(
                    &self,
                    org: u32,
                    id: u64,
                    filter: &Filter,
                ) -> Result<Option<User>, DbError> {
                    todo!()
                }
            ),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(cached.function_name, "find");
        assert_eq!(cached.template, "org:<org>:user:<id>");
        assert_eq!(cached.ttl_secs, 300);
        assert_eq!(cached.jitter, Some(0.2));
        assert_eq!(cached.negative_secs, Some(60));
        assert!(cached.l1);
        assert_eq!(cached.cache.to_token_stream().to_string(), "self . cache");
        assert_eq!(
            cached.runtime.to_token_stream().to_string(),
            ":: cache_runtime"
        );
        assert_eq!(cached.shape, Shape::ResultOption);
    }

    #[test]
    fn defaults_and_overrides() {
        let cached = validate(
            quote!(
                key = "n:<n>",
                ttl = 1,
                jitter = 0,
                l1 = false,
                crate = "my::rt"
            ),
            quote!(
                async fn f(n: u8) -> u8 {
                    n
                }
            ),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(cached.jitter, Some(0.0));
        assert_eq!(cached.negative_secs, None);
        assert!(!cached.l1);
        assert!(cached.cache.is_none());
        assert_eq!(cached.runtime.to_token_stream().to_string(), "my :: rt");
        assert_eq!(cached.function_name, "f");
        assert_eq!(cached.shape, Shape::Plain);
    }

    #[test]
    fn requires_async() {
        let errors = errors_of(
            quote!(key = "k", ttl = 1),
            quote!(
                fn f() -> u8 {
                    1
                }
            ),
        );
        assert_eq!(
            errors,
            ["`#[cached]` requires an `async fn`: loading and storing values may wait on Redis"]
        );
    }

    #[test]
    fn receiver_must_be_a_shared_reference() {
        for receiver in [quote!(&self), quote!(&'a self), quote!(self: &Self)] {
            let errors = errors_of(
                quote!(key = "k", ttl = 1),
                quote!(async fn f(#receiver) -> u8 { 1 }),
            );
            assert!(errors.is_empty(), "{receiver}: {errors:?}");
        }
        for receiver in [
            quote!(self),
            quote!(mut self),
            quote!(&mut self),
            quote!(self: Box<Self>),
        ] {
            let errors = errors_of(
                quote!(key = "k", ttl = 1),
                quote!(async fn f(#receiver) -> u8 { 1 }),
            );
            assert_eq!(errors.len(), 1, "{receiver}");
            assert!(
                errors[0].starts_with("`#[cached]` methods must take `&self`"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn key_and_ttl_are_required() {
        let errors = errors_of(
            quote!(),
            quote!(
                async fn f() -> u8 {
                    1
                }
            ),
        );
        assert_eq!(errors.len(), 2);
        assert!(errors[0].starts_with("missing `key = \"...\"`"));
        assert!(errors[1].starts_with("missing `ttl = N`"));
    }

    #[test]
    fn ttl_and_negative_are_positive_whole_seconds() {
        let function = quote!(
            async fn f() -> Option<u8> {
                None
            }
        );
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
                "number too large to fit in target type",
            ),
        ] {
            let errors = errors_of(quote!(key = "k", #args), function.clone());
            assert_eq!(errors, [expected], "{args}");
        }
    }

    #[test]
    fn jitter_is_a_fraction_below_one() {
        let function = quote!(
            async fn f() -> u8 {
                1
            }
        );
        for jitter in [
            quote!(0),
            quote!(0.0),
            quote!(-0.0),
            quote!(0.5),
            quote!(0.999),
        ] {
            assert!(
                errors_of(
                    quote!(key = "k", ttl = 1, jitter = #jitter),
                    function.clone()
                )
                .is_empty()
            );
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
            assert_eq!(errors.len(), 1, "{jitter}");
            assert!(
                errors[0].starts_with("`jitter` must be at least 0 and less than 1"),
                "{errors:?}"
            );
        }
    }

    #[test]
    fn negative_needs_a_return_type_with_none() {
        for return_type in [
            quote!(Option<u8>),
            quote!(Result<Option<u8>, E>),
            quote!(io::Result<Option<u8>>),
        ] {
            let errors = errors_of(
                quote!(key = "k", ttl = 1, negative = 5),
                quote!(async fn f() -> #return_type { todo!() }),
            );
            assert!(errors.is_empty(), "{return_type}: {errors:?}");
        }
        let errors = errors_of(
            quote!(key = "k", ttl = 1, negative = 5),
            quote!(
                async fn get() -> Result<u8, E> {
                    todo!()
                }
            ),
        );
        assert_eq!(
            errors,
            [
                "`negative` caches \"not found\", but `get` returns `Result<u8, E>`, which has no `None`; return `Option<T>` or `Result<Option<T>, E>`"
            ]
        );
    }

    #[test]
    fn needs_a_return_value() {
        let errors = errors_of(
            quote!(key = "k", ttl = 1),
            quote!(
                async fn f() {}
            ),
        );
        assert_eq!(
            errors,
            ["`f` returns nothing, so there is nothing to cache; `#[cached]` needs a return value"]
        );
        let errors = errors_of(
            quote!(key = "k", ttl = 1),
            quote!(
                async fn f() -> () {}
            ),
        );
        assert_eq!(
            errors,
            ["a `#[cached]` function must return a value; `()` leaves nothing to cache"]
        );
    }

    #[test]
    fn return_type_must_be_concrete() {
        for return_type in [quote!(impl Display), quote!(Option<impl Display>)] {
            let errors = errors_of(
                quote!(key = "k", ttl = 1),
                quote!(async fn f() -> #return_type { 1 }),
            );
            assert_eq!(
                errors,
                [
                    "`#[cached]` needs a concrete return type, not `impl Trait`: cached values are deserialized into it"
                ],
                "{return_type}"
            );
        }
    }

    #[test]
    fn every_parameter_must_be_in_the_key_or_skipped() {
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1),
            quote!(
                async fn find(&self, org: u32, id: u64) -> u8 {
                    1
                }
            ),
        );
        assert_eq!(
            errors,
            [
                "parameter `org` is not in the key; add `<org>` to the key or `skip(org)`: forgetting one serves one user's data to another"
            ]
        );
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1, skip(org)),
            quote!(
                async fn find(&self, org: u32, id: u64) -> u8 {
                    1
                }
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn placeholders_may_use_fields_of_parameters() {
        let errors = errors_of(
            quote!(key = "user:<user.id>:<user.address.city>", ttl = 1),
            quote!(
                async fn f(user: &User) -> u8 {
                    1
                }
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn destructured_parameters_bind_names_that_must_be_keyed_or_skipped() {
        let function = quote!(
            async fn f((a, b): (u32, u32), _: u8, Point { x, .. }: Point) -> u8 {
                1
            }
        );
        assert!(errors_of(quote!(key = "<a>:<b>:<x>", ttl = 1), function.clone()).is_empty());
        assert!(errors_of(quote!(key = "<a>", ttl = 1, skip(b, x)), function.clone()).is_empty());
        let errors = errors_of(quote!(key = "<a>", ttl = 1), function);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("parameter `b` is not in the key"));
        assert!(errors[1].starts_with("parameter `x` is not in the key"));
    }

    #[test]
    fn placeholders_must_name_parameters() {
        let errors = errors_of(
            quote!(key = "user:<uid>:<self.id>", ttl = 1),
            quote!(
                async fn find(&self, id: u64) -> u8 {
                    1
                }
            ),
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
            quote!(
                async fn all() -> u8 {
                    1
                }
            ),
        );
        assert_eq!(
            errors,
            ["placeholder `<id>` names no parameter: `all` has none"]
        );
    }

    #[test]
    fn skip_lists_parameters_outside_the_key() {
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1, skip(self, pool, id, nope, pool)),
            quote!(
                async fn find(&self, id: u64, pool: &Pool) -> u8 {
                    1
                }
            ),
        );
        assert_eq!(
            errors,
            [
                "the receiver is never part of the key, so it needs no `skip`",
                "`id` is in the key, so it can't be skipped; remove it from `skip(...)`",
                "`skip` lists `nope`, which is not a parameter of `find`",
                "`pool` is listed twice in `skip`",
            ]
        );
    }

    #[test]
    fn a_malformed_key_does_not_also_report_missing_parameters() {
        let errors = errors_of(
            quote!(key = "user:<id", ttl = 1),
            quote!(
                async fn f(id: u64) -> u8 {
                    1
                }
            ),
        );
        assert_eq!(errors, ["unclosed placeholder `<id` in the key; add `>`"]);
    }

    #[test]
    fn an_option_whose_value_did_not_parse_is_not_also_missing() {
        let errors = errors_of(
            quote!(key = user_key, ttl = "60"),
            quote!(
                async fn f() -> u8 {
                    1
                }
            ),
        );
        assert_eq!(
            errors,
            [
                "expected string literal",
                "expected integer literal or floating point literal"
            ]
        );
    }

    #[test]
    fn raw_identifiers_match_however_they_are_written() {
        let function = quote!(
            async fn f(r#type: u8, r#match: u8) -> u8 {
                1
            }
        );
        let errors = errors_of(quote!(key = "<r#type>", ttl = 1, skip(r#match)), function);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn types_in_messages_read_as_written() {
        let cases: [(Type, &str); 4] = [
            (
                syn::parse_quote!(Result<String, std::io::Error>),
                "Result<String, std::io::Error>",
            ),
            (syn::parse_quote!(&'static str), "&'static str"),
            (
                syn::parse_quote!(Box<dyn Error + Send>),
                "Box<dyn Error + Send>",
            ),
            (syn::parse_quote!((u8, Vec<u8>)), "(u8, Vec<u8>)"),
        ];
        for (ty, expected) in cases {
            assert_eq!(compact(&ty), expected);
        }
    }

    #[test]
    fn reports_every_mistake_at_once() {
        let errors = errors_of(
            quote!(
                key = "user:<uid>",
                ttl = 0,
                jitter = 2,
                negative = 5,
                lock = 1,
                stale = 0
            ),
            quote!(
                fn find(&mut self, id: u64, (a, b): (u8, u8), c: &mut u8) -> u8 {
                    1
                }
            ),
        );
        assert_eq!(errors.len(), 14, "{errors:#?}");
    }

    #[test]
    fn lock_early_and_stale() {
        let function = quote!(
            async fn f(n: u8) -> u8 {
                n
            }
        );
        let cached = validate(quote!(key = "<n>", ttl = 1), function.clone())
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert!(!cached.lock);
        assert_eq!(cached.early, None);
        assert_eq!(cached.stale_secs, None);
        assert!(cached.refresh.is_none());

        let cached = validate(
            quote!(key = "<n>", ttl = 1, lock, early, stale = 30),
            function.clone(),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert!(cached.lock);
        assert_eq!(cached.early, Some(1.0));
        assert_eq!(cached.stale_secs, Some(30));
        assert!(cached.refresh.is_some());

        for (early, beta) in [(quote!(0.5), 0.5), (quote!(2), 2.0), (quote!(1e-3), 0.001)] {
            let cached = validate(
                quote!(key = "<n>", ttl = 1, early = #early),
                function.clone(),
            )
            .unwrap_or_else(|errors| panic!("{errors:?}"));
            assert_eq!(cached.early, Some(beta), "{early}");
            assert!(cached.refresh.is_some());
        }

        // `lock` needs nothing of the function.
        let cached = validate(quote!(key = "<n>", ttl = 1, lock), function)
            .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert!(cached.lock && cached.refresh.is_none());
    }

    #[test]
    fn early_is_above_zero_and_stale_is_positive_whole_seconds() {
        let function = quote!(
            async fn f() -> u8 {
                1
            }
        );
        for early in [
            quote!(0),
            quote!(0.0),
            quote!(-1),
            quote!(-0.5),
            quote!(1e400),
        ] {
            let errors = errors_of(quote!(key = "k", ttl = 1, early = #early), function.clone());
            assert_eq!(
                errors,
                [
                    "`early` must be greater than 0: it scales how early before expiry a hot key is refreshed (`early` alone means 1.0; larger refreshes earlier)"
                ],
                "{early}"
            );
        }
        for (stale, expected) in [
            (quote!(0), "`stale` must be greater than 0 seconds"),
            (quote!(-5), "`stale` must be greater than 0 seconds"),
            (quote!(1.5), "`stale` is a whole number of seconds"),
        ] {
            let errors = errors_of(quote!(key = "k", ttl = 1, stale = #stale), function.clone());
            assert_eq!(errors, [expected], "{stale}");
        }
    }

    #[test]
    fn refresh_copies_the_receiver_and_every_named_parameter() {
        let cached = validate(
            quote!(
                key = "<id>:<name>",
                ttl = 1,
                stale = 5,
                skip(n, pool, filter, _x, it)
            ),
            quote!(
                async fn f(
                    &self,
                    id: u64,
                    mut n: u8,
                    name: &'a str,
                    pool: Pool,
                    _: u8,
                    _x: &mut Unused,
                    filter: &impl Filter,
                    it: impl Iterator<Item = u8>,
                ) -> u8 {
                    1
                }
            ),
        );
        // `_x` is a name, so it is copied: `&mut` is refused.
        let errors = match cached {
            Ok(_) => panic!("`&mut` accepted"),
            Err(errors) => errors,
        };
        assert_eq!(
            errors,
            [
                "`stale` runs the body in the background, where it may outlive the call, so it can't take a `&mut` parameter; pass the value by `&` or by value"
            ]
        );

        let cached = validate(
            quote!(
                key = "<id>:<name>",
                ttl = 1,
                stale = 5,
                skip(n, pool, filter, it)
            ),
            quote!(
                async fn f(
                    &self,
                    id: u64,
                    mut n: u8,
                    name: &'a str,
                    pool: Pool,
                    _: &mut u8,
                    filter: &impl Filter,
                    it: impl Iterator<Item = u8>,
                ) -> u8 {
                    1
                }
            ),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        let refresh = cached.refresh.expect("`stale` was given");
        assert!(refresh.receiver.is_some());
        let parameters: Vec<String> = refresh
            .parameters
            .iter()
            .map(|parameter| {
                let mutability = if parameter.mutability.is_some() {
                    "mut "
                } else {
                    ""
                };
                let passing = match &parameter.passing {
                    Passing::ByValue => "by value".to_owned(),
                    Passing::Borrowed(referent) => {
                        format!("borrowed {}", referent.to_token_stream())
                    }
                };
                format!("{mutability}{}: {passing}", parameter.ident)
            })
            .collect();
        assert_eq!(
            parameters,
            [
                "id: by value",
                "mut n: by value",
                "name: borrowed str",
                "pool: by value",
                "filter: borrowed impl Filter",
                "it: by value",
            ]
        );
    }

    #[test]
    fn refresh_needs_named_parameters_and_no_mut_references() {
        let function = quote!(
            async fn f((a, b): (u8, u8), ref c: u8, d @ 1..=3: u8, e: &mut u8, (f): u8) -> u8 {
                1
            }
        );
        let errors = errors_of(
            quote!(key = "<a>:<b>:<c>:<d>:<e>:<f>", ttl = 1, early),
            function.clone(),
        );
        let destructured = "`early` runs the body in the background from a copy of each parameter, so parameters must be plain names: bind the value to a name and destructure it in the body";
        let mut_reference = "`early` runs the body in the background, where it may outlive the call, so it can't take a `&mut` parameter; pass the value by `&` or by value";
        assert_eq!(
            errors,
            [
                destructured,
                destructured,
                destructured,
                mut_reference,
                destructured
            ]
        );
        // Both options: both named, and each mistake reported once.
        let errors = errors_of(
            quote!(
                key = "<a>:<b>:<c>:<d>:<e>:<f>",
                ttl = 1,
                early = 0,
                stale = 5
            ),
            function,
        );
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors[0].starts_with("`early` must be greater than 0"));
        assert!(
            errors[1].starts_with("`early` and `stale` run the body in the background"),
            "{errors:#?}"
        );
        // Without `early` / `stale`, patterns and `&mut` are fine.
        let errors = errors_of(
            quote!(key = "<a>:<b>:<e>", ttl = 1, lock),
            quote!(
                async fn f((a, b): (u8, u8), e: &mut u8) -> u8 {
                    1
                }
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
    }
}
