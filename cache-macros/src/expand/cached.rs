//! `#[cached]`: the body becomes the loader passed to the runtime's
//! `get_or_load`, or, when it also runs in the background (`early`,
//! `stale`), a closure that copies the receiver and the parameters for each
//! run, passed to `get_or_refresh`.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::visit_mut::VisitMut;
use syn::{Block, FnArg, ItemFn, Pat, Signature, Type};

use super::body::write_body_future;
use super::parts::{
    InferImplTrait, first_and_last_span, spanned_call, write_cache, write_entry, write_runtime_call,
};
use super::replace_body;
use crate::plan::{CachedPlan, Common, Passing, Refresh, RefreshParameter};

/// The function with its attributes and signature unchanged (but for `mut`
/// on parameters with `early` / `stale`, which moves to the body's copies)
/// and its body replaced by a call to the runtime:
/// `get_or_load::<ReturnType, Marker, _>(..., async move { body }).await`,
/// or `get_or_refresh::<ReturnType, Marker, _, _>(..., || { copies; async
/// move { body } }).await`.
///
/// The call is spanned over the return type: when the value type lacks a
/// bound the runtime needs (`Serialize`, `Clone`, ...), every error lands on
/// the user's return type instead of on the attribute. The body keeps its
/// own spans.
pub(super) fn write_cached_fn(function: ItemFn, plan: &CachedPlan) -> TokenStream {
    let Common {
        runtime,
        cache,
        return_type,
        shape,
        ..
    } = &plan.common;
    replace_body(function, |sig, body| {
        let entry = write_entry("__CACHE_SITE", &plan.common, &plan.entry, Some(plan));
        let cache = write_cache(runtime, cache.as_ref());
        let (runtime_function, inferred, loader) = match &plan.refresh {
            // Without L1 every call takes the miss path: the runtime then
            // runs it inline instead of boxing it.
            None => (
                if plan.l1 {
                    "get_or_load"
                } else {
                    "get_or_load_l2"
                },
                quote!(_),
                write_body_future(return_type, body, None),
            ),
            Some(refresh) => {
                // The parameters are only read now (copied for each run of
                // the body), so a `mut` stays on the copy, not on the
                // parameter, where it would warn as unneeded.
                remove_mut_from_parameters(sig);
                let factory = write_refresh_factory(return_type, refresh, body);
                ("get_or_refresh", quote!(_, _), factory)
            }
        };
        let call = write_runtime_call(
            runtime,
            return_type,
            *shape,
            runtime_function,
            Some(inferred),
            quote!(__cache_cache, &__CACHE_SITE, __cache_key, &__cache_tags, #loader),
        );
        quote! {
            #entry
            #cache
            #call
        }
    })
}

/// `|| { copies; async move { body } }`: the runtime calls the closure for
/// each run of the body (on a miss, or to refresh in a spawned task), never
/// on a hit. Each call copies the receiver and the parameters, so the future
/// owns everything it uses (`Send + 'static`), and the body reads `self` as
/// `__cache_self`.
fn write_refresh_factory(return_type: &Type, refresh: &Refresh, body: &Block) -> TokenStream {
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
    let load = write_body_future(return_type, body, Some(borrows));
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
    quote_spanned!(body_span=> || { #bounds #copies #load })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::testing::{assert_contains, pin, rendered};

    fn expand(args: TokenStream, item: TokenStream) -> String {
        crate::expand::cached(args, item).to_string()
    }

    #[test]
    fn writes_the_documented_expansion() {
        let expanded = expand(
            quote! {
                key = "org:<org>:user:<id>", ttl = 300, jitter = 0.2, negative = 60,
                tags = ["org:<org>", "all-users"], cache = self.cache, skip(filter)
            },
            quote! {
                #[doc = "Finds a user."]
                pub async fn find(&self, org: u32, id: u64, filter: &Filter) -> Result<Option<User>, DbError> {
                    self.db.find(org, id, filter).await
                }
            },
        );
        let key = rendered(quote! {
            __cache_key.literal("org:");
            __cache_key.arg(&org);
            __cache_key.literal(":user:");
            __cache_key.arg(&id);
        });
        let org = rendered(quote!(__cache_key.literal("org:"); __cache_key.arg(&org);));
        let all_users = rendered(quote!(__cache_key.literal("all-users");));
        let pin = pin(quote!(Result<Option<User>, DbError>));
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
                static __CACHE_SITE_CHECK: ::cache_runtime::__private::TemplateCheck = ::cache_runtime::__private::TemplateCheck::new();
                __CACHE_SITE_CHECK.run(&__CACHE_SITE);
                let __cache_key = #key;
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 2] = [#org, #all_users];
                let __cache_cache: &::cache_runtime::Cache = &(self.cache);
                ::cache_runtime::__private::get_or_load::<Result<Option<User>, DbError>, ::cache_runtime::__private::shape::ResultOption, _>(
                    __cache_cache,
                    &__CACHE_SITE,
                    __cache_key,
                    &__cache_tags,
                    async move {
                        #pin
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
        assert_contains(
            &expanded,
            &[
                "jitter : :: core :: option :: Option :: None",
                "negative : :: core :: option :: Option :: None",
                "l1 : false",
                "__cache_key . arg (& user . id) ;",
                "let __cache_cache : & :: cache_runtime :: Cache = & :: cache_runtime :: Cache :: global () ;",
                "get_or_load_l2 :: < User , :: cache_runtime :: __private :: shape :: Plain , _ >",
            ],
        );
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
        assert_contains(
            &expanded,
            &[
                "my :: rt :: __private :: shape :: Result",
                "& my :: rt :: Cache :: global ()",
                "Some (0.0)",
            ],
        );
    }

    #[test]
    fn lock_early_and_stale_fill_the_site() {
        let function = quote!(
            async fn load(n: u8) -> u8 {
                n
            }
        );
        let expanded = expand(quote!(key = "n:<n>", ttl = 5, lock), function.clone());
        assert_contains(
            &expanded,
            &[
                "l1 : true , lock : true , early : :: core :: option :: Option :: None , stale : :: core :: option :: Option :: None , tag_templates : & [] , } ;",
                // `lock` alone needs no background runs.
                "get_or_load :: < u8 , :: cache_runtime :: __private :: shape :: Plain , _ > (__cache_cache , & __CACHE_SITE , __cache_key , & __cache_tags , async move {",
            ],
        );
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
            assert_contains(
                &expanded,
                &[
                    site,
                    "get_or_refresh :: < u8 , :: cache_runtime :: __private :: shape :: Plain , _ , _ >",
                ],
            );
            assert!(!expanded.contains("get_or_load"), "{expanded}");
        }
    }

    #[test]
    fn early_and_stale_pass_a_factory_that_copies_the_parameters() {
        let expanded = expand(
            quote! { key = "org:<org>:user:<id>", ttl = 300, stale = 60, cache = self.cache, skip(name, tags) },
            quote! {
                pub async fn find(&self, org: u32, mut id: u64, name: &'a str, tags: &[impl Display]) -> Option<User> {
                    id += 1;
                    self::log!(self.db, "{}", self.name);
                    self.db.find(org, id, name, tags).await
                }
            },
        );
        // The signature's `mut` moved to the copy.
        let signature = quote! {
            pub async fn find(&self, org: u32, id: u64, name: &'a str, tags: &[impl Display]) -> Option<User>
        };
        assert!(expanded.starts_with(&signature.to_string()), "{expanded}");
        let pin = pin(quote!(Option<User>));
        let call = quote! {
            ::cache_runtime::__private::get_or_refresh::<Option<User>, ::cache_runtime::__private::shape::Option, _, _>(
                __cache_cache,
                &__CACHE_SITE,
                __cache_key,
                &__cache_tags,
                || {
                    #[allow(dead_code)] fn __cache_background_copy<T: ::core::marker::Send + 'static>(value: T) -> T { value }
                    #[allow(dead_code)] fn __cache_shared_copy<T: ::core::marker::Send + ::core::marker::Sync + 'static>(value: T) -> T { value }
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
                        #pin
                        id += 1;
                        self::log!(__cache_self.db, "{}", __cache_self.name);
                        __cache_self.db.find(org, id, name, tags).await
                    }
                }
            )
            .await
        };
        assert!(expanded.ends_with(&format!("{call} }}")), "{expanded}");
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
        assert_contains(
            &expanded,
            &[
                "# [allow (unused_variables)] let id = __cache_background_copy :: < _ > (:: core :: clone :: Clone :: clone (& id)) ; async move {",
            ],
        );
    }
}
