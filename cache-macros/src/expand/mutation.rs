//! `#[invalidates]` and `#[write_through]`: the body runs first, then, with
//! the value it returned, the runtime deletes or stores entries (it decides
//! from the return shape, which the compiler picks from the value's type,
//! whether the body succeeded). One template writes both; they differ only
//! in what is rendered before the body, in what `#[write_through]` asks the
//! runtime before the body (what the key holds, so its write cannot land
//! over a newer mutation), and in the runtime function called after it.
//!
//! The returned value is never held across an `.await` (its error type may
//! not be `Send`, as `Box<dyn Error>` is not): it lives in a block of its
//! own, the runtime gives it back at once after an error (`Break`), and
//! after a success returns a future that holds only what rebuilds it.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{ItemFn, Type};

use super::body::{Inputs, write_body_future};
use super::parts::{
    Of, annotation, at_return_type, shape_argument, write_cache, write_conditional_errors,
    write_entry, write_runtime_call, write_shape, write_template_array,
};
use super::replace_body;
use crate::plan::{Common, InvalidatesPlan, WriteThroughPlan};

/// The function with its body run first, then the keys and tags deleted if
/// it succeeded.
pub(super) fn write_invalidates_fn(function: ItemFn, plan: &InvalidatesPlan) -> TokenStream {
    let runtime = &plan.common.runtime;
    let function_name = &plan.common.function_name;
    let key_templates = plan.keys.iter().map(|key| &key.written);
    let tag_templates = plan.tags.iter().map(|tag| &tag.written);
    let keys = write_template_array(runtime, &plan.keys);
    let tags = write_template_array(runtime, &plan.tags);
    let mutation = Mutation {
        // The `static` in a block of its own, which the body can't see into.
        before: generated! {
            let __cache_mutation: &'static #runtime::__private::Mutation = {
                static __CACHE_MUTATION: #runtime::__private::Mutation = #runtime::__private::Mutation {
                    function: #function_name,
                    key_templates: &[#(#key_templates),*],
                    tag_templates: &[#(#tag_templates),*],
                };
                &__CACHE_MUTATION
            };
            let __cache_keys: #keys;
            let __cache_tags: #tags;
        },
        // The return type may hold `impl Trait`, which a `let` can't name.
        begin: TokenStream::new(),
        returned: annotation(&plan.common.return_type),
        after: "invalidate_after",
        arguments: generated!(__cache_mutation, &__cache_keys, &__cache_tags),
    };
    write_mutating_fn(function, &plan.common, mutation)
}

/// The function with its body run first, then the returned value stored
/// under the key if it succeeded.
pub(super) fn write_write_through_fn(function: ItemFn, plan: &WriteThroughPlan) -> TokenStream {
    let runtime = &plan.common.runtime;
    let mutation = Mutation {
        before: write_entry(&plan.common, &plan.entry),
        begin: generated! {
            let __cache_pending = #runtime::__private::begin_write(__cache_cache, __cache_key, &__cache_tags).await;
        },
        returned: plan.common.return_type.clone(),
        after: "write_through",
        arguments: generated!(__cache_site, __cache_pending),
    };
    write_mutating_fn(function, &plan.common, mutation)
}

/// What one attribute does around a body that changes data.
struct Mutation {
    /// The `static` describing the function, and the `let`s rendering the
    /// keys and tags: written before the body runs, since it may move the
    /// parameters they read.
    before: TokenStream,
    /// What runs once the cache is at hand, before the body.
    begin: TokenStream,
    /// The type of the returned value, as a `let` may name it.
    returned: Type,
    /// The runtime function called after the body.
    after: &'static str,
    /// Its arguments between the cache and the returned value.
    arguments: TokenStream,
}

/// ```text
/// before; cache; begin;
/// let __cache_after = {
///     let __cache_returned: ReturnType = async move { body }.await;
///     let __cache_shape = shape_of_val!(&__cache_returned);
///     match after(cache, arguments, __cache_shape, __cache_returned) {
///         Continue(after) => after,
///         Break(returned) => return returned,
///     }
/// };
/// __cache_after.await
/// ```
fn write_mutating_fn(function: ItemFn, common: &Common, mutation: Mutation) -> TokenStream {
    let Mutation {
        before,
        begin,
        returned,
        after,
        arguments,
    } = mutation;
    replace_body(function, |_, body| {
        let conditional_errors = write_conditional_errors(&common.conditional_errors);
        let cache = write_cache(common);
        let runtime = &common.runtime;
        let body = write_body_future(&returned, body, Inputs::Caller);
        let shape = write_shape(runtime, &returned, Of::Value);
        let shape_argument = shape_argument(&returned);
        let after = write_runtime_call(
            runtime,
            &returned,
            after,
            generated!(__cache_cache, #arguments, #shape_argument, __cache_returned),
            false,
        );
        let returned_value = generated!(let __cache_returned: #returned = #body.await;);
        // At the return type, as the runtime call is: the future it returns
        // carries the call's bounds, and an unmet one (a value that is not
        // `Serialize`) is reported wherever the future is named, once when
        // all of them share the span.
        let at = at_return_type(&returned);
        let then = quote_spanned! {at=>
            let __cache_after = {
                #returned_value
                #shape
                match #after {
                    ::core::ops::ControlFlow::Continue(__cache_after) => __cache_after,
                    ::core::ops::ControlFlow::Break(__cache_returned) => return __cache_returned,
                }
            };
            __cache_after.await
        };
        quote! {
            #conditional_errors
            #before
            #cache
            #begin
            #then
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expand::testing::{assert_contains, pin, rendered};
    use crate::expand::{invalidates, write_through};

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
        let user = rendered(quote!(__cache_key.literal("user:"); __cache_key.integer(id);));
        let org = rendered(quote!(__cache_key.literal("org:"); __cache_key.integer(org);));
        let pin = pin(quote!(Result<(), DbError>));
        let expected = quote! {
            async fn update_user(id: u64, org: u32, data: UserUpdate) -> Result<(), DbError> {
                let __cache_mutation: &'static ::cache_runtime::__private::Mutation = {
                    static __CACHE_MUTATION: ::cache_runtime::__private::Mutation = ::cache_runtime::__private::Mutation {
                        function: "update_user",
                        key_templates: &["user:<id>"],
                        tag_templates: &["org:<org>"],
                    };
                    &__CACHE_MUTATION
                };
                let __cache_keys: [::cache_runtime::__private::KeyBuf; 1] = [#user];
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 1] = [#org];
                let __cache_cache: &::cache_runtime::Cache = &::cache_runtime::__private::global_cache("update_user");
                let __cache_after = {
                    let __cache_returned: Result<(), DbError> = async move {
                        #pin
                        db::update_user(id, data).await
                    }
                    .await;
                    let __cache_shape = ::cache_runtime::__private::shape_of_val!(&__cache_returned);
                    match ::cache_runtime::__private::invalidate_after(
                        __cache_cache,
                        __cache_mutation,
                        &__cache_keys,
                        &__cache_tags,
                        __cache_shape,
                        __cache_returned
                    ) {
                        ::core::ops::ControlFlow::Continue(__cache_after) => __cache_after,
                        ::core::ops::ControlFlow::Break(__cache_returned) => return __cache_returned,
                    }
                };
                __cache_after.await
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
        assert_contains(
            &expanded,
            &[
                "pub async fn purge (& self , org : u32) {",
                "key_templates : & [] , tag_templates : & [\"org:<org>\" , \"all\"] ,",
                "let __cache_keys : [rt :: __private :: KeyBuf ; 0] = [] ;",
                "let __cache_tags : [rt :: __private :: KeyBuf ; 2] = [{",
                "let __cache_cache : & rt :: Cache = & (self . cache) ;",
                "let __cache_returned : () = async move {",
                "let __cache_unreachable : () = __cache_never () ;",
                "let __cache_shape = rt :: __private :: shape_of_val ! (& __cache_returned) ;",
                "match rt :: __private :: invalidate_after (__cache_cache , __cache_mutation , & __cache_keys , & __cache_tags , __cache_shape , __cache_returned) {",
                "__cache_after . await }",
            ],
        );
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
        assert_contains(
            &expanded,
            &[
                "async fn bump (n : u8) -> Option < impl Display > {",
                "let __cache_returned : Option < _ > = async move {",
                "let __cache_shape = :: cache_runtime :: __private :: shape_of_val ! (& __cache_returned) ;",
            ],
        );
    }

    /// `#[write_through]` differs from `#[invalidates]` (above) only in what
    /// it writes before the body and in the runtime function after it.
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
        let user = rendered(quote!(__cache_key.literal("user:"); __cache_key.integer(id);));
        let org = rendered(quote!(__cache_key.literal("org:"); __cache_key.integer(org);));
        let before = quote! {
            let __cache_site: &'static ::cache_runtime::__private::Site = {
                static __CACHE_SITE: ::cache_runtime::__private::Site = ::cache_runtime::__private::Site {
                    function: "rename_user", template: "user:<id>", ttl: ::core::time::Duration::from_secs(300),
                    jitter: ::core::option::Option::None, negative: ::core::option::Option::None,
                    l1: true, lock: false, early: ::core::option::Option::None, stale: ::core::option::Option::None,
                    tag_templates: &["org:<org>"],
                    index: ::cache_runtime::__private::SiteIndex::new(),
                };
                static __CACHE_CHECK: ::cache_runtime::__private::TemplateCheck = ::cache_runtime::__private::TemplateCheck::new();
                __CACHE_CHECK.run(&__CACHE_SITE);
                &__CACHE_SITE
            };
            let __cache_key = #user;
            let __cache_tags: [::cache_runtime::__private::KeyBuf; 1] = [#org];
        };
        let begin = quote! {
            let __cache_pending = ::cache_runtime::__private::begin_write(__cache_cache, __cache_key, &__cache_tags).await;
        };
        let after = quote! {
            let __cache_shape = ::cache_runtime::__private::shape_of_val!(&__cache_returned);
            match ::cache_runtime::__private::write_through(
                __cache_cache,
                __cache_site,
                __cache_pending,
                __cache_shape,
                __cache_returned
            ) {
                ::core::ops::ControlFlow::Continue(__cache_after) => __cache_after,
                ::core::ops::ControlFlow::Break(__cache_returned) => return __cache_returned,
            }
        };
        // The match ends the block `__cache_after` is bound to.
        let (before, begin, after) = (
            before.to_string(),
            begin.to_string(),
            format!("{after} }} ; __cache_after . await }}"),
        );
        assert_contains(
            &expanded,
            &[
                &before,
                &begin,
                "let __cache_returned : Result < User , DbError > =",
            ],
        );
        assert!(expanded.ends_with(&after), "{after}\nin\n{expanded}");
    }

    #[test]
    fn write_through_fills_jitter_and_stale() {
        let expanded = write_through(
            quote! { key = "user:<id>", ttl = 60, jitter = 0.25, stale = 30, cache = &CACHE },
            quote! {
                async fn save(id: u64, user: User) -> User {
                    user
                }
            },
        )
        .to_string();
        assert_contains(
            &expanded,
            &[
                "jitter : :: core :: option :: Option :: Some (0.25) ,",
                "stale : :: core :: option :: Option :: Some (:: core :: time :: Duration :: from_secs (30)) , tag_templates : & [] ,",
                "let __cache_tags : [:: cache_runtime :: __private :: KeyBuf ; 0] = [] ;",
                "let __cache_cache : & :: cache_runtime :: Cache = & (& CACHE) ;",
                "match :: cache_runtime :: __private :: write_through (__cache_cache , __cache_site , __cache_pending , __cache_shape , __cache_returned) {",
            ],
        );
    }
}
