//! Rules that span the attribute's options and the function they decorate,
//! turning [`Args`] plus the function into a plan ([`CachedFn`] or
//! [`InvalidatesFn`]) that `expand.rs` only has to write out.

use std::collections::HashSet;

use proc_macro2::{Ident, Span};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{
    Expr, FnArg, ItemFn, Lit, LitStr, Pat, PatType, Path, ReturnType, Signature, Token, Type,
};

use crate::args::{Args, MacroKind, Number, Setting};
use crate::errors::Errors;
use crate::key::{KeyTemplate, TemplateKind, parse_template};
use crate::shape::Shape;

/// A `#[cached]` function whose every rule holds: what the expansion needs.
/// A `#[write_through]` function is planned as one too (it stores under the
/// same kind of site), with the options it lacks at their defaults.
pub(crate) struct CachedFn {
    /// The function's name without `r#`, for logs and metrics.
    pub(crate) function_name: String,
    /// The key template (`key.written` is the template as written, for logs
    /// and metrics).
    pub(crate) key: KeyTemplate,
    /// `tags = [...]`, in order (none when not given).
    pub(crate) tags: Vec<KeyTemplate>,
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

/// An `#[invalidates]` function whose every rule holds.
pub(crate) struct InvalidatesFn {
    /// The function's name without `r#`, for logs.
    pub(crate) function_name: String,
    /// Each `key = "..."`, in order.
    pub(crate) keys: Vec<KeyTemplate>,
    /// Each `tag = "..."`, in order.
    pub(crate) tags: Vec<KeyTemplate>,
    pub(crate) cache: Option<Expr>,
    pub(crate) runtime: Path,
    /// The declared return type; `()` (spanned at the attribute) when the
    /// function declares none.
    pub(crate) return_type: Type,
    /// Decides what counts as success (`Ok`, or any value).
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
    args: Args,
    function: &ItemFn,
    mut errors: Errors,
) -> syn::Result<CachedFn> {
    let signature = &function.sig;
    check_async(signature, MacroKind::Cached, &mut errors);
    check_receiver(signature, MacroKind::Cached, &mut errors);
    let returned = returned_value(signature, &mut errors);

    let key = match args.keys.first() {
        Some(key) => Some(parse_checked(&key.value, TemplateKind::Key, &mut errors)),
        None if args.mentions("key") => None,
        None => {
            errors.at(
                Span::call_site(),
                "missing `key = \"...\"`: every cached function needs a key template, such as `key = \"user:<id>\"`",
            );
            None
        }
    };

    let ttl_secs = required_ttl(&args, &mut errors);
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
    // Reported after the key's errors, as written; parsed first so that a
    // parameter missing from the key can be told apart when it is in a tag.
    let mut tag_errors = Errors::new();
    let tags = tag_list(args.tags.as_ref(), &parameters, signature, &mut tag_errors);
    if let Some((template, template_is_valid)) = &key {
        check_placeholders(template, &parameters, signature, &mut errors);
        let skipped = check_skip_list(
            args.skip.as_ref(),
            template,
            &parameters,
            signature,
            &mut errors,
        );
        if *template_is_valid {
            check_every_parameter_is_keyed(template, &tags, &skipped, &parameters, &mut errors);
        }
    }
    errors.append(tag_errors);

    match (key, ttl_secs, returned) {
        (Some((key, _)), Some(ttl_secs), Some((return_type, shape))) => {
            errors.into_result()?;
            Ok(CachedFn {
                function_name: signature.ident.unraw().to_string(),
                key,
                tags,
                ttl_secs,
                jitter,
                negative_secs,
                l1: args.l1.is_none_or(|l1| l1.value.value),
                lock,
                early,
                stale_secs,
                refresh,
                cache: args.cache.map(|cache| cache.value),
                runtime: runtime_path(args.krate),
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

/// `#[write_through]`: one key, a TTL, and a return type that carries a
/// value. Its parameters need not all be in the key: it stores what the body
/// returned, whatever the call.
pub(crate) fn validate_write_through(
    args: Args,
    function: &ItemFn,
    mut errors: Errors,
) -> syn::Result<CachedFn> {
    let signature = &function.sig;
    check_async(signature, MacroKind::WriteThrough, &mut errors);
    check_receiver(signature, MacroKind::WriteThrough, &mut errors);
    let returned = stored_value(signature, &mut errors);

    let key = match args.keys.first() {
        Some(key) => Some(parse_checked(&key.value, TemplateKind::Key, &mut errors).0),
        None if args.mentions("key") => None,
        None => {
            errors.at(
                Span::call_site(),
                "missing `key = \"...\"`: `#[write_through]` stores the returned value under a key template, such as `key = \"user:<id>\"`",
            );
            None
        }
    };
    let ttl_secs = required_ttl(&args, &mut errors);
    let jitter = args
        .jitter
        .as_ref()
        .and_then(|jitter| jitter_fraction(jitter, &mut errors));
    let stale_secs = args
        .stale
        .as_ref()
        .and_then(|stale| positive_seconds("stale", stale, &mut errors));

    let parameters = parameter_bindings(signature);
    if let Some(key) = &key {
        check_placeholders(key, &parameters, signature, &mut errors);
    }
    let tags = tag_list(args.tags.as_ref(), &parameters, signature, &mut errors);

    match (key, ttl_secs, returned) {
        (Some(key), Some(ttl_secs), Some((return_type, shape))) => {
            errors.into_result()?;
            Ok(CachedFn {
                function_name: signature.ident.unraw().to_string(),
                key,
                tags,
                ttl_secs,
                jitter,
                negative_secs: None,
                l1: true,
                lock: false,
                early: None,
                stale_secs,
                refresh: None,
                cache: args.cache.map(|cache| cache.value),
                runtime: runtime_path(args.krate),
                return_type,
                shape,
            })
        }
        _ => Err(errors
            .into_result()
            .expect_err("a missing part is always reported")),
    }
}

/// `#[invalidates]`: at least one `key` or `tag`, any return type. Its
/// parameters need not all appear.
pub(crate) fn validate_invalidates(
    args: Args,
    function: &ItemFn,
    mut errors: Errors,
) -> syn::Result<InvalidatesFn> {
    let signature = &function.sig;
    check_async(signature, MacroKind::Invalidates, &mut errors);
    check_receiver(signature, MacroKind::Invalidates, &mut errors);
    let (return_type, shape) = match &signature.output {
        ReturnType::Type(_, return_type) => ((**return_type).clone(), Shape::of(return_type)),
        ReturnType::Default => (syn::parse_quote!(()), Shape::Plain),
    };

    if args.keys.is_empty() && args.tag.is_empty() && !args.mentions("key") && !args.mentions("tag")
    {
        errors.at(
            Span::call_site(),
            "`#[invalidates]` needs at least one `key = \"...\"` or `tag = \"...\"`: they name what to delete after the body succeeds",
        );
    }
    let parameters = parameter_bindings(signature);
    let keys = template_list(
        args.keys.iter().map(|key| &key.value),
        TemplateKind::Key,
        &parameters,
        signature,
        &mut errors,
    );
    let tags = template_list(
        args.tag.iter().map(|tag| &tag.value),
        TemplateKind::Tag,
        &parameters,
        signature,
        &mut errors,
    );

    errors.into_result()?;
    Ok(InvalidatesFn {
        function_name: signature.ident.unraw().to_string(),
        keys,
        tags,
        cache: args.cache.map(|cache| cache.value),
        runtime: runtime_path(args.krate),
        return_type,
        shape,
    })
}

/// `crate = "..."`, or `::cache_runtime`.
fn runtime_path(krate: Option<Setting<Path>>) -> Path {
    krate.map_or_else(|| syn::parse_quote!(::cache_runtime), |krate| krate.value)
}

/// `ttl`, which has no default.
fn required_ttl(args: &Args, errors: &mut Errors) -> Option<u64> {
    match &args.ttl {
        Some(ttl) => positive_seconds("ttl", ttl, errors),
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

/// Parses a template into its own collector, then moves its errors to
/// `errors`. Also says whether it had none: when the template itself is
/// malformed, "parameter not in the key" would only be noise.
fn parse_checked(
    template: &LitStr,
    kind: TemplateKind,
    errors: &mut Errors,
) -> (KeyTemplate, bool) {
    let mut template_errors = Errors::new();
    let parsed = parse_template(template, kind, &mut template_errors);
    let is_valid = template_errors.is_empty();
    errors.append(template_errors);
    (parsed, is_valid)
}

/// `tags = [...]` of `#[cached]` and `#[write_through]`.
fn tag_list(
    tags: Option<&Setting<Vec<LitStr>>>,
    parameters: &[Binding],
    signature: &Signature,
    errors: &mut Errors,
) -> Vec<KeyTemplate> {
    let literals = tags.map(|tags| tags.value.as_slice()).unwrap_or_default();
    template_list(literals, TemplateKind::Tag, parameters, signature, errors)
}

/// Parses each template and checks its placeholders; a template written
/// twice is reported on its second copy.
fn template_list<'a>(
    literals: impl IntoIterator<Item = &'a LitStr>,
    kind: TemplateKind,
    parameters: &[Binding],
    signature: &Signature,
    errors: &mut Errors,
) -> Vec<KeyTemplate> {
    let mut seen = HashSet::new();
    let mut templates = Vec::new();
    for literal in literals {
        let (template, _) = parse_checked(literal, kind, errors);
        if !seen.insert(template.written.clone()) {
            errors.on(
                literal,
                format!(
                    "the {} `{}` is written twice",
                    kind.noun(),
                    template.written
                ),
            );
        }
        check_placeholders(&template, parameters, signature, errors);
        templates.push(template);
    }
    templates
}

fn check_async(signature: &Signature, kind: MacroKind, errors: &mut Errors) {
    if signature.asyncness.is_none() {
        let reason = match kind {
            MacroKind::Cached => "loading and storing values may wait on Redis",
            MacroKind::Invalidates => "deleting the entries waits on Redis",
            MacroKind::WriteThrough => "storing the value waits on Redis",
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
/// while the cache (`cache = self.cache`) stays borrowed.
fn check_receiver(signature: &Signature, kind: MacroKind, errors: &mut Errors) {
    let Some(receiver) = signature.receiver() else {
        return;
    };
    let is_shared_reference =
        matches!(&*receiver.ty, Type::Reference(reference) if reference.mutability.is_none());
    if !is_shared_reference {
        let message = match kind {
            MacroKind::Cached => "`#[cached]` methods must take `&self`: a cache hit skips the body, so the result can't depend on taking or changing `self`".to_owned(),
            MacroKind::Invalidates | MacroKind::WriteThrough => format!(
                "`#[{}]` methods must take `&self`: the body runs in a future while the cache (such as `cache = self.cache`) stays borrowed, which rules out taking or changing `self`",
                kind.name()
            ),
        };
        errors.on(receiver, message);
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

/// `#[write_through]`'s return type and its shape; `None` (with an error)
/// when it carries no value to store: `()`, `Result<(), E>`, `Option<()>`.
fn stored_value(signature: &Signature, errors: &mut Errors) -> Option<(Type, Shape)> {
    const NO_VALUE: &str = "`#[write_through]` stores the returned value; this function returns none: use `#[invalidates]`";
    match &signature.output {
        ReturnType::Type(_, return_type) if mentions_impl_trait(return_type) => {
            errors.on(
                return_type,
                "`#[write_through]` needs a concrete return type, not `impl Trait`: `#[cached]` functions read the stored value back as that type",
            );
            None
        }
        ReturnType::Type(_, return_type) => {
            let shape = Shape::of(return_type);
            if shape.stored_type(return_type).is_some_and(is_unit) {
                errors.on(return_type, NO_VALUE);
                return None;
            }
            Some(((**return_type).clone(), shape))
        }
        ReturnType::Default => {
            errors.at(signature.ident.span(), NO_VALUE);
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
                    "placeholder `{}` uses the receiver, which is never part of the {}; pass the value as a parameter",
                    placeholder.written,
                    template.kind.noun()
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
///
/// Tags do not count: only the key tells calls apart. A parameter that is in
/// a tag but not in the key gets a message saying so.
fn check_every_parameter_is_keyed(
    template: &KeyTemplate,
    tags: &[KeyTemplate],
    skipped: &HashSet<String>,
    parameters: &[Binding],
    errors: &mut Errors,
) {
    let uses = |template: &KeyTemplate, name: &str| {
        template
            .placeholders()
            .any(|placeholder| name_of(&placeholder.root) == name)
    };
    for parameter in parameters {
        let name = &parameter.name;
        if uses(template, name) || skipped.contains(name) {
            continue;
        }
        let message = if tags.iter().any(|tag| uses(tag, name)) {
            format!(
                "parameter `{name}` is in a tag but not in the key; add `<{name}>` to the key or `skip({name})`: only the key tells calls apart, and forgetting one serves one user's data to another"
            )
        } else {
            format!(
                "parameter `{name}` is not in the key; add `<{name}>` to the key or `skip({name})`: forgetting one serves one user's data to another"
            )
        };
        errors.at(parameter.ident.span(), message);
    }
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::{ToTokens, quote};

    use super::*;
    use crate::args::parse_args;

    fn run<T>(
        kind: MacroKind,
        validate: fn(Args, &ItemFn, Errors) -> syn::Result<T>,
        args: TokenStream,
        function: TokenStream,
    ) -> Result<T, Vec<String>> {
        let mut errors = Errors::new();
        let args = parse_args(kind, args, &mut errors);
        let function: ItemFn = syn::parse2(function).expect("test function parses");
        validate(args, &function, errors)
            .map_err(|error| error.into_iter().map(|error| error.to_string()).collect())
    }

    fn validate(args: TokenStream, function: TokenStream) -> Result<CachedFn, Vec<String>> {
        run(MacroKind::Cached, validate_cached, args, function)
    }

    fn invalidates(args: TokenStream, function: TokenStream) -> Result<InvalidatesFn, Vec<String>> {
        run(MacroKind::Invalidates, validate_invalidates, args, function)
    }

    fn write_through(args: TokenStream, function: TokenStream) -> Result<CachedFn, Vec<String>> {
        run(
            MacroKind::WriteThrough,
            validate_write_through,
            args,
            function,
        )
    }

    fn errors_in<T>(result: Result<T, Vec<String>>) -> Vec<String> {
        result.err().unwrap_or_default()
    }

    fn written(templates: &[KeyTemplate]) -> Vec<&str> {
        templates
            .iter()
            .map(|template| template.written.as_str())
            .collect()
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
                    loop {}
                }
            ),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(cached.function_name, "find");
        assert_eq!(cached.key.written, "org:<org>:user:<id>");
        assert!(cached.tags.is_empty());
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
                quote!(async fn f() -> #return_type { loop {} }),
            );
            assert!(errors.is_empty(), "{return_type}: {errors:?}");
        }
        let errors = errors_of(
            quote!(key = "k", ttl = 1, negative = 5),
            quote!(
                async fn get() -> Result<u8, E> {
                    loop {}
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

    #[test]
    fn tags_are_templates_whose_parameters_need_not_be_in_the_key() {
        let function = quote!(
            async fn find(org: u32, team: u32, id: u64) -> u8 {
                1
            }
        );
        let cached = validate(
            quote!(
                key = "user:<id>",
                ttl = 1,
                tags = ["org:<org>", "team:<team>:all"],
                skip(org, team)
            ),
            function.clone(),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(written(&cached.tags), ["org:<org>", "team:<team>:all"]);

        // A parameter in a tag but not in the key still needs `skip`.
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1, tags = ["org:<org>"]),
            function.clone(),
        );
        assert_eq!(
            errors,
            [
                "parameter `org` is in a tag but not in the key; add `<org>` to the key or `skip(org)`: only the key tells calls apart, and forgetting one serves one user's data to another",
                "parameter `team` is not in the key; add `<team>` to the key or `skip(team)`: forgetting one serves one user's data to another",
            ]
        );

        let errors = errors_of(
            quote!(
                key = "user:<id>",
                ttl = 1,
                tags = [
                    "org:<organisation>",
                    "org *",
                    "<self.org>",
                    "org:<org>",
                    "org:<org>"
                ],
                skip(org, team)
            ),
            function,
        );
        assert_eq!(
            errors,
            [
                "placeholder `<organisation>` names no parameter of `find`; its parameters are `org`, `team`, `id`",
                "the tag can't contain whitespace (found ' '); tags are shown and matched by tools that split on it",
                "the tag can't contain `*`: `{ } * ? [ ]` are Redis hash-tag and pattern characters",
                "placeholder `<self.org>` uses the receiver, which is never part of the tag; pass the value as a parameter",
                "the tag `org:<org>` is written twice",
            ]
        );
    }

    #[test]
    fn invalidates_keys_and_tags() {
        let plan = invalidates(
            quote!(
                key = "user:<id>",
                tag = "org:<org>",
                key = "name:<data.name>",
                cache = self.cache
            ),
            quote!(
                async fn update_user(
                    &self,
                    id: u64,
                    org: u32,
                    data: UserUpdate,
                ) -> Result<(), DbError> {
                    Ok(())
                }
            ),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(plan.function_name, "update_user");
        assert_eq!(written(&plan.keys), ["user:<id>", "name:<data.name>"]);
        assert_eq!(written(&plan.tags), ["org:<org>"]);
        assert_eq!(plan.shape, Shape::Result);
        assert_eq!(
            plan.return_type.to_token_stream().to_string(),
            "Result < () , DbError >"
        );
        assert!(plan.cache.is_some());

        // Tags alone, no return type, parameters left out of every template.
        let plan = invalidates(
            quote!(tag = "org:<org>"),
            quote!(
                async fn purge(org: u32, reason: String) {}
            ),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert!(plan.keys.is_empty());
        assert_eq!(plan.shape, Shape::Plain);
        assert_eq!(plan.return_type.to_token_stream().to_string(), "()");

        for (return_type, shape) in [
            (quote!(io::Result<()>), Shape::Result),
            (quote!(Option<User>), Shape::Option),
            (quote!(Result<Option<User>, E>), Shape::ResultOption),
            (quote!(u64), Shape::Plain),
        ] {
            let plan = invalidates(
                quote!(key = "user:<id>"),
                quote!(async fn f(id: u64) -> #return_type { loop {} }),
            )
            .unwrap_or_else(|errors| panic!("{errors:?}"));
            assert_eq!(plan.shape, shape, "{return_type}");
        }
    }

    #[test]
    fn invalidates_reports_every_mistake() {
        let errors = errors_in(invalidates(
            quote!(),
            quote!(
                async fn f(id: u64) {}
            ),
        ));
        assert_eq!(
            errors,
            [
                "`#[invalidates]` needs at least one `key = \"...\"` or `tag = \"...\"`: they name what to delete after the body succeeds"
            ]
        );
        // A key whose value did not parse is not also missing.
        let errors = errors_in(invalidates(
            quote!(key = user_key),
            quote!(
                async fn f(id: u64) {}
            ),
        ));
        assert_eq!(errors, ["expected string literal"]);

        let errors = errors_in(invalidates(
            quote!(
                key = "user:<uid>",
                tag = "org:*",
                key = "user:<uid>",
                ttl = 5
            ),
            quote!(
                fn f(&mut self, id: u64) {}
            ),
        ));
        assert_eq!(
            errors,
            [
                "unknown option `ttl`; expected one of: `key`, `tag`, `cache`, `crate`; `#[invalidates]` only deletes entries: how long they live is set where they are stored (`#[cached]`, `#[write_through]`)",
                "`#[invalidates]` requires an `async fn`: deleting the entries waits on Redis",
                "`#[invalidates]` methods must take `&self`: the body runs in a future while the cache (such as `cache = self.cache`) stays borrowed, which rules out taking or changing `self`",
                "placeholder `<uid>` names no parameter of `f`; its parameters are `id`",
                "the key `user:<uid>` is written twice",
                "placeholder `<uid>` names no parameter of `f`; its parameters are `id`",
                "the tag can't contain `*`: `{ } * ? [ ]` are Redis hash-tag and pattern characters",
            ]
        );
        let errors = errors_in(invalidates(
            quote!(key = "k"),
            quote!(
                async fn f(self) {}
            ),
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("`#[invalidates]` methods must take `&self`"));
    }

    #[test]
    fn write_through_plans_a_site() {
        let plan = write_through(
            quote!(
                key = "user:<id>",
                ttl = 300,
                jitter = 0.1,
                stale = 60,
                tags = ["org:<org>"],
                cache = self.cache
            ),
            quote!(
                async fn rename_user(
                    &self,
                    id: u64,
                    org: u32,
                    name: String,
                ) -> Result<User, DbError> {
                    loop {}
                }
            ),
        )
        .unwrap_or_else(|errors| panic!("{errors:?}"));
        assert_eq!(plan.function_name, "rename_user");
        assert_eq!(plan.key.written, "user:<id>");
        assert_eq!(written(&plan.tags), ["org:<org>"]);
        assert_eq!(plan.ttl_secs, 300);
        assert_eq!(plan.jitter, Some(0.1));
        assert_eq!(plan.stale_secs, Some(60));
        assert_eq!(plan.negative_secs, None);
        assert!(plan.l1 && !plan.lock && plan.early.is_none() && plan.refresh.is_none());
        assert_eq!(plan.shape, Shape::Result);

        for (return_type, shape) in [
            (quote!(User), Shape::Plain),
            (quote!(Option<User>), Shape::Option),
            (quote!(Result<Option<User>, E>), Shape::ResultOption),
            (quote!(anyhow::Result<User>), Shape::Result),
        ] {
            let plan = write_through(
                quote!(key = "user:<id>", ttl = 1),
                quote!(async fn f(id: u64, name: String) -> #return_type { loop {} }),
            )
            .unwrap_or_else(|errors| panic!("{errors:?}"));
            assert_eq!(plan.shape, shape, "{return_type}");
        }
    }

    #[test]
    fn write_through_needs_a_value_a_key_and_a_ttl() {
        let no_value = "`#[write_through]` stores the returned value; this function returns none: use `#[invalidates]`";
        for return_type in [
            quote!(()),
            quote!(Result<(), E>),
            quote!(std::io::Result<()>),
            quote!(Option<()>),
            quote!(Result<Option<()>, E>),
        ] {
            let errors = errors_in(write_through(
                quote!(key = "k", ttl = 1),
                quote!(async fn f() -> #return_type { loop {} }),
            ));
            assert_eq!(errors, [no_value], "{return_type}");
        }
        let errors = errors_in(write_through(
            quote!(key = "k", ttl = 1),
            quote!(
                async fn f() {}
            ),
        ));
        assert_eq!(errors, [no_value]);
        let errors = errors_in(write_through(
            quote!(key = "k", ttl = 1),
            quote!(
                async fn f() -> impl Display {
                    1
                }
            ),
        ));
        assert_eq!(
            errors,
            [
                "`#[write_through]` needs a concrete return type, not `impl Trait`: `#[cached]` functions read the stored value back as that type"
            ]
        );

        let errors = errors_in(write_through(
            quote!(),
            quote!(
                async fn f(id: u64) -> u8 {
                    1
                }
            ),
        ));
        assert_eq!(
            errors,
            [
                "missing `key = \"...\"`: `#[write_through]` stores the returned value under a key template, such as `key = \"user:<id>\"`",
                "missing `ttl = N`, the seconds a value stays fresh: how stale a value may be is a decision for each function, so there is no default",
            ]
        );

        let errors = errors_in(write_through(
            quote!(
                key = "user:<uid>",
                ttl = 0,
                jitter = 1,
                stale = 0,
                negative = 5,
                tags = ["<x>"]
            ),
            quote!(
                fn f(self, id: u64) -> u8 {
                    1
                }
            ),
        ));
        assert_eq!(errors.len(), 8, "{errors:#?}");
        assert!(errors[0].starts_with("unknown option `negative`"));
        assert_eq!(
            errors[1],
            "`#[write_through]` requires an `async fn`: storing the value waits on Redis"
        );
        assert!(errors[2].starts_with("`#[write_through]` methods must take `&self`"));

        // Parameters need not be in the key.
        let errors = errors_in(write_through(
            quote!(key = "user:<id>", ttl = 1),
            quote!(
                async fn f(id: u64, name: String) -> u8 {
                    1
                }
            ),
        ));
        assert!(errors.is_empty(), "{errors:?}");
    }
}
