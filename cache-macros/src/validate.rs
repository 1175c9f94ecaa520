//! Rules that span the attribute's options and the function they decorate,
//! turning [`CachedArgs`] plus the function into a [`CachedFn`] that
//! `expand.rs` only has to write out.

use std::collections::HashSet;

use proc_macro2::{Ident, Span};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Expr, FnArg, ItemFn, Lit, Pat, Path, ReturnType, Signature, Type};

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
    /// `cache = EXPR`; `None` means `Cache::global()`.
    pub(crate) cache: Option<Expr>,
    /// Where generated code finds the runtime: `::cache_runtime` unless
    /// `crate = "..."` says otherwise.
    pub(crate) runtime: Path,
    pub(crate) return_type: Type,
    pub(crate) shape: Shape,
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
            quote!(key = "user:<uid>", ttl = 0, jitter = 2, negative = 5, lock),
            quote!(
                fn find(&mut self, id: u64) -> u8 {
                    1
                }
            ),
        );
        assert_eq!(errors.len(), 8, "{errors:#?}");
    }
}
