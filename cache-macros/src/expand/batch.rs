//! `#[cached(batch(id in ids))]`: one key rendered per id, and the body
//! becomes the loader of the missing ids, passed to the runtime's
//! `get_many_or_load`.

use proc_macro2::{Ident, TokenStream};
use quote::{quote, quote_spanned};
use syn::{Block, Signature, Type};

use super::body::{Inputs, write_body_future};
use super::cached::remove_mut_from_parameters;
use super::parts::{
    at_return_type, first_and_last_span, spanned_call, write_cache, write_conditional_errors,
    write_runtime_call, write_site, write_template,
};
use crate::plan::{Batch, BatchForm, CachedPlan, Common};

/// The body of a batch function:
///
/// ```ignore
/// let __cache_site = { static ...; &__CACHE_SITE };
/// let mut __cache_requested: Vec<(K, KeyBuf)> = Vec::with_capacity(ids.len());
/// for id in ids {
///     let __cache_key = { /* the key, with <id> */ };
///     __cache_requested.push((id, __cache_key)); // `Clone::clone(id)` for a `&[K]`
/// }
/// let __cache_cache: &Cache = ...;
/// get_many_or_load(__cache_cache, __cache_site, __cache_requested, move |__cache_missing: Vec<K>| async move {
///     let ids: Vec<K> = __cache_missing; // or `let ids: &[K] = &__cache_missing;`
///     body
/// })
/// .await
/// ```
///
/// The loader is a `move` closure: it takes what the body uses (the
/// receiver, the other parameters) as the non-batch future does, and its
/// future owns the missing ids. The call is spanned at the return type, so a
/// return type that is not a `HashMap<K, V>` or `Result<HashMap<K, V>, E>`
/// (the runtime's `Batched`) is reported there.
pub(super) fn write_batch_body(
    plan: &CachedPlan,
    batch: &Batch,
    sig: &mut Signature,
    body: &Block,
) -> TokenStream {
    let Common {
        runtime,
        return_type,
        conditional_errors,
        ..
    } = &plan.common;
    // The parameter is only read now (its ids rendered); its `mut` goes to
    // the body's rebinding.
    remove_mut_from_parameters(sig, |name| *name == batch.parameter);
    let conditional_errors = write_conditional_errors(conditional_errors);
    let site = write_site(&plan.common, &plan.entry, Some(plan));
    let requested_ids = write_requested(plan, batch);
    let cache = write_cache(&plan.common);
    let loader = write_loader(return_type, batch, body);
    // The ids' type is the return type's (`Batched::Key`): the argument
    // holding them is spanned there too, so a return type that is not
    // `Batched` is reported once, on itself.
    let requested = Ident::new("__cache_requested", at_return_type(return_type));
    let call = write_runtime_call(
        runtime,
        return_type,
        "get_many_or_load",
        generated!(__cache_cache, __cache_site, #requested, #loader),
        true,
    );
    quote! {
        #conditional_errors
        #site
        #requested_ids
        #cache
        #call
    }
}

/// Each id with its key, in the caller's order. A `Vec<K>` is consumed,
/// each id moved in after its key is rendered; a `&[K]`'s ids are cloned,
/// spanned over `K` in the signature, so "`K: Clone` is not satisfied"
/// points there.
fn write_requested(plan: &CachedPlan, batch: &Batch) -> TokenStream {
    let runtime = &plan.common.runtime;
    let Batch {
        element,
        parameter,
        element_type,
        form,
        ..
    } = batch;
    let key = write_template(runtime, &plan.entry.key);
    let id = match form {
        BatchForm::Owned => quote!(#element),
        BatchForm::Borrowed => {
            let (first, last) = first_and_last_span(element_type);
            let mut element_at_type = element.clone();
            element_at_type.set_span(last.resolved_at(element.span()));
            spanned_call(
                quote!(::core::clone::Clone::clone),
                quote!(#element_at_type),
                first,
                last,
            )
        }
    };
    generated! {
        let mut __cache_requested: ::std::vec::Vec<(#element_type, #runtime::__private::KeyBuf)> =
            ::std::vec::Vec::with_capacity(#parameter.len());
        for #element in #parameter {
            let __cache_key = #key;
            __cache_requested.push((#id, __cache_key));
        }
    }
}

/// `move |__cache_missing: Vec<K>| async move { rebind; body }`: the body
/// reads its parameter as written (a `Vec<K>` or a `&[K]`), holding only
/// the missing ids.
fn write_loader(return_type: &Type, batch: &Batch, body: &Block) -> TokenStream {
    let Batch {
        parameter,
        mutability,
        element_type,
        form,
        ..
    } = batch;
    let rebind = match form {
        BatchForm::Owned => generated! {
            let #mutability #parameter: ::std::vec::Vec<#element_type> = __cache_missing;
        },
        BatchForm::Borrowed => generated! {
            let #mutability #parameter: &[#element_type] = &__cache_missing;
        },
    };
    // A body that ignores which ids are missing is the user's choice, not
    // an unused variable of the expansion's making.
    let touch = generated!(let _ = &#parameter;);
    let future = write_body_future(return_type, body, Inputs::Rebound(quote!(#rebind #touch)));
    // Spanned at the return type, with the call: ids of another type than
    // the map's keys are reported there, not on the attribute.
    let at = at_return_type(return_type);
    quote_spanned!(at=> move |__cache_missing: ::std::vec::Vec<#element_type>| #future)
}

#[cfg(test)]
mod tests {
    use proc_macro2::TokenStream;
    use quote::quote;

    use crate::expand::testing::{assert_contains, pin, rendered};

    fn expand(args: TokenStream, item: TokenStream) -> String {
        crate::expand::cached(args, item).to_string()
    }

    #[test]
    fn writes_the_documented_expansion() {
        let expanded = expand(
            quote!(key = "user:<id>", ttl = 300, negative = 60, batch(id in ids), skip(db)),
            quote! {
                /// Loads users.
                pub async fn get_users(db: &Db, mut ids: Vec<u64>) -> Result<HashMap<u64, User>, DbError> {
                    ids.sort();
                    db.users(&ids).await
                }
            },
        );
        let key = rendered(quote! {
            __cache_key.literal("user:");
            __cache_key.arg(&id);
        });
        let pin = pin(quote!(Result<HashMap<u64, User>, DbError>));
        let expected = quote! {
            #[doc = r" Loads users."]
            pub async fn get_users(db: &Db, ids: Vec<u64>) -> Result<HashMap<u64, User>, DbError> {
                let __cache_site: &'static ::cache_runtime::__private::Site = {
                    static __CACHE_SITE: ::cache_runtime::__private::Site = ::cache_runtime::__private::Site {
                        function: "get_users",
                        template: "user:<id>",
                        ttl: ::core::time::Duration::from_secs(300),
                        jitter: ::core::option::Option::None,
                        negative: ::core::option::Option::Some(::core::time::Duration::from_secs(60)),
                        l1: true,
                        lock: false,
                        early: ::core::option::Option::None,
                        stale: ::core::option::Option::None,
                        tag_templates: &[],
                        index: ::cache_runtime::__private::SiteIndex::new(),
                    };
                    static __CACHE_CHECK: ::cache_runtime::__private::TemplateCheck = ::cache_runtime::__private::TemplateCheck::new();
                    __CACHE_CHECK.run(&__CACHE_SITE);
                    &__CACHE_SITE
                };
                let mut __cache_requested: ::std::vec::Vec<(u64, ::cache_runtime::__private::KeyBuf)> =
                    ::std::vec::Vec::with_capacity(ids.len());
                for id in ids {
                    let __cache_key = #key;
                    __cache_requested.push((id, __cache_key));
                }
                let __cache_cache: &::cache_runtime::Cache = &::cache_runtime::__private::global_cache("get_users");
                ::cache_runtime::__private::get_many_or_load(
                    __cache_cache,
                    __cache_site,
                    __cache_requested,
                    move |__cache_missing: ::std::vec::Vec<u64>| async move {
                        let mut ids: ::std::vec::Vec<u64> = __cache_missing;
                        let _ = &ids;
                        #pin
                        ids.sort();
                        db.users(&ids).await
                    }
                )
                .await
            }
        };
        assert_eq!(expanded, expected.to_string());
    }

    #[test]
    fn a_slice_parameter_is_rebound_to_a_slice_of_the_missing_ids() {
        let expanded = expand(
            quote!(key = "org:<org>:user:<user.id>", ttl = 5, l1 = false, jitter = 0.1, batch(user in users), cache = self.cache),
            quote! {
                async fn find(&self, org: u32, users: &'a [UserRef]) -> HashMap<UserRef, User> {
                    self.db.find(org, users).await
                }
            },
        );
        let key = rendered(quote! {
            __cache_key.literal("org:");
            __cache_key.integer(org);
            __cache_key.literal(":user:");
            __cache_key.arg(&user.id);
        });
        assert_contains(
            &expanded,
            &[
                "async fn find (& self , org : u32 , users : & 'a [UserRef]) -> HashMap < UserRef , User > {",
                "l1 : false",
                "jitter : :: core :: option :: Option :: Some (0.1)",
                "let mut __cache_requested : :: std :: vec :: Vec < (UserRef , :: cache_runtime :: __private :: KeyBuf) > = :: std :: vec :: Vec :: with_capacity (users . len ()) ;",
                &format!(
                    "for user in users {{ let __cache_key = {key} ; __cache_requested . push ((:: core :: clone :: Clone :: clone (user) , __cache_key)) ; }}"
                ),
                "let __cache_cache : & :: cache_runtime :: Cache = & (self . cache) ;",
                "move | __cache_missing : :: std :: vec :: Vec < UserRef > | async move { let users : & [UserRef] = & __cache_missing ; let _ = & users ;",
                // The body's `self` is the caller's.
                "self . db . find (org , users) . await }) . await }",
            ],
        );
        // No `negative` check on the return type: a batch caches "not
        // found" for the ids the body left out.
        assert!(!expanded.contains("shape"), "{expanded}");
    }
}
