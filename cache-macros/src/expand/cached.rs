//! `#[cached]`: the body becomes the loader passed to the runtime's
//! `get_or_load`, or, when it also runs in the background (`early`,
//! `stale`), a closure that copies the receiver and the parameters for each
//! run, passed to `get_or_refresh`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::visit_mut::VisitMut;
use syn::{Block, FnArg, ItemFn, Pat, Signature, Type};

use super::batch::write_batch_body;
use super::body::{Inputs, write_body_future};
use super::parts::{
    InferImplTrait, Of, first_and_last_span, shape_argument, spanned_call, write_cache,
    write_conditional_errors, write_negative_check, write_runtime_call, write_shape,
    write_site_and_key, write_tags,
};
use super::replace_body;
use crate::plan::{CachedPlan, Common, Passing, Refresh, RefreshParameter};

/// The function with its attributes and signature unchanged (but for `mut`
/// on parameters with `early` / `stale`, which moves to the body's copies)
/// and its body replaced by a call to the runtime:
/// `get_or_load(..., __cache_shape, ..., async move { body }).await`, or
/// `get_or_refresh(..., __cache_shape, ..., || { copies; async move { body }
/// }).await`, where `__cache_shape` is the marker the compiler picks for
/// the return type (`__private::shape_of!(ReturnType)`).
///
/// With L1 and without `early`, a fresh L1 entry is returned first
/// (`if let Some(hit) = l1_hit(..) { return hit; }`), before the tags are
/// rendered and the loader is built: a hit needs neither.
///
/// The call is spanned over the return type: when the value type lacks a
/// bound the runtime needs (`Serialize`, `Clone`, ...), every error lands on
/// the user's return type instead of on the attribute. The body keeps its
/// own spans.
///
/// With `batch(id in ids)`, the body is written by `batch.rs` instead.
pub(super) fn write_cached_fn(function: ItemFn, plan: &CachedPlan) -> TokenStream {
    if let Some(batch) = &plan.batch {
        return replace_body(function, |sig, body| {
            write_batch_body(plan, batch, sig, body)
        });
    }
    let Common {
        runtime,
        return_type,
        conditional_errors,
        ..
    } = &plan.common;
    replace_body(function, |sig, body| {
        let conditional_errors = write_conditional_errors(conditional_errors);
        let site_and_key = write_site_and_key(&plan.common, &plan.entry, Some(plan));
        let tags = write_tags(runtime, &plan.entry);
        let cache = write_cache(&plan.common);
        let shape = write_shape(runtime, return_type, Of::Type);
        let negative = plan
            .negative
            .as_ref()
            .map(|negative| write_negative_check(runtime, return_type, negative.option));
        let (runtime_function, loader) = match &plan.refresh {
            // Without L1 every call takes the miss path: the runtime then
            // runs it inline instead of boxing it.
            None => (
                if plan.l1 {
                    "get_or_load"
                } else {
                    "get_or_load_l2"
                },
                write_body_future(return_type, body, Inputs::Caller),
            ),
            Some(refresh) => {
                // The parameters are only read now (copied for each run of
                // the body), so a `mut` stays on the copy, not on the
                // parameter, where it would warn as unneeded.
                remove_mut_from_parameters(sig, |_| true);
                let factory = write_refresh_factory(return_type, refresh, body);
                ("get_or_refresh", factory)
            }
        };
        let shape_argument = shape_argument(return_type);
        let l1_hit = (plan.l1 && plan.early.is_none()).then(|| {
            let hit = write_runtime_call(
                runtime,
                return_type,
                "l1_hit",
                generated!(__cache_cache, __cache_site, #shape_argument, &__cache_key),
                false,
            );
            generated! {
                if let ::core::option::Option::Some(__cache_hit) = #hit {
                    return __cache_hit;
                }
            }
        });
        let call = write_runtime_call(
            runtime,
            return_type,
            runtime_function,
            generated!(__cache_cache, __cache_site, #shape_argument, __cache_key, &__cache_tags, #loader),
            true,
        );
        quote! {
            #conditional_errors
            #site_and_key
            #cache
            #shape
            #negative
            #l1_hit
            #tags
            #call
        }
    })
}

/// `|| { copies; async move { body } }`: the runtime calls the closure for
/// each run of the body (on a miss, or to refresh in a spawned task), never
/// on a hit. Each call copies the receiver and the parameters, so the future
/// owns everything it uses (`Send + 'static`), and the body reads `self` as
/// `__cache_self`.
///
/// The copies are made in a block of their own, with the helpers that state
/// what a copy needs, so that the body (in the future, after that block)
/// can't name the helpers.
fn write_refresh_factory(return_type: &Type, refresh: &Refresh, body: &Block) -> TokenStream {
    let mut copies = Copies::default();
    if let Some(receiver) = &refresh.receiver {
        // Spanned at `self`, so "`Repo: Clone` is not satisfied" points at
        // the receiver.
        let span = receiver.self_token.span;
        let copy = spanned_call(
            quote!(__cache_shared_copy::<_>),
            spanned_call(
                quote!(::core::clone::Clone::clone),
                receiver.self_token.to_token_stream(),
                span,
                span,
            ),
            span,
            span,
        );
        copies.shared = true;
        copies.names.push(generated!(__cache_self));
        copies.values.push(copy);
        // The body's `self` has the receiver's type: `&Self`, or
        // `&Arc<Self>` for `self: &Arc<Self>`.
        let referent = &receiver.referent;
        copies
            .borrows
            .extend(generated!(let __cache_self: &#referent = &__cache_self;));
    }
    for parameter in &refresh.parameters {
        write_parameter_copy(parameter, refresh.option, &mut copies);
    }
    let bounds = copies.bounds(refresh.option);
    let Copies {
        names,
        values,
        gated,
        touches,
        borrows,
        ..
    } = copies;
    let load = write_body_future(return_type, body, Inputs::Copies(borrows));
    let body_span = body.brace_token.span.join();
    let copied = (!names.is_empty()).then(|| {
        generated! {
            let (#(#names,)*) = {
                #bounds
                (#(#values,)*)
            };
        }
    });
    quote_spanned!(body_span=> || { #copied #gated #touches #load })
}

/// What the factory closure writes for the receiver and the parameters.
#[derive(Default)]
struct Copies {
    /// The copies made together in one block: the names they are bound to
    /// (`mut id`, `__cache_owned_name`), and the expressions.
    names: Vec<TokenStream>,
    values: Vec<TokenStream>,
    /// Copies of parameters under a `#[cfg]`, each a statement of its own
    /// under that `#[cfg]` (with its own helper).
    gated: TokenStream,
    /// `let _ = &id;` for each parameter copied by value, in the closure: a
    /// parameter only the key reads is not the user's unused variable.
    touches: TokenStream,
    /// What turns copies back into the parameters' types, inside the
    /// future (`let name: &str = ..`), each followed by its touch.
    borrows: TokenStream,
    /// Which helpers the block uses.
    by_value: bool,
    shared: bool,
}

impl Copies {
    /// The helpers the copies use (only those: an unused one would be dead
    /// code). The runtime requires the whole future to be `Send + 'static`;
    /// these state it for each copy, so that a copy that is not is reported
    /// on its parameter rather than on the whole function, with a note
    /// pointing at the option that asked for background runs. A copy the
    /// future borrows (`&self`, `&T`) is also held as a reference across
    /// `.await`s: `Sync`.
    fn bounds(&self, option: Span) -> TokenStream {
        let mut bounds = TokenStream::new();
        if self.by_value {
            bounds.extend(background_copy_helper(option));
        }
        if self.shared {
            bounds.extend(shared_copy_helper(option));
        }
        bounds
    }
}

fn background_copy_helper(option: Span) -> TokenStream {
    quote_spanned! {option=>
        fn __cache_background_copy<T: ::core::marker::Send + 'static>(value: T) -> T {
            value
        }
    }
}

fn shared_copy_helper(option: Span) -> TokenStream {
    quote_spanned! {option=>
        fn __cache_shared_copy<T: ::core::marker::Send + ::core::marker::Sync + 'static>(value: T) -> T {
            value
        }
    }
}

/// The copy of one parameter, and what (if anything) turns it back into
/// the parameter's type in the future.
///
/// The copy is spanned over the parameter: each call and its argument start
/// at the parameter's first token and end at its last, and rustc joins the
/// two, so a type that is not `Clone`, `Send` or `'static` is reported on the
/// parameter.
fn write_parameter_copy(parameter: &RefreshParameter, option: Span, copies: &mut Copies) {
    // From the pattern to the type, leaving out attributes on the parameter.
    let syn::PatType { pat, ty, .. } = &parameter.written;
    let (first, last) = first_and_last_span(quote!(#pat #ty));
    let ident = &parameter.ident;
    let mutability = &parameter.mutability;
    let cfg = &parameter.cfg;
    // `&ident` / `&*ident`, from the first token to the last.
    let mut ident_at_last = ident.clone();
    ident_at_last.set_span(last);
    let (name, helper, value) = match &parameter.passing {
        Passing::ByValue => {
            let clone = spanned_call(
                quote!(::core::clone::Clone::clone),
                quote_spanned!(first=> & #ident_at_last),
                first,
                last,
            );
            let copy = spanned_call(quote!(__cache_background_copy::<_>), clone, first, last);
            copies.touches.extend(generated!(#cfg let _ = &#ident;));
            (quote!(#mutability #ident), Helper::ByValue, copy)
        }
        Passing::Borrowed(referent) => {
            let owned = format_ident!("__cache_owned_{}", ident.unraw(), span = Span::mixed_site());
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
            copies.borrows.extend(generated! {
                #cfg let #mutability #ident: &#referent = ::core::borrow::Borrow::borrow(&#owned);
                #cfg let _ = &#ident;
            });
            (owned.into_token_stream(), Helper::Shared, copy)
        }
    };
    if cfg.is_empty() {
        match helper {
            Helper::ByValue => copies.by_value = true,
            Helper::Shared => copies.shared = true,
        }
        copies.names.push(name);
        copies.values.push(value);
    } else {
        let helper = match helper {
            Helper::ByValue => background_copy_helper(option),
            Helper::Shared => shared_copy_helper(option),
        };
        copies
            .gated
            .extend(generated!(#cfg let #name = { #helper #value };));
    }
}

enum Helper {
    ByValue,
    Shared,
}

/// Drops `mut` from the signature's parameters named as `which` says (not
/// from the receiver).
pub(super) fn remove_mut_from_parameters(
    signature: &mut Signature,
    which: impl Fn(&syn::Ident) -> bool,
) {
    for input in &mut signature.inputs {
        if let FnArg::Typed(typed) = input
            && let Pat::Ident(binding) = &mut *typed.pat
            && which(&binding.ident)
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
            __cache_key.integer(org);
            __cache_key.literal(":user:");
            __cache_key.integer(id);
        });
        let org = rendered(quote!(__cache_key.literal("org:"); __cache_key.integer(org);));
        let all_users = rendered(quote!(__cache_key.literal("all-users");));
        let pin = pin(quote!(Result<Option<User>, DbError>));
        let expected = quote! {
            #[doc = "Finds a user."]
            pub async fn find(&self, org: u32, id: u64, filter: &Filter) -> Result<Option<User>, DbError> {
                let __cache_site: &'static ::cache_runtime::__private::Site = {
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
                        index: ::cache_runtime::__private::SiteIndex::new(),
                    };
                    static __CACHE_CHECK: ::cache_runtime::__private::TemplateCheck = ::cache_runtime::__private::TemplateCheck::new();
                    __CACHE_CHECK.run(&__CACHE_SITE);
                    &__CACHE_SITE
                };
                let __cache_key = #key;
                let __cache_cache: &::cache_runtime::Cache = &(self.cache);
                let __cache_shape = ::cache_runtime::__private::shape_of!(Result<Option<User>, DbError>);
                ::cache_runtime::__private::shape::negative::<Result<Option<User>, DbError>, _>(__cache_shape);
                if let ::core::option::Option::Some(__cache_hit) = ::cache_runtime::__private::l1_hit(
                    __cache_cache,
                    __cache_site,
                    __cache_shape,
                    &__cache_key
                ) {
                    return __cache_hit;
                }
                let __cache_tags: [::cache_runtime::__private::KeyBuf; 2] = [#org, #all_users];
                ::cache_runtime::__private::get_or_load(
                    __cache_cache,
                    __cache_site,
                    __cache_shape,
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
                "let __cache_cache : & :: cache_runtime :: Cache = & :: cache_runtime :: __private :: global_cache (\"load\") ;",
                "let __cache_shape = :: cache_runtime :: __private :: shape_of ! (User) ;",
                ":: cache_runtime :: __private :: get_or_load_l2 (__cache_cache , __cache_site , __cache_shape , __cache_key",
            ],
        );
        // Without `negative`, nothing checks for a `None`.
        assert!(!expanded.contains("shape :: negative"), "{expanded}");
        // Without L1 there is no hit to return first.
        assert!(!expanded.contains("l1_hit"), "{expanded}");
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
                "my :: rt :: __private :: shape_of ! (std :: io :: Result < u8 >)",
                "& my :: rt :: __private :: global_cache (\"load\")",
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
                "l1 : true , lock : true , early : :: core :: option :: Option :: None , stale : :: core :: option :: Option :: None , tag_templates : & [] , index : :: cache_runtime :: __private :: SiteIndex :: new () , } ;",
                // `lock` alone needs no background runs.
                ":: cache_runtime :: __private :: get_or_load (__cache_cache , __cache_site , __cache_shape , __cache_key , & __cache_tags , async move {",
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
                &[site, ":: cache_runtime :: __private :: get_or_refresh ("],
            );
            assert!(!expanded.contains("get_or_load"), "{expanded}");
            // Declining a hit that draws an early refresh and drawing again
            // on the whole path would make early refreshes rarer.
            assert!(!expanded.contains("l1_hit"), "{expanded}");
        }
        // `stale` alone: fresh hits return first; stale ones take the
        // whole path, which starts the refresh.
        let expanded = expand(quote!(key = "n:<n>", ttl = 5, stale = 30), function.clone());
        assert_contains(
            &expanded,
            &[
                "if let :: core :: option :: Option :: Some (__cache_hit) = :: cache_runtime :: __private :: l1_hit (__cache_cache , __cache_site , __cache_shape , & __cache_key) { return __cache_hit ; }",
                ":: cache_runtime :: __private :: get_or_refresh (",
            ],
        );
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
            ::cache_runtime::__private::get_or_refresh(
                __cache_cache,
                __cache_site,
                __cache_shape,
                __cache_key,
                &__cache_tags,
                || {
                    let (__cache_self, org, mut id, __cache_owned_name, __cache_owned_tags,) = {
                        fn __cache_background_copy<T: ::core::marker::Send + 'static>(value: T) -> T { value }
                        fn __cache_shared_copy<T: ::core::marker::Send + ::core::marker::Sync + 'static>(value: T) -> T { value }
                        (
                            __cache_shared_copy::<_>(::core::clone::Clone::clone(self)),
                            __cache_background_copy::<_>(::core::clone::Clone::clone(&org)),
                            __cache_background_copy::<_>(::core::clone::Clone::clone(&id)),
                            __cache_shared_copy::<_>(::std::borrow::ToOwned::to_owned(&*name)),
                            __cache_shared_copy::<_>(::std::borrow::ToOwned::to_owned(&*tags)),
                        )
                    };
                    let _ = &org;
                    let _ = &id;
                    async move {
                        let __cache_self: &Self = &__cache_self;
                        let name: &str = ::core::borrow::Borrow::borrow(&__cache_owned_name);
                        let _ = &name;
                        let tags: &[_] = ::core::borrow::Borrow::borrow(&__cache_owned_tags);
                        let _ = &tags;
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
    fn generic_parameters_render_their_value_or_their_type_name() {
        let expanded = expand(
            quote!(key = "s:<N>:<T>:<id>", ttl = 5),
            quote!(
                async fn scaled<const N: u64, T: Tenant>(id: u64) -> u64 {
                    id * N
                }
            ),
        );
        let key = rendered(quote! {
            __cache_key.literal("s:");
            __cache_key.arg(&N);
            __cache_key.literal(":");
            __cache_key.arg(::core::any::type_name::<T>());
            __cache_key.literal(":");
            __cache_key.integer(id);
        });
        assert_contains(&expanded, &[&format!("let __cache_key = {key} ;")]);
    }

    #[test]
    fn parameters_under_cfg_are_rendered_and_copied_under_it() {
        let expanded = expand(
            quote!(key = "u:<tenant>:<id>", ttl = 5, stale = 5),
            quote!(
                async fn load(
                    #[cfg(feature = "tenants")] tenant: u32,
                    id: u64,
                    #[cfg_attr(unix, cfg(test))] extra: u8,
                ) -> u64 {
                    id
                }
            ),
        );
        assert_contains(
            &expanded,
            &[
                // `extra` is required in the key only where it exists.
                "-> u64 { # [cfg_attr (unix , cfg (test))] :: core :: compile_error ! (\"parameter `extra` is not in the key; add `<extra>` to the key or `skip(extra)`: forgetting one serves one user's data to another\") ; let __cache_site",
                "__cache_key . literal (\"u:\") ; # [cfg (feature = \"tenants\")] __cache_key . integer (tenant) ; __cache_key . literal (\":\") ;",
                "let (id ,) = {",
                "# [cfg (feature = \"tenants\")] let tenant = { fn __cache_background_copy < T : :: core :: marker :: Send + 'static > (value : T) -> T { value } __cache_background_copy :: < _ > (:: core :: clone :: Clone :: clone (& tenant)) } ;",
                "# [cfg (feature = \"tenants\")] let _ = & tenant ; let _ = & id ;",
            ],
        );
    }

    #[test]
    fn the_receiver_copy_is_borrowed_as_the_receiver_was_written() {
        let expanded = expand(
            quote!(key = "u:<id>", ttl = 5, early),
            quote!(
                async fn load(self: &Arc<Self>, id: u64) -> u64 {
                    self.get(id)
                }
            ),
        );
        assert_contains(
            &expanded,
            &[
                "let (__cache_self , id ,) = {",
                "__cache_shared_copy :: < _ > (:: core :: clone :: Clone :: clone (self)) ,",
                "async move { let __cache_self : & Arc < Self > = & __cache_self ;",
            ],
        );
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
                "|| { let (id ,) = { fn __cache_background_copy < T : :: core :: marker :: Send + 'static > (value : T) -> T { value } (__cache_background_copy :: < _ > (:: core :: clone :: Clone :: clone (& id)) ,) } ; let _ = & id ; async move {",
            ],
        );
    }
}
