//! Writes the generated code. Every rule was checked in `validate.rs`; here
//! the only decisions are spans.
//!
//! On any error the user's item is emitted unchanged beside the
//! `compile_error!`s (as tokio-macros and thiserror do), so callers of the
//! function and the IDE keep working and the user sees only our errors, not
//! a cascade caused by a missing function.

use proc_macro2::{Delimiter, Group, Ident, Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::{AttrStyle, Attribute, Block, Expr, Item, ItemFn, Visibility};

use crate::args::parse_cached_args;
use crate::errors::Errors;
use crate::key::KeyPart;
use crate::validate::{CachedFn, validate_cached};

/// Environment variable that makes every expansion print to stderr.
const DEBUG_VARIABLE: &str = "CACHE_MACROS_DEBUG";

/// `#[cached(args)] item`.
pub(crate) fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let output = match expand_cached(args, item.clone()) {
        Ok(expanded) => expanded,
        Err(error) => unchanged_with_errors(item, &error),
    };
    print_if_debugging("cached", &output);
    output
}

/// An attribute whose behaviour is not written yet: refusing it loudly beats
/// accepting it and silently doing nothing.
pub(crate) fn not_implemented(macro_name: &str, item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        Span::call_site(),
        format!("`#[{macro_name}]` is not implemented yet"),
    );
    unchanged_with_errors(item, &error)
}

fn expand_cached(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let function = parse_function(item)?;
    let mut errors = Errors::new();
    let args = parse_cached_args(args, &mut errors);
    let cached = validate_cached(args, &function, errors)?;
    Ok(write_cached_fn(function, &cached))
}

fn unchanged_with_errors(item: TokenStream, error: &syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    quote!(#item #errors)
}

fn parse_function(item: TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => Ok(function),
        // A struct, an impl, a `fn` without a body (in a trait), ...
        _ => Err(syn::Error::new(
            item_keyword_span(item),
            "`#[cached]` applies to an `async fn` with a body",
        )),
    }
}

/// The span of the first token after the item's attributes and visibility
/// (`struct`, `impl`, `fn`, ...), which says what the item is.
fn item_keyword_span(item: TokenStream) -> Span {
    let keyword = |input: ParseStream| {
        input.call(Attribute::parse_outer)?;
        input.parse::<Visibility>()?;
        let keyword: TokenTree = input.parse()?;
        input.parse::<TokenStream>()?;
        Ok(keyword.span())
    };
    keyword
        .parse2(item)
        .unwrap_or_else(|_: syn::Error| Span::call_site())
}

/// The function with its attributes and signature unchanged and its body
/// replaced by a call to the runtime.
fn write_cached_fn(function: ItemFn, cached: &CachedFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    // syn keeps a body's `#![inner]` attributes with the outer ones; they
    // must go back inside the body.
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    let site = write_site(cached);
    let key = write_key(cached);
    let cache = write_cache(cached);
    let get_or_load = write_get_or_load_call(cached, &block);
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #site
            let __cache_key = #key;
            #cache
            #get_or_load
        }
    }
}

/// The function's fixed settings, built at compile time.
fn write_site(cached: &CachedFn) -> TokenStream {
    let runtime = &cached.runtime;
    let function = &cached.function_name;
    let template = &cached.template;
    let ttl = Literal::u64_unsuffixed(cached.ttl_secs);
    let jitter = match cached.jitter {
        Some(fraction) => {
            // Normalised so `jitter = 0` or `0.2f32` still gives an `f64`.
            let fraction = Literal::f64_unsuffixed(fraction);
            quote!(::core::option::Option::Some(#fraction))
        }
        None => quote!(::core::option::Option::None),
    };
    let negative = match cached.negative_secs {
        Some(seconds) => {
            let seconds = Literal::u64_unsuffixed(seconds);
            quote!(::core::option::Option::Some(::core::time::Duration::from_secs(#seconds)))
        }
        None => quote!(::core::option::Option::None),
    };
    let l1 = cached.l1;
    quote! {
        static __CACHE_SITE: #runtime::__private::Site = #runtime::__private::Site {
            function: #function,
            template: #template,
            ttl: ::core::time::Duration::from_secs(#ttl),
            jitter: #jitter,
            negative: #negative,
            l1: #l1,
        };
    }
}

/// A block rendering the key, one call per template part. Each `arg` call is
/// spanned at its placeholder, so a value without `Display` is reported there.
fn write_key(cached: &CachedFn) -> TokenStream {
    let runtime = &cached.runtime;
    let parts = cached.key.parts.iter().map(|part| match part {
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

/// `let __cache_cache: &Cache = &(EXPR);`, or the global cache. `let`
/// extends the temporary's lifetime, and deref coercion turns `&&Cache`,
/// `&Arc<Cache>` or `&LazyLock<Cache>` into `&Cache`.
fn write_cache(cached: &CachedFn) -> TokenStream {
    let runtime = &cached.runtime;
    match &cached.cache {
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

/// `get_or_load::<ReturnType, Marker, _>(..., async move { body }).await`,
/// spanned over the return type: when the value type lacks a bound the
/// runtime needs (`Serialize`, `Clone`, ...), every error lands on the user's
/// return type instead of on the attribute. The body keeps its own spans.
fn write_get_or_load_call(cached: &CachedFn, body: &Block) -> TokenStream {
    let return_type = &cached.return_type;
    let (first, last) = first_and_last_span(return_type);
    let runtime = respan(cached.runtime.to_token_stream(), first);
    // rustc spans an expression from its first token to its last, so tokens
    // closing the path, the call and the `.await` take the type's last span.
    let marker = Ident::new(cached.shape.marker_name(), last);
    // The async block's output type is otherwise inferred from the body, so
    // a body returning the wrong type would be reported as "expected `{async
    // block}` to resolve to `T`" on the attribute. A first (never taken)
    // `return` of the declared type fixes the output type before the body is
    // checked, and mistakes are reported in the body as without the macro
    // (tracing-attributes' "fake return edge").
    let pin_return_type = quote_spanned! {first=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::needless_return
        )]
        if false {
            let __cache_unreachable: #return_type = loop {};
            return __cache_unreachable;
        }
    };
    // `async move { body }`, with the body's statements spliced in (a block
    // nested as the tail would trip `unused_braces`) and the braces keeping
    // the body's span, so diagnostics about the future (`{async block@..}`)
    // point at the body.
    let body_span = body.brace_token.span.join();
    let statements = &body.stmts;
    let mut braced = Group::new(Delimiter::Brace, quote!(#pin_return_type #(#statements)*));
    braced.set_span(body_span);
    let load = quote_spanned!(body_span=> async move #braced);
    let mut arguments = Group::new(
        Delimiter::Parenthesis,
        quote!(__cache_cache, &__CACHE_SITE, __cache_key, #load),
    );
    arguments.set_span(last);
    let get_or_load = quote_spanned! {first=>
        #runtime::__private::get_or_load::<#return_type, #runtime::__private::shape::#marker, _>
    };
    quote_spanned!(first=> #get_or_load #arguments .await)
}

/// The spans of the first and last tokens of `tokens`: on stable compilers a
/// proc macro cannot join spans, but rustc joins them itself when an
/// expression starts at one and ends at the other.
fn first_and_last_span(tokens: impl ToTokens) -> (Span, Span) {
    let mut tokens = tokens.into_token_stream().into_iter();
    let first = tokens
        .next()
        .map_or_else(Span::call_site, |token| token.span());
    let last = tokens.last().map_or(first, |token| token.span());
    (first, last)
}

/// `tokens` with every span, inside groups too, replaced by `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
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

/// `CACHE_MACROS_DEBUG=1` prints each expansion (the variable is read when
/// the macro runs, so touch the file or `cargo clean -p` to see it again).
fn print_if_debugging(macro_name: &str, output: &TokenStream) {
    let enabled =
        std::env::var_os(DEBUG_VARIABLE).is_some_and(|value| !value.is_empty() && value != "0");
    if enabled {
        eprintln!("#[{macro_name}] expands to:\n{output}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        cached(args, item).to_string()
    }

    #[test]
    fn writes_the_documented_expansion() {
        let expanded = expand(
            quote!(
                key = "org:<org>:user:<id>",
                ttl = 300,
                jitter = 0.2,
                negative = 60,
                cache = self.cache,
                skip(filter)
            ),
            quote! {
                #[doc = "Finds a user."]
                pub async fn find(&self, org: u32, id: u64, filter: &Filter) -> Result<Option<User>, DbError> {
                    self.db.find(org, id, filter).await
                }
            },
        );
        let expected = quote! {
            #[doc = "Finds a user."]
            pub async fn find(&self, org: u32, id: u64, filter: &Filter) -> Result<Option<User>, DbError> {
                static __CACHE_SITE: ::cache_runtime::__private::Site = ::cache_runtime::__private::Site {
                    function: "find",
                    template: "org:<org>:user:<id>",
                    ttl: ::core::time::Duration::from_secs(300),
                    jitter: ::core::option::Option::Some(0.2),
                    negative: ::core::option::Option::Some(::core::time::Duration::from_secs(60)),
                    l1: true,
                };
                let __cache_key = {
                    let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                    __cache_key.literal("org:");
                    __cache_key.arg(&org);
                    __cache_key.literal(":user:");
                    __cache_key.arg(&id);
                    __cache_key
                };
                let __cache_cache: &::cache_runtime::Cache = &(self.cache);
                ::cache_runtime::__private::get_or_load::<Result<Option<User>, DbError>, ::cache_runtime::__private::shape::ResultOption, _>(
                    __cache_cache,
                    &__CACHE_SITE,
                    __cache_key,
                    async move {
                        #[allow(
                            unknown_lints,
                            unreachable_code,
                            clippy::diverging_sub_expression,
                            clippy::empty_loop,
                            clippy::needless_return
                        )]
                        if false {
                            let __cache_unreachable: Result<Option<User>, DbError> = loop {};
                            return __cache_unreachable;
                        }
                        self.db.find(org, id, filter).await
                    }
                )
                .await
            }
        };
        // Token streams print with a space between every two tokens, so
        // layout differences do not matter.
        assert_eq!(expanded, expected.to_string());
    }

    #[test]
    fn defaults_use_the_global_cache_and_no_jitter() {
        let expanded = expand(
            quote!(key = "user:<user.id>", ttl = 5, l1 = false),
            quote!(
                async fn load(user: &User) -> User {
                    user.clone()
                }
            ),
        );
        for expected in [
            "jitter : :: core :: option :: Option :: None",
            "negative : :: core :: option :: Option :: None",
            "l1 : false",
            "__cache_key . arg (& user . id) ;",
            "let __cache_cache : & :: cache_runtime :: Cache = & :: cache_runtime :: Cache :: global () ;",
            "get_or_load :: < User , :: cache_runtime :: __private :: shape :: Plain , _ >",
        ] {
            assert!(expanded.contains(expected), "{expected}\nin\n{expanded}");
        }
    }

    #[test]
    fn crate_option_replaces_every_runtime_path() {
        let expanded = expand(
            quote!(key = "n:<n>", ttl = 5, jitter = 0, crate = "my::rt"),
            quote!(
                async fn load(n: u8) -> std::io::Result<u8> {
                    Ok(n)
                }
            ),
        );
        assert!(!expanded.contains("cache_runtime"), "{expanded}");
        assert!(
            expanded.contains("my :: rt :: __private :: shape :: Result"),
            "{expanded}"
        );
        assert!(
            expanded.contains("& my :: rt :: Cache :: global ()"),
            "{expanded}"
        );
        assert!(expanded.contains("Some (0.0)"), "{expanded}");
    }

    #[test]
    fn on_error_emits_the_function_unchanged_with_the_errors() {
        let function = quote!(
            fn find(id: u64) -> u8 {
                1
            }
        );
        let expanded = expand(quote!(key = "user:<id>", ttl = 0), function.clone());
        assert!(expanded.starts_with(&function.to_string()), "{expanded}");
        assert_eq!(expanded.matches("compile_error").count(), 2, "{expanded}");
    }

    #[test]
    fn refuses_items_that_are_not_functions() {
        let item = quote!(
            #[derive(Clone)]
            pub struct User {
                id: u64,
            }
        );
        let expanded = expand(quote!(key = "k", ttl = 1), item.clone());
        assert!(expanded.starts_with(&item.to_string()));
        assert!(expanded.contains("`#[cached]` applies to an `async fn` with a body"));
        let declaration = quote!(
            async fn find(&self, id: u64) -> u8;
        );
        assert!(expand(quote!(key = "<id>", ttl = 1), declaration).contains("with a body"));
    }

    #[test]
    fn not_implemented_keeps_the_function() {
        let function = quote!(
            async fn update(id: u64) {}
        );
        let expanded = not_implemented("invalidates", function.clone()).to_string();
        assert!(expanded.starts_with(&function.to_string()));
        assert!(expanded.contains("\"`#[invalidates]` is not implemented yet\""));
    }
}
