//! `#[write_behind]`: the function stores one parameter's value as
//! `#[write_through]` would and hands the runtime its other parameters to
//! queue; the body moves to a sibling function, which a worker runs later
//! through the handler a generated companion builds (or the call runs at
//! once, when Redis can't take the write).
//!
//! For `#[write_behind(key = "user:<id>:seen", ttl = 300, value = at)] pub
//! async fn record_seen(db: &Db, id: u64, at: i64) -> Result<(), DbError>`:
//!
//! ```text
//! pub async fn record_seen(db: &Db, id: u64, at: i64) -> Result<(), DbError> {
//!     queued_argument::<u64>(); queued_argument::<i64>();
//!     site; key; tags; cache;
//!     let __cache_value = Clone::clone(&at);
//!     let __cache_pending = begin_write(cache, key, &tags).await;
//!     write_behind(cache, site, "record_seen", pending, __cache_value, (id, at,),
//!         |(id, at,)| __cache_record_seen_body(db, id, at)).await
//! }
//! async fn __cache_record_seen_body(db: &Db, id: u64, at: i64) -> Result<(), DbError> { body }
//! pub fn record_seen_handler(db: Db) -> WriteBehindHandler {
//!     WriteBehindHandler::new("record_seen", db, |handle: Arc<Db>, (id, at,): (u64, i64,)|
//!         async move { __cache_record_seen_body(&handle, id, at).await })
//! }
//! ```
//!
//! The body's function keeps the signature and the body as written, so
//! errors in the body point at the user's tokens and its lints are the
//! user's (its `allow`s are repeated on it).

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::punctuated::Punctuated;
use syn::{
    AttrStyle, Attribute, Block, FnArg, ItemFn, Pat, Path, Signature, Token, Type, Visibility,
};

use super::parts::{
    at_return_type, first_and_last_span, respan, spanned_call, spanned_group, write_cache,
    write_entry, write_runtime_call,
};
use crate::plan::{Handle, WriteBehindPlan};

/// The function, the body's sibling and the companion building the
/// worker's handler.
pub(super) fn write_write_behind_fn(function: ItemFn, plan: &WriteBehindPlan) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let name = &plan.common.function_name;
    let body_name = Ident::new(&format!("__cache_{name}_body"), sig.ident.span());
    let handler_name = Ident::new(&format!("{name}_handler"), sig.ident.span());
    let body_path = match &plan.handle {
        Some(Handle::Receiver { self_token, .. }) => {
            let self_type = Ident::new("Self", self_token.span);
            quote!(#self_type::#body_name)
        }
        _ => body_name.to_token_stream(),
    };

    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    let mut body_sig = sig.clone();
    body_sig.ident = body_name;
    // The sibling is the macro's item, so its first token is the macro's
    // (`Span::mixed_site()`): lints about the function as a whole, such as
    // clippy's `unused_async` on a body without `.await` (which the
    // attribute requires to be `async`), skip it as generated code. The
    // body's tokens stay the user's, linted as written.
    if let Some(asyncness) = &mut body_sig.asyncness {
        asyncness.span = Span::mixed_site().located_at(asyncness.span);
    }
    let body_function = write_body_function(plan, body_sig, &block, &inner_attrs, &handler_name);

    let mut public_sig = sig;
    // The function only forwards its parameters: a `mut` is the body's.
    for input in &mut public_sig.inputs {
        if let FnArg::Typed(typed) = input
            && let Pat::Ident(binding) = &mut *typed.pat
        {
            binding.mutability = None;
        }
    }
    let statements = write_call(plan, &body_path);
    let companion = write_companion(plan, &vis, &handler_name, &body_path);
    quote! {
        #(#outer_attrs)*
        #vis #public_sig {
            #statements
        }
        #body_function
        #companion
    }
}

/// `async fn __cache_f_body(..) { body }`: the signature as written under
/// another name, the user's block (its braces and their span) holding the
/// inner attributes first, and the function's `#[cfg]`s and lint levels.
fn write_body_function(
    plan: &WriteBehindPlan,
    body_sig: Signature,
    block: &Block,
    inner_attrs: &[Attribute],
    handler_name: &Ident,
) -> TokenStream {
    let doc = format!(
        "The body of [`{}`]: `#[write_behind]` runs it later, in a worker (see `{handler_name}`), or in the call when Redis can't take the write.",
        linked(plan, &plan.common.function_name)
    );
    let statements = &block.stmts;
    let braced = spanned_group(
        Group::new(Delimiter::Brace, quote!(#(#inner_attrs)* #(#statements)*)),
        block.brace_token.span.join(),
    );
    let sibling_attrs = &plan.sibling_attrs;
    quote! {
        #(#sibling_attrs)*
        #[doc = #doc]
        #body_sig #braced
    }
}

/// `[`f`]` or `[`Self::f`]`, for the docs.
fn linked(plan: &WriteBehindPlan, name: &str) -> String {
    match plan.handle {
        Some(Handle::Receiver { .. }) => format!("Self::{name}"),
        _ => name.to_owned(),
    }
}

/// The function's statements: the checks of the queued types, the site,
/// key and tags, the value's clone, `begin_write`, then `write_behind`
/// with the queued parameters and the body to run when Redis can't take
/// them.
fn write_call(plan: &WriteBehindPlan, body_path: &TokenStream) -> TokenStream {
    let runtime = &plan.common.runtime;
    let checks = plan
        .queued
        .iter()
        .map(|parameter| write_queued_check(runtime, &parameter.ty));
    let before = write_entry(&plan.common, &plan.entry);
    let cache = write_cache(&plan.common);
    // At `value = at`'s `at`: a value that is not `Clone`, or not a value
    // the cache can store, is reported there.
    let value_at = Span::mixed_site().located_at(plan.value.written);
    let mut value = plan.value.parameter.clone();
    value.set_span(plan.value.written.resolved_at(value.span()));
    let cloned =
        quote_spanned!(value_at=> let __cache_value = ::core::clone::Clone::clone(&#value););
    let value_argument = Ident::new("__cache_value", value_at);
    let queued: Vec<&Ident> = plan
        .queued
        .iter()
        .map(|parameter| &parameter.ident)
        .collect();
    let mut body_arguments: Punctuated<TokenStream, Token![,]> = Punctuated::new();
    match &plan.handle {
        Some(Handle::Parameter { ident, .. }) => body_arguments.push(ident.to_token_stream()),
        Some(Handle::Receiver { self_token, .. }) => {
            body_arguments.push(self_token.to_token_stream());
        }
        None => {}
    }
    body_arguments.extend(queued.iter().map(ToTokens::to_token_stream));
    let queue = &plan.queue;
    let arguments = queued_tuple(&queued, plan.parameter_list);
    let body_call = spanned_group(
        Group::new(Delimiter::Parenthesis, body_arguments.into_token_stream()),
        plan.parameter_list,
    );
    let call = write_runtime_call(
        runtime,
        &plan.common.return_type,
        "write_behind",
        generated!(
            __cache_cache,
            __cache_site,
            #queue,
            __cache_pending,
            #value_argument,
            #arguments,
            |#arguments| #body_path #body_call
        ),
        true,
    );
    let begin = generated! {
        let __cache_pending = #runtime::__private::begin_write(__cache_cache, __cache_key, &__cache_tags).await;
    };
    quote! {
        #(#checks)*
        #before
        #cache
        #cloned
        #begin
        #call
    }
}

/// `(a, b,)`, an expression, a pattern or a type: the queued values
/// together, spanned at the signature's parameter list.
fn queued_tuple<T: ToTokens>(items: &[T], parameter_list: Span) -> Group {
    spanned_group(
        Group::new(Delimiter::Parenthesis, quote!(#(#items,)*)),
        parameter_list,
    )
}

/// `runtime::__private::queued_argument::<T>();`, spanned at `T`: a type
/// the queue can't hold (not `Serialize`, `DeserializeOwned`, `Send` or
/// `'static`) is reported on the parameter's type.
fn write_queued_check(runtime: &Path, ty: &Type) -> TokenStream {
    let (first, _) = first_and_last_span(ty);
    let at = Span::mixed_site().located_at(first);
    let runtime = respan(runtime.to_token_stream(), at);
    quote_spanned!(at=> #runtime::__private::queued_argument::<#ty>();)
}

/// `vis fn f_handler(handle: H) -> WriteBehindHandler`: the handler the
/// worker runs the queued writes with, calling the body's function with
/// the handle it owns.
fn write_companion(
    plan: &WriteBehindPlan,
    vis: &Visibility,
    handler_name: &Ident,
    body_path: &TokenStream,
) -> TokenStream {
    let runtime = &plan.common.runtime;
    let queue = &plan.queue;
    let name = &plan.common.function_name;
    let (parameter, handle, handle_type, registered) = match &plan.handle {
        Some(Handle::Parameter { ident, referent }) => (
            quote!(#ident: #referent),
            ident.to_token_stream(),
            referent.to_token_stream(),
            format!("{handler_name}({ident})"),
        ),
        Some(Handle::Receiver {
            self_token,
            referent,
        }) => {
            let parameter = if is_self(referent) {
                self_token.to_token_stream()
            } else {
                quote!(#self_token: #referent)
            };
            (
                parameter,
                self_token.to_token_stream(),
                referent.to_token_stream(),
                format!("handle.{handler_name}()"),
            )
        }
        None => (
            TokenStream::new(),
            generated!(()),
            generated!(()),
            format!("{handler_name}()"),
        ),
    };
    let lends = match &plan.handle {
        Some(Handle::Parameter { ident, .. }) => {
            format!(" The worker owns `{ident}` and lends it to each call.")
        }
        Some(Handle::Receiver { .. }) => {
            " The worker owns `self` and lends it to each call.".to_owned()
        }
        None => String::new(),
    };
    let doc = format!(
        "The handler running the writes [`{linked}`] queues (queue `{queue}`), generated by `#[write_behind]`: register it with a worker, `WriteBehindWorker::builder(&cache).handler({registered})`, which runs the body of `{name}` for each queued write.{lends}",
        linked = linked(plan, name),
        queue = queue.value(),
    );
    let queued: Vec<&Ident> = plan
        .queued
        .iter()
        .map(|parameter| &parameter.ident)
        .collect();
    let types: Vec<&Type> = plan.queued.iter().map(|parameter| &*parameter.ty).collect();
    let (queued, types) = (
        queued_tuple(&queued, plan.parameter_list),
        queued_tuple(&types, plan.parameter_list),
    );
    let (binding, lent) = match plan.handle {
        Some(_) => (
            generated!(__cache_handle),
            Some(generated!(&__cache_handle)),
        ),
        None => (generated!(_), None),
    };
    let mut body_arguments: Punctuated<TokenStream, Token![,]> = lent.into_iter().collect();
    body_arguments.extend(
        plan.queued
            .iter()
            .map(|parameter| parameter.ident.to_token_stream()),
    );
    let coalesce = plan.coalesce.then(|| generated!(.coalesce(true)));
    let sibling_attrs = &plan.sibling_attrs;
    let run = generated! {
        |#binding: ::std::sync::Arc<#handle_type>, #queued: #types| async move {
            #body_path(#body_arguments).await
        }
    };
    // At the return type, as the function's call to `write_behind` is: a
    // return type that is not `Deferred` is reported there.
    let at = at_return_type(&plan.common.return_type);
    let new = spanned_call(
        quote!(#runtime::WriteBehindHandler::new),
        quote!(#queue, #handle, #run),
        at,
        at,
    );
    quote! {
        #(#sibling_attrs)*
        #[doc = #doc]
        #vis fn #handler_name(#parameter) -> #runtime::WriteBehindHandler {
            #new #coalesce
        }
    }
}

/// `Self`, as `&self` declares it.
fn is_self(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none() && path.path.is_ident("Self"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::testing::{assert_contains, rendered};
    use crate::expand::write_behind;

    #[test]
    fn writes_the_documented_write_behind_expansion() {
        let expanded = write_behind(
            quote!(key = "user:<id>:seen", ttl = 300, value = at),
            quote! {
                /// Records when the user was last seen.
                pub async fn record_seen(db: &Db, id: u64, mut at: i64) -> Result<(), DbError> {
                    #![allow(unused_mut)]
                    db.save_seen(id, at).await
                }
            },
        )
        .to_string();
        let key = rendered(quote!(
            __cache_key.literal("user:");
            __cache_key.integer(id);
            __cache_key.literal(":seen");
        ));
        let function = quote! {
            #[doc = r" Records when the user was last seen."]
            pub async fn record_seen(db: &Db, id: u64, at: i64) -> Result<(), DbError> {
                ::cache_runtime::__private::queued_argument::<u64>();
                ::cache_runtime::__private::queued_argument::<i64>();
            }
        }
        .to_string();
        // Up to the statements `write_entry` writes (tested with
        // `#[write_through]`'s expansion).
        let head = function.trim_end_matches(" }");
        assert!(expanded.starts_with(head), "{head}\nin\n{expanded}");
        let call = quote! {
            let __cache_key = #key;
            let __cache_tags: [::cache_runtime::__private::KeyBuf; 0] = [];
            let __cache_cache: &::cache_runtime::Cache = &::cache_runtime::__private::global_cache("record_seen");
            let __cache_value = ::core::clone::Clone::clone(&at);
            let __cache_pending = ::cache_runtime::__private::begin_write(__cache_cache, __cache_key, &__cache_tags).await;
            ::cache_runtime::__private::write_behind(
                __cache_cache,
                __cache_site,
                "record_seen",
                __cache_pending,
                __cache_value,
                (id, at,),
                |(id, at,)| __cache_record_seen_body(db, id, at)
            ).await
        };
        let body = quote! {
            #[doc = "The body of [`record_seen`]: `#[write_behind]` runs it later, in a worker (see `record_seen_handler`), or in the call when Redis can't take the write."]
            async fn __cache_record_seen_body(db: &Db, id: u64, mut at: i64) -> Result<(), DbError> {
                #![allow(unused_mut)]
                db.save_seen(id, at).await
            }
        };
        let companion = quote! {
            #[doc = "The handler running the writes [`record_seen`] queues (queue `record_seen`), generated by `#[write_behind]`: register it with a worker, `WriteBehindWorker::builder(&cache).handler(record_seen_handler(db))`, which runs the body of `record_seen` for each queued write. The worker owns `db` and lends it to each call."]
            pub fn record_seen_handler(db: Db) -> ::cache_runtime::WriteBehindHandler {
                ::cache_runtime::WriteBehindHandler::new(
                    "record_seen",
                    db,
                    |__cache_handle: ::std::sync::Arc<Db>, (id, at,): (u64, i64,)| async move {
                        __cache_record_seen_body(&__cache_handle, id, at).await
                    }
                )
            }
        };
        let tail = format!("{call} }} {body} {companion}");
        assert!(expanded.ends_with(&tail), "{tail}\nin\n{expanded}");
    }

    #[test]
    fn a_method_lends_self_and_options_reach_the_companion() {
        let expanded = write_behind(
            quote! {
                key = "user:<id>:seen", ttl = 300, value = at, cache = self.cache,
                queue = "seen", coalesce, tags = ["org:<org>"], crate = "rt"
            },
            quote! {
                #[cfg(feature = "seen")]
                #[allow(clippy::unused_async)]
                #[tracing::instrument]
                pub(crate) async fn record_seen(&self, id: u64, org: u32, at: i64) {
                    self.db.save_seen(id, at).await;
                }
            },
        )
        .to_string();
        let siblings = "# [cfg (feature = \"seen\")] # [allow (clippy :: unused_async)] # [doc =";
        assert_contains(
            &expanded,
            &[
                "# [cfg (feature = \"seen\")] # [allow (clippy :: unused_async)] # [tracing :: instrument] pub (crate) async fn record_seen (& self , id : u64 , org : u32 , at : i64) {",
                "let __cache_cache : & rt :: Cache = & (self . cache) ;",
                "rt :: __private :: write_behind (__cache_cache , __cache_site , \"seen\" , __cache_pending , __cache_value , (id , org , at ,) , | (id , org , at ,) | Self :: __cache_record_seen_body (self , id , org , at)) . await }",
                &format!("{siblings} \"The body of [`Self::record_seen`]"),
                "async fn __cache_record_seen_body (& self , id : u64 , org : u32 , at : i64) { self . db . save_seen (id , at) . await ; }",
                &format!(
                    "{siblings} \"The handler running the writes [`Self::record_seen`] queues (queue `seen`)"
                ),
                "pub (crate) fn record_seen_handler (self) -> rt :: WriteBehindHandler { rt :: WriteBehindHandler :: new (\"seen\" , self , | __cache_handle : :: std :: sync :: Arc < Self > , (id , org , at ,) : (u64 , u32 , i64 ,) | async move { Self :: __cache_record_seen_body (& __cache_handle , id , org , at) . await }) . coalesce (true) }",
            ],
        );
        assert_eq!(
            expanded.matches("tracing :: instrument").count(),
            1,
            "{expanded}"
        );
        assert!(!expanded.contains("cache_runtime"), "{expanded}");
    }

    #[test]
    fn without_a_handle_the_companion_takes_no_argument() {
        let expanded = write_behind(
            quote!(key = "views:<page>", ttl = 60, value = count),
            quote! {
                async fn count_views(page: String, count: u64) {}
            },
        )
        .to_string();
        assert_contains(
            &expanded,
            &[
                "| (page , count ,) | __cache_count_views_body (page , count)) . await }",
                "fn count_views_handler () -> :: cache_runtime :: WriteBehindHandler { :: cache_runtime :: WriteBehindHandler :: new (\"count_views\" , () , | _ : :: std :: sync :: Arc < () > , (page , count ,) : (String , u64 ,) | async move { __cache_count_views_body (page , count) . await }) }",
            ],
        );
    }
}
