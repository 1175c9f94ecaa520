//! `#[invalidates]` and `#[write_through]`: the body runs first, then, with
//! the value it returned, the runtime deletes or stores entries (it decides
//! from the return shape whether the body succeeded). One template writes
//! both; they differ only in what is rendered before the body, in what
//! `#[write_through]` asks the runtime before the body (what the key holds,
//! so its write cannot land over a newer mutation), and in the runtime
//! function called after it.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{ItemFn, Type};

use super::body::write_body_future;
use super::parts::{
    annotation, write_cache, write_entry, write_runtime_call, write_template_array,
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
        before: quote! {
            static __CACHE_INVALIDATION: #runtime::__private::Mutation = #runtime::__private::Mutation {
                function: #function_name,
                key_templates: &[#(#key_templates),*],
                tag_templates: &[#(#tag_templates),*],
            };
            let __cache_keys: #keys;
            let __cache_tags: #tags;
        },
        // The return type may hold `impl Trait`, which a `let` can't name.
        begin: TokenStream::new(),
        returned: annotation(&plan.common.return_type),
        after: "invalidate_after",
        arguments: quote!(&__CACHE_INVALIDATION, &__cache_keys, &__cache_tags),
    };
    write_mutating_fn(function, &plan.common, mutation)
}

/// The function with its body run first, then the returned value stored
/// under the key if it succeeded.
pub(super) fn write_write_through_fn(function: ItemFn, plan: &WriteThroughPlan) -> TokenStream {
    let runtime = &plan.common.runtime;
    let mutation = Mutation {
        before: write_entry("__CACHE_WRITE", &plan.common, &plan.entry, None),
        begin: quote! {
            let __cache_pending = #runtime::__private::begin_write(__cache_cache, __cache_key, &__cache_tags).await;
        },
        returned: plan.common.return_type.clone(),
        after: "write_through",
        arguments: quote!(&__CACHE_WRITE, __cache_pending),
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

/// `before; cache; begin; let returned = async move { body }.await;
/// after(cache, arguments, &returned).await; returned`.
fn write_mutating_fn(function: ItemFn, common: &Common, mutation: Mutation) -> TokenStream {
    let Mutation {
        before,
        begin,
        returned,
        after,
        arguments,
    } = mutation;
    replace_body(function, |_, body| {
        let cache = write_cache(&common.runtime, common.cache.as_ref());
        let body = write_body_future(&returned, body, None);
        let after = write_runtime_call(
            &common.runtime,
            &returned,
            common.shape,
            after,
            None,
            quote!(__cache_cache, #arguments, &__cache_returned),
        );
        quote! {
            #before
            #cache
            #begin
            let __cache_returned: #returned = #body.await;
            #after;
            __cache_returned
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
        let user = rendered(quote!(__cache_key.literal("user:"); __cache_key.arg(&id);));
        let org = rendered(quote!(__cache_key.literal("org:"); __cache_key.arg(&org);));
        let pin = pin(quote!(Result<(), DbError>));
        let expected = quote! {
            async fn update_user(id: u64, org: u32, data: UserUpdate) -> Result<(), DbError> {
                static __CACHE_INVALIDATION: ::cache_runtime::__private::Mutation = ::cache_runtime::__private::Mutation {
                    function: "update_user",
                    key_templates: &["user:<id>"],
                    tag_templates: &["org:<org>"],
                };
                let __cache_keys: [::cache_runtime::__private::KeyBuf; 1] = [#user];
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 1] = [#org];
                let __cache_cache: &::cache_runtime::Cache = &::cache_runtime::Cache::global();
                let __cache_returned: Result<(), DbError> = async move {
                    #pin
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
        assert_contains(
            &expanded,
            &[
                "pub async fn purge (& self , org : u32) {",
                "key_templates : & [] , tag_templates : & [\"org:<org>\" , \"all\"] ,",
                "let __cache_keys : [rt :: __private :: KeyBuf ; 0] = [] ;",
                "let __cache_tags : [rt :: __private :: KeyBuf ; 2] = [{",
                "let __cache_cache : & rt :: Cache = & (self . cache) ;",
                "let __cache_returned : () = async move {",
                "let __cache_unreachable : () = loop { } ;",
                "rt :: __private :: invalidate_after :: < () , rt :: __private :: shape :: Plain > (",
                ". await ; __cache_returned }",
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
                "invalidate_after :: < Option < _ > , :: cache_runtime :: __private :: shape :: Option > (",
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
        let user = rendered(quote!(__cache_key.literal("user:"); __cache_key.arg(&id);));
        let org = rendered(quote!(__cache_key.literal("org:"); __cache_key.arg(&org);));
        let before = quote! {
            static __CACHE_WRITE: ::cache_runtime::__private::Site = ::cache_runtime::__private::Site {
                function: "rename_user", template: "user:<id>", ttl: ::core::time::Duration::from_secs(300),
                jitter: ::core::option::Option::None, negative: ::core::option::Option::None,
                l1: true, lock: false, early: ::core::option::Option::None, stale: ::core::option::Option::None,
                tag_templates: &["org:<org>"],
            };
            static __CACHE_WRITE_CHECK: ::cache_runtime::__private::TemplateCheck = ::cache_runtime::__private::TemplateCheck::new();
            __CACHE_WRITE_CHECK.run(&__CACHE_WRITE);
            let __cache_key = #user;
            let __cache_tags: [::cache_runtime::__private::KeyBuf; 1] = [#org];
        };
        let begin = quote! {
            let __cache_pending = ::cache_runtime::__private::begin_write(__cache_cache, __cache_key, &__cache_tags).await;
        };
        let after = quote! {
            ::cache_runtime::__private::write_through::<Result<User, DbError>, ::cache_runtime::__private::shape::Result>(
                __cache_cache, &__CACHE_WRITE, __cache_pending, &__cache_returned
            ).await;
            __cache_returned
        };
        let (before, begin, after) = (before.to_string(), begin.to_string(), format!("{after} }}"));
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
                "write_through :: < User , :: cache_runtime :: __private :: shape :: Plain > (",
            ],
        );
    }
}
