//! Writes the generated code. Every rule was checked in `validate.rs`; here
//! the only decisions are spans.
//!
//! On any error the user's item is emitted unchanged beside the
//! `compile_error!`s (as tokio-macros and thiserror do), so callers of the
//! function and the IDE keep working and the user sees only our errors, not
//! a cascade caused by a missing function.

use proc_macro2::{Delimiter, Group, Ident, Literal, Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::visit_mut::VisitMut;
use syn::{
    AttrStyle, Attribute, Block, Expr, FnArg, Item, ItemFn, Pat, Path, Signature, Type, Visibility,
};

use crate::args::{MacroKind, parse_args};
use crate::errors::Errors;
use crate::key::{KeyPart, KeyTemplate};
use crate::shape::Shape;
use crate::validate::{
    CachedFn, InvalidatesFn, Passing, Refresh, RefreshParameter, validate_cached,
    validate_invalidates, validate_write_through,
};

/// Environment variable that makes every expansion print to stderr.
const DEBUG_VARIABLE: &str = "CACHE_MACROS_DEBUG";

/// `#[cached(args)] item`.
pub(crate) fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(MacroKind::Cached, args, item)
}

/// `#[invalidates(args)] item`.
pub(crate) fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(MacroKind::Invalidates, args, item)
}

/// `#[write_through(args)] item`.
pub(crate) fn write_through(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(MacroKind::WriteThrough, args, item)
}

fn expand(kind: MacroKind, args: TokenStream, item: TokenStream) -> TokenStream {
    let output = match expand_function(kind, args, item.clone()) {
        Ok(expanded) => expanded,
        Err(error) => unchanged_with_errors(item, &error),
    };
    print_if_debugging(kind.name(), &output);
    output
}

fn expand_function(
    kind: MacroKind,
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    let function = parse_function(kind, item)?;
    let mut errors = Errors::new();
    let args = parse_args(kind, args, &mut errors);
    Ok(match kind {
        MacroKind::Cached => {
            let cached = validate_cached(args, &function, errors)?;
            write_cached_fn(function, &cached)
        }
        MacroKind::Invalidates => {
            let invalidates = validate_invalidates(args, &function, errors)?;
            write_invalidates_fn(function, &invalidates)
        }
        MacroKind::WriteThrough => {
            let write = validate_write_through(args, &function, errors)?;
            write_write_through_fn(function, &write)
        }
    })
}

fn unchanged_with_errors(item: TokenStream, error: &syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    quote!(#item #errors)
}

fn parse_function(kind: MacroKind, item: TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => Ok(function),
        // A struct, an impl, a `fn` without a body (in a trait), ...
        _ => Err(syn::Error::new(
            item_keyword_span(item),
            format!("`#[{}]` applies to an `async fn` with a body", kind.name()),
        )),
    }
}

/// The function's outer attributes, and its body's `#![inner]` ones (which
/// syn keeps with the outer ones; they must go back inside the body).
fn split_attributes(attrs: Vec<Attribute>) -> (Vec<Attribute>, Vec<Attribute>) {
    let (inner, outer) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    (outer, inner)
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

/// The function with its attributes and signature unchanged (but for `mut`
/// on parameters with `early` / `stale`, which moves to the body's copies)
/// and its body replaced by a call to the runtime.
fn write_cached_fn(function: ItemFn, cached: &CachedFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    let (outer_attrs, inner_attrs) = split_attributes(attrs);
    let site = write_site(cached, "__CACHE_SITE");
    let key = write_template(&cached.runtime, &cached.key);
    let tags = write_template_array(&cached.runtime, &cached.tags);
    let cache = write_cache(&cached.runtime, cached.cache.as_ref());
    let get_or_load = match &cached.refresh {
        None => write_get_or_load_call(cached, &block),
        Some(refresh) => {
            // The parameters are only read now (copied for each run of the
            // body), so a `mut` stays on the copy, not on the parameter,
            // where it would warn as unneeded.
            remove_mut_from_parameters(&mut sig);
            write_get_or_refresh_call(cached, refresh, &block)
        }
    };
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #site
            let __cache_key = #key;
            let __cache_tags: #tags;
            #cache
            #get_or_load
        }
    }
}

/// The function with its body run first, then the keys and tags deleted if
/// it succeeded.
fn write_invalidates_fn(function: ItemFn, invalidates: &InvalidatesFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let (outer_attrs, inner_attrs) = split_attributes(attrs);
    let runtime = &invalidates.runtime;
    let function_name = &invalidates.function_name;
    let key_templates = invalidates.keys.iter().map(|key| &key.written);
    let tag_templates = invalidates.tags.iter().map(|tag| &tag.written);
    let keys = write_template_array(runtime, &invalidates.keys);
    let tags = write_template_array(runtime, &invalidates.tags);
    let cache = write_cache(runtime, invalidates.cache.as_ref());
    let return_type = annotation(&invalidates.return_type);
    let body = write_body_future(&return_type, &block, TokenStream::new(), {
        let statements = &block.stmts;
        quote!(#(#statements)*)
    });
    let invalidate = write_runtime_call(
        runtime,
        &return_type,
        invalidates.shape,
        "invalidate_after",
        None,
        quote!(
            __cache_cache,
            &__CACHE_INVALIDATION,
            &__cache_keys,
            &__cache_tags,
            &__cache_returned
        ),
    );
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            static __CACHE_INVALIDATION: #runtime::__private::Mutation = #runtime::__private::Mutation {
                function: #function_name,
                key_templates: &[#(#key_templates),*],
                tag_templates: &[#(#tag_templates),*],
            };
            let __cache_keys: #keys;
            let __cache_tags: #tags;
            #cache
            let __cache_returned: #return_type = #body.await;
            #invalidate;
            __cache_returned
        }
    }
}

/// The function with its body run first, then the returned value stored
/// under the key if it succeeded.
fn write_write_through_fn(function: ItemFn, write: &CachedFn) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let (outer_attrs, inner_attrs) = split_attributes(attrs);
    let runtime = &write.runtime;
    let site = write_site(write, "__CACHE_WRITE");
    let key = write_template(runtime, &write.key);
    let tags = write_template_array(runtime, &write.tags);
    let cache = write_cache(runtime, write.cache.as_ref());
    let return_type = &write.return_type;
    let body = write_body_future(return_type, &block, TokenStream::new(), {
        let statements = &block.stmts;
        quote!(#(#statements)*)
    });
    let store = write_runtime_call(
        runtime,
        return_type,
        write.shape,
        "write_through",
        None,
        quote!(
            __cache_cache,
            &__CACHE_WRITE,
            __cache_key,
            &__cache_tags,
            &__cache_returned
        ),
    );
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #site
            let __cache_key = #key;
            let __cache_tags: #tags;
            #cache
            let __cache_returned: #return_type = #body.await;
            #store;
            __cache_returned
        }
    }
}

/// The return type as a `let` annotation: each `impl Trait` (which can't be
/// written there) becomes `_`, for inference to fill in.
fn annotation(return_type: &Type) -> Type {
    let mut annotation = return_type.clone();
    InferImplTrait.visit_type_mut(&mut annotation);
    annotation
}

/// The function's fixed settings, built at compile time, in a `static`
/// named `name`.
fn write_site(cached: &CachedFn, name: &str) -> TokenStream {
    let name = Ident::new(name, Span::call_site());
    let runtime = &cached.runtime;
    let function = &cached.function_name;
    let template = &cached.key.written;
    let tag_templates = cached.tags.iter().map(|tag| &tag.written);
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
    let lock = cached.lock;
    let early = match cached.early {
        Some(beta) => {
            let beta = Literal::f64_unsuffixed(beta);
            quote!(::core::option::Option::Some(#beta))
        }
        None => quote!(::core::option::Option::None),
    };
    let stale = match cached.stale_secs {
        Some(seconds) => {
            let seconds = Literal::u64_unsuffixed(seconds);
            quote!(::core::option::Option::Some(::core::time::Duration::from_secs(#seconds)))
        }
        None => quote!(::core::option::Option::None),
    };
    quote! {
        static #name: #runtime::__private::Site = #runtime::__private::Site {
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
fn write_template_array(runtime: &Path, templates: &[KeyTemplate]) -> TokenStream {
    let count = Literal::usize_unsuffixed(templates.len());
    let rendered = templates
        .iter()
        .map(|template| write_template(runtime, template));
    quote!([#runtime::__private::KeyBuf; #count] = [#(#rendered),*])
}

/// `let __cache_cache: &Cache = &(EXPR);`, or the global cache. `let`
/// extends the temporary's lifetime, and deref coercion turns `&&Cache`,
/// `&Arc<Cache>` or `&LazyLock<Cache>` into `&Cache`.
fn write_cache(runtime: &Path, cache: Option<&Expr>) -> TokenStream {
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

/// `get_or_load::<ReturnType, Marker, _>(..., async move { body }).await`,
/// spanned over the return type: when the value type lacks a bound the
/// runtime needs (`Serialize`, `Clone`, ...), every error lands on the user's
/// return type instead of on the attribute. The body keeps its own spans.
fn write_get_or_load_call(cached: &CachedFn, body: &Block) -> TokenStream {
    let statements = &body.stmts;
    let load = write_body_future(
        &cached.return_type,
        body,
        TokenStream::new(),
        quote!(#(#statements)*),
    );
    write_runtime_call(
        &cached.runtime,
        &cached.return_type,
        cached.shape,
        // Without L1 every call takes the miss path: the runtime then runs
        // it inline instead of boxing it.
        if cached.l1 {
            "get_or_load"
        } else {
            "get_or_load_l2"
        },
        Some(quote!(_)),
        quote!(__cache_cache, &__CACHE_SITE, __cache_key, &__cache_tags, #load),
    )
}

/// `get_or_refresh::<ReturnType, Marker, _, _>(..., || { copies; async move
/// { body } }).await`: the runtime calls the closure for each run of the body
/// (on a miss, or to refresh in a spawned task), never on a hit. Each call
/// copies the receiver and the parameters, so the future owns everything it
/// uses (`Send + 'static`), and the body reads `self` as `__cache_self`.
fn write_get_or_refresh_call(cached: &CachedFn, refresh: &Refresh, body: &Block) -> TokenStream {
    let mut copies = TokenStream::new();
    let mut borrows = TokenStream::new();
    if let Some(self_token) = &refresh.receiver {
        // Spanned at `self`, so "`Repo: Clone` is not satisfied" points at
        // the receiver.
        let span = self_token.span;
        let copy = spanned_call(
            quote!(__cache_shared_copy::<_>),
            spanned_call(
                quote!(::core::clone::Clone::clone),
                self_token.to_token_stream(),
                span,
                span,
            ),
            span,
            span,
        );
        copies.extend(quote!(let __cache_self = #copy;));
        borrows.extend(quote!(let __cache_self: &Self = &__cache_self;));
    }
    for parameter in &refresh.parameters {
        let (copy, borrow) = write_parameter_copy(parameter);
        copies.extend(copy);
        borrows.extend(borrow);
    }
    let statements = &body.stmts;
    let statements = replace_self(quote!(#(#statements)*));
    let load = write_body_future(&cached.return_type, body, borrows, statements);
    let body_span = body.brace_token.span.join();
    // The runtime requires the whole future to be `Send + 'static`; these
    // state it for each copy, so that a copy that is not is reported on its
    // parameter rather than on the whole function, with a note pointing at
    // the option that asked for background runs. A copy the future borrows
    // (`&self`, `&T`) is also held as a reference across `.await`s: `Sync`.
    let bounds = quote_spanned! {refresh.option=>
        #[allow(dead_code)]
        fn __cache_background_copy<T: ::core::marker::Send + 'static>(value: T) -> T {
            value
        }
        #[allow(dead_code)]
        fn __cache_shared_copy<T: ::core::marker::Send + ::core::marker::Sync + 'static>(value: T) -> T {
            value
        }
    };
    let factory = quote_spanned!(body_span=> || { #bounds #copies #load });
    write_runtime_call(
        &cached.runtime,
        &cached.return_type,
        cached.shape,
        "get_or_refresh",
        Some(quote!(_, _)),
        quote!(__cache_cache, &__CACHE_SITE, __cache_key, &__cache_tags, #factory),
    )
}

/// The statements copying one parameter in the factory closure, and those
/// (if any) turning the copy back into the parameter's type in the future.
///
/// The copy is spanned over the parameter: each call and its argument start
/// at the parameter's first token and end at its last, and rustc joins the
/// two, so a type that is not `Clone`, `Send` or `'static` is reported on the
/// parameter.
fn write_parameter_copy(parameter: &RefreshParameter) -> (TokenStream, TokenStream) {
    // From the pattern to the type, leaving out attributes on the parameter.
    let syn::PatType { pat, ty, .. } = &parameter.written;
    let (first, last) = first_and_last_span(quote!(#pat #ty));
    let ident = &parameter.ident;
    let mutability = &parameter.mutability;
    // `&ident` / `&*ident`, from the first token to the last.
    let mut ident_at_last = ident.clone();
    ident_at_last.set_span(last);
    // A parameter the body does not read is still copied (the key used it);
    // it is not the user's mistake.
    let allow = quote!(#[allow(unused_variables)]);
    match &parameter.passing {
        Passing::ByValue => {
            let clone = spanned_call(
                quote!(::core::clone::Clone::clone),
                quote_spanned!(first=> & #ident_at_last),
                first,
                last,
            );
            let copy = spanned_call(quote!(__cache_background_copy::<_>), clone, first, last);
            (
                quote!(#allow let #mutability #ident = #copy;),
                TokenStream::new(),
            )
        }
        Passing::Borrowed(referent) => {
            let owned = format_ident!("__cache_owned_{}", ident.unraw());
            let to_owned = spanned_call(
                quote!(::std::borrow::ToOwned::to_owned),
                quote_spanned!(first=> &* #ident_at_last),
                first,
                last,
            );
            let copy = spanned_call(quote!(__cache_shared_copy::<_>), to_owned, first, last);
            // `impl Trait` can't be written in a `let`'s type: inference
            // fills in what the signature left anonymous.
            let mut referent = (**referent).clone();
            InferImplTrait.visit_type_mut(&mut referent);
            (
                quote!(let #owned = #copy;),
                quote! {
                    #allow
                    let #mutability #ident: &#referent = ::core::borrow::Borrow::borrow(&#owned);
                },
            )
        }
    }
}

/// `path(arguments)` spanning from `first` to `last`: the path at `first`
/// (its last segment at `last`, so the path alone spans both too), the
/// parentheses at `last`.
fn spanned_call(path: TokenStream, arguments: TokenStream, first: Span, last: Span) -> TokenStream {
    let mut path: Vec<TokenTree> = respan(path, first).into_iter().collect();
    if let Some(segment) = path.last_mut() {
        segment.set_span(last);
    }
    let arguments = spanned_group(Group::new(Delimiter::Parenthesis, arguments), last);
    quote!(#(#path)* #arguments)
}

fn spanned_group(mut group: Group, span: Span) -> Group {
    group.set_span(span);
    group
}

/// Replaces each `impl Trait` in a type with `_` (and `(impl A + B)` too:
/// `(_)` would warn as unneeded parentheses).
struct InferImplTrait;

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

/// Drops `mut` from the signature's parameters (not from the receiver).
fn remove_mut_from_parameters(signature: &mut Signature) {
    for input in &mut signature.inputs {
        if let FnArg::Typed(typed) = input
            && let Pat::Ident(binding) = &mut *typed.pat
        {
            binding.mutability = None;
        }
    }
}

/// `async move { prelude; pin the return type; body }`.
///
/// The async block's output type is otherwise inferred from the body, so a
/// body returning the wrong type would be reported as "expected `{async
/// block}` to resolve to `T`" on the attribute. A first (never taken)
/// `return` of the declared type fixes the output type before the body is
/// checked, and mistakes are reported in the body as without the macro
/// (tracing-attributes' "fake return edge").
///
/// The body's statements are spliced in (a block nested as the tail would
/// trip `unused_braces`) and the braces keep the body's span, so diagnostics
/// about the future (`{async block@..}`) point at the body.
fn write_body_future(
    return_type: &Type,
    body: &Block,
    prelude: TokenStream,
    statements: TokenStream,
) -> TokenStream {
    let (first, _) = first_and_last_span(return_type);
    let pin_return_type = quote_spanned! {first=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::needless_return
        )]
        if false {
            let __cache_unreachable: #return_type = loop {};
            return __cache_unreachable;
        }
    };
    let body_span = body.brace_token.span.join();
    let braced = spanned_group(
        Group::new(
            Delimiter::Brace,
            quote!(#prelude #pin_return_type #statements),
        ),
        body_span,
    );
    quote_spanned!(body_span=> async move #braced)
}

/// `runtime::__private::FUNCTION::<ReturnType, Marker, INFERRED>(ARGUMENTS)
/// .await`, spanned over the return type: when the value type lacks a bound
/// the runtime needs (`Serialize`, `Clone`, ...), every error lands on the
/// user's return type instead of on the attribute.
fn write_runtime_call(
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

/// The body with `self` replaced by `__cache_self`, as async-trait does:
/// inside groups and macro invocations too, but not in paths (`self::x`,
/// `use a::{self}`), not as a macro metavariable (`$self`), and not inside
/// nested `impl` and `trait` blocks, whose `self` is their own.
fn replace_self(tokens: TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut replaced = Vec::with_capacity(tokens.len());
    // Set after `impl` / `trait` until the item's body (the next braces).
    let mut in_item_header = false;
    for (index, token) in tokens.iter().enumerate() {
        let before = |offset: usize| index.checked_sub(offset).map(|i| &tokens[i]);
        let after_path_separator = is_punct(before(1), ':') && is_punct(before(2), ':');
        let token = match token {
            TokenTree::Ident(ident) if ident == "impl" || ident == "trait" => {
                in_item_header = true;
                token.clone()
            }
            TokenTree::Punct(punct) if punct.as_char() == ';' => {
                in_item_header = false;
                token.clone()
            }
            TokenTree::Ident(ident) if ident == "self" => {
                let before_path_separator = matches!(
                    (tokens.get(index + 1), tokens.get(index + 2)),
                    (Some(TokenTree::Punct(first)), Some(TokenTree::Punct(second)))
                        if first.as_char() == ':'
                            && first.spacing() == Spacing::Joint
                            && second.as_char() == ':'
                );
                if before_path_separator || after_path_separator || is_punct(before(1), '$') {
                    token.clone()
                } else {
                    TokenTree::Ident(Ident::new("__cache_self", ident.span()))
                }
            }
            TokenTree::Group(group) => {
                let nested_item_body = in_item_header && group.delimiter() == Delimiter::Brace;
                if nested_item_body {
                    in_item_header = false;
                }
                if nested_item_body
                    || (after_path_separator && group.delimiter() == Delimiter::Brace)
                {
                    token.clone()
                } else {
                    let mut replaced = Group::new(group.delimiter(), replace_self(group.stream()));
                    replaced.set_span(group.span());
                    TokenTree::Group(replaced)
                }
            }
            _ => token.clone(),
        };
        replaced.push(token);
    }
    replaced.into_iter().collect()
}

fn is_punct(token: Option<&TokenTree>, c: char) -> bool {
    matches!(token, Some(TokenTree::Punct(punct)) if punct.as_char() == c)
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
                tags = ["org:<org>", "all-users"],
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
                    lock: false,
                    early: ::core::option::Option::None,
                    stale: ::core::option::Option::None,
                    tag_templates: &["org:<org>", "all-users"],
                };
                let __cache_key = {
                    let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                    __cache_key.literal("org:");
                    __cache_key.arg(&org);
                    __cache_key.literal(":user:");
                    __cache_key.arg(&id);
                    __cache_key
                };
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 2] = [
                    {
                        let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                        __cache_key.literal("org:");
                        __cache_key.arg(&org);
                        __cache_key
                    },
                    {
                        let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                        __cache_key.literal("all-users");
                        __cache_key
                    }
                ];
                let __cache_cache: &::cache_runtime::Cache = &(self.cache);
                ::cache_runtime::__private::get_or_load::<Result<Option<User>, DbError>, ::cache_runtime::__private::shape::ResultOption, _>(
                    __cache_cache,
                    &__CACHE_SITE,
                    __cache_key,
                    &__cache_tags,
                    async move {
                        #[allow(
                            unknown_lints,
                            unreachable_code,
                            clippy::diverging_sub_expression,
                            clippy::empty_loop,
                            clippy::let_unit_value,
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
            "get_or_load_l2 :: < User , :: cache_runtime :: __private :: shape :: Plain , _ >",
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
    fn lock_early_and_stale_fill_the_site() {
        let function = quote!(
            async fn load(n: u8) -> u8 {
                n
            }
        );
        let expanded = expand(quote!(key = "n:<n>", ttl = 5, lock), function.clone());
        for expected in [
            "l1 : true , lock : true , early : :: core :: option :: Option :: None , stale : :: core :: option :: Option :: None , tag_templates : & [] , } ;",
            // `lock` alone needs no background runs.
            "get_or_load :: < u8 , :: cache_runtime :: __private :: shape :: Plain , _ > (__cache_cache , & __CACHE_SITE , __cache_key , & __cache_tags , async move {",
        ] {
            assert!(expanded.contains(expected), "{expected}\nin\n{expanded}");
        }
        for (args, site) in [
            (
                quote!(early),
                "lock : false , early : :: core :: option :: Option :: Some (1.0) , stale : :: core :: option :: Option :: None",
            ),
            (
                quote!(early = 2),
                "early : :: core :: option :: Option :: Some (2.0) ,",
            ),
            (
                quote!(early = 0.5, stale = 30),
                "early : :: core :: option :: Option :: Some (0.5) , stale : :: core :: option :: Option :: Some (:: core :: time :: Duration :: from_secs (30))",
            ),
        ] {
            let expanded = expand(quote!(key = "n:<n>", ttl = 5, #args), function.clone());
            assert!(expanded.contains(site), "{site}\nin\n{expanded}");
            assert!(
                expanded.contains("get_or_refresh :: < u8 , :: cache_runtime :: __private :: shape :: Plain , _ , _ >"),
                "{expanded}"
            );
            assert!(!expanded.contains("get_or_load"), "{expanded}");
        }
    }

    #[test]
    fn early_and_stale_pass_a_factory_that_copies_the_parameters() {
        let expanded = expand(
            quote!(
                key = "org:<org>:user:<id>",
                ttl = 300,
                stale = 60,
                cache = self.cache,
                skip(name, tags)
            ),
            quote! {
                pub async fn find(&self, org: u32, mut id: u64, name: &'a str, tags: &[impl Display]) -> Option<User> {
                    id += 1;
                    self::log!(self.db, "{}", self.name);
                    self.db.find(org, id, name, tags).await
                }
            },
        );
        let expected = quote! {
            // The signature's `mut` moved to the copy.
            pub async fn find(&self, org: u32, id: u64, name: &'a str, tags: &[impl Display]) -> Option<User> {
                static __CACHE_SITE: ::cache_runtime::__private::Site = ::cache_runtime::__private::Site {
                    function: "find",
                    template: "org:<org>:user:<id>",
                    ttl: ::core::time::Duration::from_secs(300),
                    jitter: ::core::option::Option::None,
                    negative: ::core::option::Option::None,
                    l1: true,
                    lock: false,
                    early: ::core::option::Option::None,
                    stale: ::core::option::Option::Some(::core::time::Duration::from_secs(60)),
                    tag_templates: &[],
                };
                let __cache_key = {
                    let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                    __cache_key.literal("org:");
                    __cache_key.arg(&org);
                    __cache_key.literal(":user:");
                    __cache_key.arg(&id);
                    __cache_key
                };
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 0] = [];
                let __cache_cache: &::cache_runtime::Cache = &(self.cache);
                ::cache_runtime::__private::get_or_refresh::<Option<User>, ::cache_runtime::__private::shape::Option, _, _>(
                    __cache_cache,
                    &__CACHE_SITE,
                    __cache_key,
                    &__cache_tags,
                    || {
                        #[allow(dead_code)]
                        fn __cache_background_copy<T: ::core::marker::Send + 'static>(value: T) -> T {
                            value
                        }
                        #[allow(dead_code)]
                        fn __cache_shared_copy<T: ::core::marker::Send + ::core::marker::Sync + 'static>(value: T) -> T {
                            value
                        }
                        let __cache_self = __cache_shared_copy::<_>(::core::clone::Clone::clone(self));
                        #[allow(unused_variables)]
                        let org = __cache_background_copy::<_>(::core::clone::Clone::clone(&org));
                        #[allow(unused_variables)]
                        let mut id = __cache_background_copy::<_>(::core::clone::Clone::clone(&id));
                        let __cache_owned_name = __cache_shared_copy::<_>(::std::borrow::ToOwned::to_owned(&*name));
                        let __cache_owned_tags = __cache_shared_copy::<_>(::std::borrow::ToOwned::to_owned(&*tags));
                        async move {
                            let __cache_self: &Self = &__cache_self;
                            #[allow(unused_variables)]
                            let name: &str = ::core::borrow::Borrow::borrow(&__cache_owned_name);
                            #[allow(unused_variables)]
                            let tags: &[_] = ::core::borrow::Borrow::borrow(&__cache_owned_tags);
                            #[allow(
                                unknown_lints,
                                unreachable_code,
                                clippy::diverging_sub_expression,
                                clippy::empty_loop,
                                clippy::let_unit_value,
                                clippy::needless_return
                            )]
                            if false {
                                let __cache_unreachable: Option<User> = loop {};
                                return __cache_unreachable;
                            }
                            id += 1;
                            self::log!(__cache_self.db, "{}", __cache_self.name);
                            __cache_self.db.find(org, id, name, tags).await
                        }
                    }
                )
                .await
            }
        };
        assert_eq!(expanded, expected.to_string());
    }

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

    #[test]
    fn free_functions_copy_no_receiver() {
        let expanded = expand(
            quote!(key = "user:<id>", ttl = 5, early),
            quote!(
                async fn load(id: u64) -> u64 {
                    id
                }
            ),
        );
        assert!(!expanded.contains("__cache_self"), "{expanded}");
        assert!(
            expanded.contains("# [allow (unused_variables)] let id = __cache_background_copy :: < _ > (:: core :: clone :: Clone :: clone (& id)) ; async move {"),
            "{expanded}"
        );
    }

    #[test]
    fn self_is_replaced_everywhere_but_in_paths_and_nested_items() {
        let replaced = replace_self(quote! {
            let a = self.a + Self::b(self) + self::c(&self, [self], { self });
            let s = format!("{}", self.name);
            use std::io::{self, Read};
            use self::module::Item;
            macro_rules! m { ($self:ident) => { $self.x + self.y }; }
            impl Helper for Thing { fn f(&self) -> u8 { self.x } }
            trait Local { fn g(&self) { self.h() } }
            self
        });
        let expected = quote! {
            let a = __cache_self.a + Self::b(__cache_self) + self::c(&__cache_self, [__cache_self], { __cache_self });
            let s = format!("{}", __cache_self.name);
            use std::io::{self, Read};
            use self::module::Item;
            macro_rules! m { ($self:ident) => { $self.x + __cache_self.y }; }
            impl Helper for Thing { fn f(&self) -> u8 { self.x } }
            trait Local { fn g(&self) { self.h() } }
            __cache_self
        };
        assert_eq!(replaced.to_string(), expected.to_string());
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
    fn writes_the_documented_invalidates_expansion() {
        let expanded = invalidates(
            quote!(key = "user:<id>", tag = "org:<org>"),
            quote! {
                async fn update_user(id: u64, org: u32, data: UserUpdate) -> Result<(), DbError> {
                    db::update_user(id, data).await
                }
            },
        )
        .to_string();
        let expected = quote! {
            async fn update_user(id: u64, org: u32, data: UserUpdate) -> Result<(), DbError> {
                static __CACHE_INVALIDATION: ::cache_runtime::__private::Mutation = ::cache_runtime::__private::Mutation {
                    function: "update_user",
                    key_templates: &["user:<id>"],
                    tag_templates: &["org:<org>"],
                };
                let __cache_keys: [::cache_runtime::__private::KeyBuf; 1] = [{
                    let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                    __cache_key.literal("user:");
                    __cache_key.arg(&id);
                    __cache_key
                }];
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 1] = [{
                    let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                    __cache_key.literal("org:");
                    __cache_key.arg(&org);
                    __cache_key
                }];
                let __cache_cache: &::cache_runtime::Cache = &::cache_runtime::Cache::global();
                let __cache_returned: Result<(), DbError> = async move {
                    #[allow(
                        unknown_lints,
                        unreachable_code,
                        clippy::diverging_sub_expression,
                        clippy::empty_loop,
                        clippy::let_unit_value,
                        clippy::needless_return
                    )]
                    if false {
                        let __cache_unreachable: Result<(), DbError> = loop {};
                        return __cache_unreachable;
                    }
                    db::update_user(id, data).await
                }
                .await;
                ::cache_runtime::__private::invalidate_after::<Result<(), DbError>, ::cache_runtime::__private::shape::Result>(
                    __cache_cache,
                    &__CACHE_INVALIDATION,
                    &__cache_keys,
                    &__cache_tags,
                    &__cache_returned
                )
                .await;
                __cache_returned
            }
        };
        assert_eq!(expanded, expected.to_string());
    }

    #[test]
    fn invalidates_without_a_return_type_returns_unit() {
        let expanded = invalidates(
            quote!(
                tag = "org:<org>",
                tag = "all",
                crate = "rt",
                cache = self.cache
            ),
            quote! {
                pub async fn purge(&self, org: u32) {
                    self.db.purge(org).await;
                }
            },
        )
        .to_string();
        for expected in [
            "pub async fn purge (& self , org : u32) {",
            "key_templates : & [] , tag_templates : & [\"org:<org>\" , \"all\"] ,",
            "let __cache_keys : [rt :: __private :: KeyBuf ; 0] = [] ;",
            "let __cache_tags : [rt :: __private :: KeyBuf ; 2] = [{",
            "let __cache_cache : & rt :: Cache = & (self . cache) ;",
            "let __cache_returned : () = async move {",
            "let __cache_unreachable : () = loop { } ;",
            "rt :: __private :: invalidate_after :: < () , rt :: __private :: shape :: Plain > (",
            ". await ; __cache_returned }",
        ] {
            assert!(expanded.contains(expected), "{expected}\nin\n{expanded}");
        }
        assert!(!expanded.contains("cache_runtime"), "{expanded}");
    }

    #[test]
    fn invalidates_infers_impl_trait_in_its_annotations() {
        let expanded = invalidates(
            quote!(key = "n:<n>"),
            quote! {
                async fn bump(n: u8) -> Option<impl Display> {
                    Some(n)
                }
            },
        )
        .to_string();
        for expected in [
            "async fn bump (n : u8) -> Option < impl Display > {",
            "let __cache_returned : Option < _ > = async move {",
            "invalidate_after :: < Option < _ > , :: cache_runtime :: __private :: shape :: Option > (",
        ] {
            assert!(expanded.contains(expected), "{expected}\nin\n{expanded}");
        }
    }

    #[test]
    fn writes_the_documented_write_through_expansion() {
        let expanded = write_through(
            quote!(key = "user:<id>", ttl = 300, tags = ["org:<org>"]),
            quote! {
                async fn rename_user(id: u64, org: u32, name: String) -> Result<User, DbError> {
                    db::rename_user(id, name).await
                }
            },
        )
        .to_string();
        let expected = quote! {
            async fn rename_user(id: u64, org: u32, name: String) -> Result<User, DbError> {
                static __CACHE_WRITE: ::cache_runtime::__private::Site = ::cache_runtime::__private::Site {
                    function: "rename_user",
                    template: "user:<id>",
                    ttl: ::core::time::Duration::from_secs(300),
                    jitter: ::core::option::Option::None,
                    negative: ::core::option::Option::None,
                    l1: true,
                    lock: false,
                    early: ::core::option::Option::None,
                    stale: ::core::option::Option::None,
                    tag_templates: &["org:<org>"],
                };
                let __cache_key = {
                    let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                    __cache_key.literal("user:");
                    __cache_key.arg(&id);
                    __cache_key
                };
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 1] = [{
                    let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
                    __cache_key.literal("org:");
                    __cache_key.arg(&org);
                    __cache_key
                }];
                let __cache_cache: &::cache_runtime::Cache = &::cache_runtime::Cache::global();
                let __cache_returned: Result<User, DbError> = async move {
                    #[allow(
                        unknown_lints,
                        unreachable_code,
                        clippy::diverging_sub_expression,
                        clippy::empty_loop,
                        clippy::let_unit_value,
                        clippy::needless_return
                    )]
                    if false {
                        let __cache_unreachable: Result<User, DbError> = loop {};
                        return __cache_unreachable;
                    }
                    db::rename_user(id, name).await
                }
                .await;
                ::cache_runtime::__private::write_through::<Result<User, DbError>, ::cache_runtime::__private::shape::Result>(
                    __cache_cache,
                    &__CACHE_WRITE,
                    __cache_key,
                    &__cache_tags,
                    &__cache_returned
                )
                .await;
                __cache_returned
            }
        };
        assert_eq!(expanded, expected.to_string());
    }

    #[test]
    fn write_through_fills_jitter_and_stale() {
        let expanded = write_through(
            quote!(
                key = "user:<id>",
                ttl = 60,
                jitter = 0.25,
                stale = 30,
                cache = &CACHE
            ),
            quote! {
                async fn save(id: u64, user: User) -> User {
                    user
                }
            },
        )
        .to_string();
        for expected in [
            "jitter : :: core :: option :: Option :: Some (0.25) ,",
            "stale : :: core :: option :: Option :: Some (:: core :: time :: Duration :: from_secs (30)) , tag_templates : & [] ,",
            "let __cache_tags : [:: cache_runtime :: __private :: KeyBuf ; 0] = [] ;",
            "let __cache_cache : & :: cache_runtime :: Cache = & (& CACHE) ;",
            "write_through :: < User , :: cache_runtime :: __private :: shape :: Plain > (",
        ] {
            assert!(expanded.contains(expected), "{expected}\nin\n{expanded}");
        }
    }

    #[test]
    fn each_attribute_keeps_the_function_on_error() {
        let function = quote!(
            async fn update(id: u64) {}
        );
        let expanded = invalidates(quote!(), function.clone()).to_string();
        assert!(expanded.starts_with(&function.to_string()), "{expanded}");
        assert_eq!(expanded.matches("compile_error").count(), 1, "{expanded}");
        let expanded =
            write_through(quote!(key = "user:<id>", ttl = 5), function.clone()).to_string();
        assert!(expanded.starts_with(&function.to_string()), "{expanded}");
        assert!(expanded.contains("use `#[invalidates]`"), "{expanded}");
        let item = quote!(
            struct Update;
        );
        for expanded in [
            invalidates(quote!(key = "k"), item.clone()).to_string(),
            write_through(quote!(key = "k", ttl = 1), item.clone()).to_string(),
        ] {
            assert!(expanded.starts_with(&item.to_string()), "{expanded}");
        }
        assert!(
            invalidates(quote!(key = "k"), item.clone())
                .to_string()
                .contains("`#[invalidates]` applies to an `async fn` with a body")
        );
        assert!(
            write_through(quote!(key = "k", ttl = 1), item)
                .to_string()
                .contains("`#[write_through]` applies to an `async fn` with a body")
        );
    }
}
