//! The pieces every expansion is built from: the site, rendered templates,
//! the cache, calls into the runtime, and the helpers that place spans so
//! that errors land on the user's tokens.

use proc_macro2::{Delimiter, Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::visit_mut::VisitMut;
use syn::{Expr, Path, Type};

use crate::key::{KeyPart, KeyTemplate, Placeholder};
use crate::plan::{CachedPlan, Common, ConditionalError, Entry, Lifetime, SourceKind};

/// What `#[write_through]` and `#[write_behind]` write before the body:
/// [`write_site_and_key`], then [`write_tags`].
pub(super) fn write_entry(common: &Common, entry: &Entry) -> TokenStream {
    let site_and_key = write_site_and_key(common, entry, None);
    let tags = write_tags(&common.runtime, entry);
    quote!(#site_and_key #tags)
}

/// The function's fixed settings in a `static` and the check that compares
/// its templates with those of the other functions on its first call (one
/// atomic load on later calls), both inside a block so that the body can't
/// name them, giving `__cache_site`; then the key rendered, as
/// `__cache_key`.
///
/// `cached` holds the options only reading uses; a `#[write_through]` site
/// gives them their defaults.
pub(super) fn write_site_and_key(
    common: &Common,
    entry: &Entry,
    cached: Option<&CachedPlan>,
) -> TokenStream {
    let site = write_site(common, entry, cached);
    let key = write_template(&common.runtime, &entry.key);
    generated! {
        #site
        let __cache_key = #key;
    }
}

/// `let __cache_tags: [KeyBuf; N] = [...];`, the entry's tags rendered.
pub(super) fn write_tags(runtime: &Path, entry: &Entry) -> TokenStream {
    let tags = write_template_array(runtime, &entry.tags);
    generated!(let __cache_tags: #tags;)
}

/// `let __cache_site = { static ...; check; &__CACHE_SITE };`, the part of
/// [`write_site_and_key`] a batch shares (it renders one key per id itself).
///
/// With every lifetime a literal the site is a `static` of constants. When
/// `ttl`, `negative` or `stale` is an expression, the site is made on the
/// first call instead (a `static OnceLock`), with each expression
/// evaluated and checked by the runtime then; the expression's tokens keep
/// their spans, so a type mistake is reported on them.
pub(super) fn write_site(
    common: &Common,
    entry: &Entry,
    cached: Option<&CachedPlan>,
) -> TokenStream {
    let runtime = &common.runtime;
    let function = &common.function_name;
    let template = &entry.key.written;
    let tag_templates = entry.tags.iter().map(|tag| &tag.written);
    let negative = cached.and_then(|cached| cached.negative.as_ref());
    let negative = negative.map(|negative| &negative.lifetime);
    let lifetimes = [Some(&entry.ttl), negative, entry.stale.as_ref()];
    let made_on_first_call = lifetimes
        .into_iter()
        .flatten()
        .any(|lifetime| matches!(lifetime, Lifetime::Expression(_)));
    let lifetime = |option: &str, lifetime: Option<&Lifetime>| match lifetime {
        None => generated!(::core::option::Option::None),
        Some(Lifetime::Seconds(seconds)) => {
            let seconds = Literal::u64_unsuffixed(*seconds);
            generated!(::core::option::Option::Some(::core::time::Duration::from_secs(#seconds)))
        }
        Some(Lifetime::Expression(expression)) => {
            // The call spans the expression, so that a type mistake is
            // reported on it alone, not on the whole attribute.
            let (first, last) = first_and_last_span(expression);
            spanned_call(
                quote!(#runtime::__private::configured_lifetime),
                quote!(#function, #option, #expression),
                first,
                last,
            )
        }
    };
    let ttl = match &entry.ttl {
        Lifetime::Seconds(seconds) => {
            let seconds = Literal::u64_unsuffixed(*seconds);
            generated!(::core::time::Duration::from_secs(#seconds))
        }
        // Out of range: a zero TTL, which turns the cache off for the
        // function (logged by the check).
        expression => {
            let checked = lifetime("ttl", Some(expression));
            generated!(::core::option::Option::unwrap_or_default(#checked))
        }
    };
    let negative = lifetime("negative", negative);
    let stale = lifetime("stale", entry.stale.as_ref());
    let jitter = some_number(entry.jitter);
    let l1 = cached.is_none_or(|cached| cached.l1);
    let lock = cached.is_some_and(|cached| cached.lock);
    let early = some_number(cached.and_then(|cached| cached.early));
    let site = generated! {
        #runtime::__private::Site {
            function: #function,
            template: #template,
            ttl: #ttl,
            jitter: #jitter,
            negative: #negative,
            l1: #l1,
            lock: #lock,
            early: #early,
            stale: #stale,
            tag_templates: &[#(#tag_templates),*],
            index: #runtime::__private::SiteIndex::new(),
        }
    };
    let check = generated! {
        static __CACHE_CHECK: #runtime::__private::TemplateCheck = #runtime::__private::TemplateCheck::new();
    };
    if made_on_first_call {
        generated! {
            let __cache_site: &'static #runtime::__private::Site = {
                static __CACHE_SITE: #runtime::__private::OnceLock<#runtime::__private::Site> = #runtime::__private::OnceLock::new();
                #check
                let __cache_site = __CACHE_SITE.get_or_init(|| #site);
                __CACHE_CHECK.run(__cache_site);
                __cache_site
            };
        }
    } else {
        generated! {
            let __cache_site: &'static #runtime::__private::Site = {
                static __CACHE_SITE: #runtime::__private::Site = #site;
                #check
                __CACHE_CHECK.run(&__CACHE_SITE);
                &__CACHE_SITE
            };
        }
    }
}

/// `compile_error!`s that hold only under a parameter's `#[cfg]`, spanned
/// at the parameter.
pub(super) fn write_conditional_errors(errors: &[ConditionalError]) -> TokenStream {
    errors
        .iter()
        .map(|ConditionalError { cfg, span, message }| {
            quote_spanned!(*span=> #cfg ::core::compile_error!(#message);)
        })
        .collect()
}

/// `Option<f64>`, normalised so `jitter = 0` or `0.2f32` still gives an
/// `f64`.
fn some_number(number: Option<f64>) -> TokenStream {
    match number {
        Some(number) => {
            let number = Literal::f64_unsuffixed(number);
            generated!(::core::option::Option::Some(#number))
        }
        None => generated!(::core::option::Option::None),
    }
}

/// A block rendering a key (or tag) template, one call per template part.
pub(super) fn write_template(runtime: &Path, template: &KeyTemplate) -> TokenStream {
    let parts = template.parts.iter().map(|part| match part {
        KeyPart::Text(text) => generated!(__cache_key.literal(#text);),
        KeyPart::Placeholder(placeholder) => write_placeholder(placeholder),
    });
    generated!({
        let mut __cache_key = #runtime::__private::KeyBuf::new();
        #(#parts)*
        __cache_key
    })
}

/// `__cache_key.arg(&id)` for a parameter or a const generic,
/// `__cache_key.integer(id)` for a parameter declared as a primitive integer
/// (the same text, without `Display`'s machinery),
/// `__cache_key.arg(type_name::<T>())` for a type parameter (the type's
/// name is its stable identity within one build; builds whose types differ
/// in shape already read each other's entries as misses, by the value's
/// fingerprint).
///
/// Spanned at the placeholder, so a value without `Display` is reported
/// there. The name is the signature's own identifier, located at the
/// placeholder but resolved where the signature wrote it, so it reads the
/// parameter whatever hygiene the key literal has (a `macro_rules!`
/// caller's `$key:literal`). Under the parameter's `#[cfg]`, if any.
fn write_placeholder(placeholder: &Placeholder) -> TokenStream {
    let source = placeholder
        .source
        .as_ref()
        .expect("validation resolves every placeholder");
    let span = placeholder.span;
    let mut root = source.ident.clone();
    root.set_span(span.resolved_at(source.ident.span()));
    let key = Ident::new("__cache_key", Span::mixed_site().located_at(span));
    let cfg = &source.cfg;
    match source.kind {
        SourceKind::Integer => quote_spanned!(span=> #cfg #key.integer(#root);),
        SourceKind::Parameter | SourceKind::ConstGeneric => {
            let fields = &placeholder.fields;
            quote_spanned!(span=> #cfg #key.arg(&#root #(.#fields)*);)
        }
        SourceKind::TypeGeneric => {
            quote_spanned!(span=> #cfg #key.arg(::core::any::type_name::<#root>());)
        }
    }
}

/// `[KeyBuf; N] = [block, ...]`: the type and value of a `let` rendering
/// each template (`[]` for none, where the annotation gives the type).
pub(super) fn write_template_array(runtime: &Path, templates: &[KeyTemplate]) -> TokenStream {
    let count = Literal::usize_unsuffixed(templates.len());
    let rendered = templates
        .iter()
        .map(|template| write_template(runtime, template));
    generated!([#runtime::__private::KeyBuf; #count] = [#(#rendered),*])
}

/// `let __cache_cache: &Cache = &(EXPR);`, or the global cache (which
/// names the function, for the warning when none was set). `let` extends
/// the temporary's lifetime, and deref coercion turns `&&Cache`,
/// `&Arc<Cache>` or `&LazyLock<Cache>` into `&Cache`.
pub(super) fn write_cache(common: &Common) -> TokenStream {
    let runtime = &common.runtime;
    match &common.cache {
        Some(expr) => {
            // The annotation is spanned at the expression too, so "expected
            // `&Cache` ... expected due to this" points there, not at the
            // whole attribute.
            let (first, _) = first_and_last_span(expr);
            let cache_type = respan(quote!(&#runtime::Cache), first);
            let borrow = borrow_spanned_over(expr);
            generated!(let __cache_cache: #cache_type = #borrow;)
        }
        None => {
            let function = &common.function_name;
            generated!(let __cache_cache: &#runtime::Cache = &#runtime::__private::global_cache(#function);)
        }
    }
}

/// `&(expr)` whose span covers the user's expression, so that "expected
/// `&Cache`, found ..." underlines all of it.
fn borrow_spanned_over(expr: &Expr) -> TokenStream {
    let (first, last) = first_and_last_span(expr);
    let mut parenthesized = Group::new(Delimiter::Parenthesis, expr.to_token_stream());
    parenthesized.set_span(last);
    quote_spanned!(first=> & #parenthesized)
}

/// `let __cache_shape = runtime::__private::shape_of!(ReturnType);` (or,
/// with `Of::Value`, `shape_of_val!(&__cache_returned)`): the marker of the
/// return type's shape, which the compiler picks (through aliases; see the
/// runtime's `shape` module) and the runtime's generic functions take
/// theirs from.
pub(super) fn write_shape(runtime: &Path, return_type: &Type, of: Of) -> TokenStream {
    let (name, argument) = match of {
        Of::Type => ("shape_of", return_type.to_token_stream()),
        Of::Value => ("shape_of_val", generated!(&__cache_returned)),
    };
    let name = Ident::new(name, Span::mixed_site());
    generated!(let __cache_shape = #runtime::__private::#name!(#argument);)
}

/// `__cache_shape`, the shape argument of a runtime call, spanned where the
/// call is (see [`at_return_type`]).
pub(super) fn shape_argument(return_type: &Type) -> TokenStream {
    Ident::new("__cache_shape", at_return_type(return_type)).into_token_stream()
}

/// Where a runtime call and its shape argument are spanned: at the return
/// type's first token (a proc macro cannot join spans), hygienic (as
/// `generated!` writes). When a bound of the call fails (a value that is not
/// `Serialize`), rustc reports it on the call, its `.await` and its shape
/// argument; all three at this one span, the reports are one.
pub(super) fn at_return_type(return_type: &Type) -> Span {
    let (first, _) = first_and_last_span(return_type);
    Span::mixed_site().located_at(first)
}

/// What [`write_shape`] names.
pub(super) enum Of {
    /// The return type, as written.
    Type,
    /// The type of `__cache_returned` (which may hold an `impl Trait`).
    Value,
}

/// `negative` on a return type without a `None` is a type error, which
/// only the compiler can find (it resolves aliases): a call that checks it,
/// spanned at the option, so the error lands on `negative`.
pub(super) fn write_negative_check(
    runtime: &Path,
    return_type: &Type,
    option: Span,
) -> TokenStream {
    let span = Span::mixed_site().located_at(option);
    let runtime = respan(runtime.to_token_stream(), span);
    quote_spanned!(span=> #runtime::__private::shape::negative::<#return_type, _>(__cache_shape);)
}

/// `runtime::__private::FUNCTION(ARGUMENTS)`, spanned at the return type:
/// when the value type lacks a bound the runtime needs (`Serialize`,
/// `Clone`, ...), the error lands on the user's return type instead of on
/// the attribute, once (see [`at_return_type`]). Every type is inferred
/// (from the shape marker and the body's future, whose output type is
/// pinned): a `_` written out would be blamed at its own span.
/// `awaited` appends `.await`.
pub(super) fn write_runtime_call(
    runtime: &Path,
    return_type: &Type,
    function: &str,
    arguments: TokenStream,
    awaited: bool,
) -> TokenStream {
    let at = at_return_type(return_type);
    let runtime = respan(runtime.to_token_stream(), at);
    let function = Ident::new(function, at);
    let arguments = spanned_group(Group::new(Delimiter::Parenthesis, arguments), at);
    let path = quote_spanned!(at=> #runtime::__private::#function);
    if awaited {
        quote_spanned!(at=> #path #arguments .await)
    } else {
        path.into_iter()
            .chain(arguments.into_token_stream())
            .collect()
    }
}

/// The return type as a `let` annotation: each `impl Trait` (which can't be
/// written there) becomes `_`, for inference to fill in.
pub(super) fn annotation(return_type: &Type) -> Type {
    let mut annotation = return_type.clone();
    InferImplTrait.visit_type_mut(&mut annotation);
    annotation
}

/// `path(arguments)` spanning from `first` to `last`: the path at `first`
/// (its last segment at `last`, so the path alone spans both too), the
/// parentheses at `last`.
pub(super) fn spanned_call(
    path: TokenStream,
    arguments: TokenStream,
    first: Span,
    last: Span,
) -> TokenStream {
    let mut path: Vec<TokenTree> = respan(path, first).into_iter().collect();
    if let Some(segment) = path.last_mut() {
        segment.set_span(last);
    }
    let arguments = spanned_group(Group::new(Delimiter::Parenthesis, arguments), last);
    quote!(#(#path)* #arguments)
}

pub(super) fn spanned_group(mut group: Group, span: Span) -> Group {
    group.set_span(span);
    group
}

/// Replaces each `impl Trait` in a type with `_` (and `(impl A + B)` too:
/// `(_)` would warn as unneeded parentheses).
pub(super) struct InferImplTrait;

impl VisitMut for InferImplTrait {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        syn::visit_mut::visit_type_mut(self, ty);
        let span = match ty {
            Type::ImplTrait(impl_trait) => impl_trait.impl_token.span,
            Type::Paren(paren) => match &*paren.elem {
                Type::Infer(infer) => infer.underscore_token.span,
                _ => return,
            },
            _ => return,
        };
        *ty = Type::Infer(syn::TypeInfer {
            underscore_token: syn::Token![_](span),
        });
    }
}

/// The spans of the first and last tokens of `tokens`: on stable compilers a
/// proc macro cannot join spans, but rustc joins them itself when an
/// expression starts at one and ends at the other.
pub(super) fn first_and_last_span(tokens: impl ToTokens) -> (Span, Span) {
    let mut tokens = tokens.into_token_stream().into_iter();
    let first = tokens
        .next()
        .map_or_else(Span::call_site, |token| token.span());
    let last = tokens.last().map_or(first, |token| token.span());
    (first, last)
}

/// `tokens` with every span, inside groups too, replaced by `span`.
pub(super) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut respanned = Group::new(group.delimiter(), respan(group.stream(), span));
                respanned.set_span(span);
                token = TokenTree::Group(respanned);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impl_trait_is_inferred_in_the_borrow_annotation() {
        for (written, annotated) in [
            (quote!(impl Display), "_"),
            (quote!((impl Display + Send)), "_"),
            (quote!([impl Display]), "[_]"),
            (quote!(Vec<impl Display>), "Vec < _ >"),
            (quote!((dyn Display + Send)), "(dyn Display + Send)"),
            (quote!(str), "str"),
        ] {
            let mut ty: Type = syn::parse2(written.clone()).expect("a type");
            InferImplTrait.visit_type_mut(&mut ty);
            assert_eq!(ty.to_token_stream().to_string(), annotated, "{written}");
        }
    }
}
