//! The pieces every expansion is built from: the site, rendered templates,
//! the cache, calls into the runtime, and the helpers that place spans so
//! that errors land on the user's tokens.

use proc_macro2::{Delimiter, Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::visit_mut::VisitMut;
use syn::{Expr, Path, Type};

use crate::key::{KeyPart, KeyTemplate};
use crate::plan::{CachedPlan, Common, Entry};
use crate::shape::Shape;

/// What `#[cached]` and `#[write_through]` write before the body: the
/// function's fixed settings in a `static` named `site`, the check that
/// compares its templates with those of the other functions on its first
/// call (one atomic load on later calls), then the key and the tags
/// rendered (as `__cache_key` and `__cache_tags`).
///
/// `cached` holds the options only reading uses; a `#[write_through]` site
/// gives them their defaults.
pub(super) fn write_entry(
    site: &str,
    common: &Common,
    entry: &Entry,
    cached: Option<&CachedPlan>,
) -> TokenStream {
    let check = Ident::new(&format!("{site}_CHECK"), Span::call_site());
    let site = Ident::new(site, Span::call_site());
    let runtime = &common.runtime;
    let function = &common.function_name;
    let template = &entry.key.written;
    let tag_templates = entry.tags.iter().map(|tag| &tag.written);
    let ttl = Literal::u64_unsuffixed(entry.ttl_secs);
    let jitter = some_number(entry.jitter);
    let negative = some_duration(cached.and_then(|cached| cached.negative_secs));
    let l1 = cached.is_none_or(|cached| cached.l1);
    let lock = cached.is_some_and(|cached| cached.lock);
    let early = some_number(cached.and_then(|cached| cached.early));
    let stale = some_duration(entry.stale_secs);
    let key = write_template(runtime, &entry.key);
    let tags = write_template_array(runtime, &entry.tags);
    quote! {
        static #site: #runtime::__private::Site = #runtime::__private::Site {
            function: #function,
            template: #template,
            ttl: ::core::time::Duration::from_secs(#ttl),
            jitter: #jitter,
            negative: #negative,
            l1: #l1,
            lock: #lock,
            early: #early,
            stale: #stale,
            tag_templates: &[#(#tag_templates),*],
        };
        static #check: #runtime::__private::TemplateCheck = #runtime::__private::TemplateCheck::new();
        #check.run(&#site);
        let __cache_key = #key;
        let __cache_tags: #tags;
    }
}

/// `Option<f64>`, normalised so `jitter = 0` or `0.2f32` still gives an
/// `f64`.
fn some_number(number: Option<f64>) -> TokenStream {
    match number {
        Some(number) => {
            let number = Literal::f64_unsuffixed(number);
            quote!(::core::option::Option::Some(#number))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// `Option<Duration>` of whole seconds.
fn some_duration(seconds: Option<u64>) -> TokenStream {
    match seconds {
        Some(seconds) => {
            let seconds = Literal::u64_unsuffixed(seconds);
            quote!(::core::option::Option::Some(::core::time::Duration::from_secs(#seconds)))
        }
        None => quote!(::core::option::Option::None),
    }
}

/// A block rendering a key (or tag) template, one call per template part.
/// Each `arg` call is spanned at its placeholder, so a value without
/// `Display` is reported there.
fn write_template(runtime: &Path, template: &KeyTemplate) -> TokenStream {
    let parts = template.parts.iter().map(|part| match part {
        KeyPart::Text(text) => quote!(__cache_key.literal(#text);),
        KeyPart::Placeholder(placeholder) => {
            let value = placeholder.value_expr();
            quote_spanned!(placeholder.span=> __cache_key.arg(&#value);)
        }
    });
    quote!({
        let mut __cache_key = #runtime::__private::KeyBuf::new();
        #(#parts)*
        __cache_key
    })
}

/// `[KeyBuf; N] = [block, ...]`: the type and value of a `let` rendering
/// each template (`[]` for none, where the annotation gives the type).
pub(super) fn write_template_array(runtime: &Path, templates: &[KeyTemplate]) -> TokenStream {
    let count = Literal::usize_unsuffixed(templates.len());
    let rendered = templates
        .iter()
        .map(|template| write_template(runtime, template));
    quote!([#runtime::__private::KeyBuf; #count] = [#(#rendered),*])
}

/// `let __cache_cache: &Cache = &(EXPR);`, or the global cache. `let`
/// extends the temporary's lifetime, and deref coercion turns `&&Cache`,
/// `&Arc<Cache>` or `&LazyLock<Cache>` into `&Cache`.
pub(super) fn write_cache(runtime: &Path, cache: Option<&Expr>) -> TokenStream {
    match cache {
        Some(expr) => {
            // The annotation is spanned at the expression too, so "expected
            // `&Cache` ... expected due to this" points there, not at the
            // whole attribute.
            let (first, _) = first_and_last_span(expr);
            let cache_type = respan(quote!(&#runtime::Cache), first);
            let borrow = borrow_spanned_over(expr);
            quote!(let __cache_cache: #cache_type = #borrow;)
        }
        None => quote!(let __cache_cache: &#runtime::Cache = &#runtime::Cache::global();),
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

/// `runtime::__private::FUNCTION::<ReturnType, Marker, INFERRED>(ARGUMENTS)
/// .await`, spanned over the return type: when the value type lacks a bound
/// the runtime needs (`Serialize`, `Clone`, ...), every error lands on the
/// user's return type instead of on the attribute.
pub(super) fn write_runtime_call(
    runtime: &Path,
    return_type: &Type,
    shape: Shape,
    function: &str,
    inferred: Option<TokenStream>,
    arguments: TokenStream,
) -> TokenStream {
    let (first, last) = first_and_last_span(return_type);
    let runtime = respan(runtime.to_token_stream(), first);
    // rustc spans an expression from its first token to its last, so tokens
    // closing the path, the call and the `.await` take the type's last span.
    let marker = Ident::new(shape.marker_name(), last);
    let function = Ident::new(function, first);
    let arguments = spanned_group(Group::new(Delimiter::Parenthesis, arguments), last);
    let inferred = inferred.map(|inferred| quote!(, #inferred));
    let path = quote_spanned! {first=>
        #runtime::__private::#function::<#return_type, #runtime::__private::shape::#marker #inferred>
    };
    quote_spanned!(first=> #path #arguments .await)
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
