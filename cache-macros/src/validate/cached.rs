//! `#[cached]`: the return type is a value to cache, `negative`, `lock`,
//! `early` and `l1` are its own, `early` and `stale` run the body in the
//! background, and every parameter is in the key or skipped.

use std::collections::HashSet;

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{FnArg, Pat, ReturnType, Signature, Type};

use super::batch;
use super::front::{Front, Unkeyed, lifetime, magnitude};
use super::parameters::{Parameters, cfg_of, name_of};
use super::types::{is_unit, mentions_impl_trait, referent};
use super::{Report, Stage};
use crate::args::{Args, MacroKind, Number, Setting};
use crate::errors::Errors;
use crate::key::KeyTemplate;
use crate::plan::{CachedPlan, Negative, Passing, ReceiverCopy, Refresh, RefreshParameter};

/// `#[cached]`'s own rules, checked after the front's; the plan unless a
/// part of it is missing (which was reported).
pub(super) fn plan(args: &Args, front: Front, report: &mut Report) -> Option<CachedPlan> {
    let signature = front.parameters.signature;
    let returned = returned_value(signature, report.stage(Stage::Return));
    // Whether the return type has a `None` is the compiler's to say (it
    // sees through aliases): the expansion checks it on `negative`.
    let negative = args.negative.as_ref().and_then(|negative| {
        let stage = report.stage(Stage::Negative);
        Some(Negative {
            lifetime: lifetime("negative", negative, &front.parameters, stage)?,
            option: negative.name,
        })
    });
    let early = args
        .early
        .as_ref()
        .and_then(|early| early_beta(early, report.stage(Stage::Early)));
    // A batch runs its body in the call only: `early` and `stale` are
    // refused with it (by `batch::plan`), not checked for background runs.
    let refresh = if args.batch.is_some() {
        None
    } else {
        background_runs(args, signature, report.stage(Stage::Background))
    };
    let batch = args.batch.as_ref().and_then(|batch| {
        let key = front.keys.first().zip(args.keys.first());
        let key = key.map(|(template, written)| (template, written.value.span()));
        batch::plan(args, batch, &front.parameters, key, report)
    });
    // The batch's parameter is keyed by its elements (`<id>`), which
    // `batch::plan` checks. When the batch did not parse, or names no
    // parameter (reported), which parameter it meant is unknown: the rule
    // that every parameter is keyed is not checked rather than reporting
    // that one as missing from the key.
    let batch_parameter = args
        .batch
        .as_ref()
        .map(|batch| name_of(&batch.value.parameter));
    let batch_parameter_unknown = args.mentions("batch")
        || batch_parameter.as_ref().is_some_and(|name| {
            !front
                .parameters
                .bindings
                .iter()
                .any(|binding| binding.name == *name)
        });

    let conditional_errors = front.check_keyed(
        MacroKind::Cached,
        args.skip.as_ref(),
        report,
        |key, skipped, unkeyed| {
            if batch_parameter_unknown {
                return;
            }
            check_every_parameter_is_keyed(
                key,
                &front.tags,
                skipped,
                &front.parameters,
                batch_parameter.as_deref(),
                unkeyed,
            );
        },
    );

    Some(CachedPlan {
        common: front.common(returned?, conditional_errors),
        negative,
        l1: args.l1.as_ref().is_none_or(|l1| l1.value.value),
        lock: args.lock.is_some(),
        early,
        refresh,
        batch,
        entry: front.entry()?,
    })
}

/// The return type; `None` (with an error) for `()` and `impl Trait`.
fn returned_value(signature: &Signature, errors: &mut Errors) -> Option<Type> {
    match &signature.output {
        ReturnType::Type(_, return_type) if mentions_impl_trait(return_type) => {
            errors.on(
                return_type,
                "`#[cached]` needs a concrete return type, not `impl Trait`: cached values are deserialized into it",
            );
            None
        }
        ReturnType::Type(_, return_type) if !is_unit(return_type) => Some((**return_type).clone()),
        ReturnType::Type(_, unit) => {
            errors.on(
                unit,
                "a `#[cached]` function must return a value; `()` leaves nothing to cache",
            );
            None
        }
        ReturnType::Default => {
            errors.at(
                signature.ident.span(),
                format!(
                    "`{}` returns nothing, so there is nothing to cache; `#[cached]` needs a return value",
                    signature.ident.unraw()
                ),
            );
            None
        }
    }
}

/// `early`'s beta: any finite number above 0; `early` alone means 1.0.
fn early_beta(setting: &Setting<Option<Number>>, errors: &mut Errors) -> Option<f64> {
    let Some(number) = &setting.value else {
        return Some(1.0);
    };
    match magnitude(number, errors)? {
        beta if !beta.is_finite() => {
            errors.on(
                number,
                format!(
                    "`early = {}` is not a finite number: it is too large for an `f64`; `early` scales how early before expiry a hot key is refreshed, and values such as `1.0` or `2.0` are typical",
                    number.lit.to_token_stream()
                ),
            );
            None
        }
        beta if beta > 0.0 && number.minus.is_none() => Some(beta),
        _ => {
            errors.on(
                number,
                "`early` must be greater than 0: it scales how early before expiry a hot key is refreshed (`early` alone means 1.0; larger refreshes earlier)",
            );
            None
        }
    }
}

/// With `early` or `stale` the body also runs in the background: the plan
/// for it, checked even when the option's value was wrong, so that every
/// mistake shows in one build.
fn background_runs(args: &Args, signature: &Signature, errors: &mut Errors) -> Option<Refresh> {
    let mut options = Vec::new();
    if args.early.is_some() || args.mentions("early") {
        options.push("early");
    }
    if args.stale.is_some() || args.mentions("stale") {
        options.push("stale");
    }
    let option = args
        .early
        .as_ref()
        .map(|early| early.name)
        .or_else(|| args.stale.as_ref().map(|stale| stale.name))
        .unwrap_or_else(Span::call_site);
    (!options.is_empty()).then(|| refresh_plan(signature, &options, option, errors))
}

/// `early` and `stale` run the body again in a spawned task, after the call
/// that started it may have returned: the task owns copies of the receiver
/// and of every parameter, so each parameter must be a name (to copy) and
/// none may be a `&mut` (which cannot be copied). The other requirements
/// (`Clone`, `Send`, `'static`) are left to the type checker, whose errors
/// the expansion points at the parameter concerned.
fn refresh_plan(
    signature: &Signature,
    options: &[&str],
    option: Span,
    errors: &mut Errors,
) -> Refresh {
    let runs = match options {
        [one] => format!("`{one}` runs"),
        _ => format!(
            "{} run",
            options
                .iter()
                .map(|option| format!("`{option}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        ),
    };
    let mut receiver = None;
    let mut parameters = Vec::new();
    for input in &signature.inputs {
        let typed = match input {
            FnArg::Receiver(written) => {
                // `&self`, `self: &Self`, `self: &Arc<Self>`: the front
                // reported any other receiver.
                if let Some((_, referent)) = referent(&written.ty) {
                    receiver = Some(ReceiverCopy {
                        self_token: written.self_token,
                        referent: Box::new(referent.clone()),
                    });
                }
                continue;
            }
            FnArg::Typed(typed) => typed,
        };
        let ident = match &*typed.pat {
            Pat::Ident(binding) if binding.by_ref.is_none() && binding.subpat.is_none() => {
                Some(binding)
            }
            // Binds nothing the body can read: nothing to copy.
            Pat::Wild(_) => continue,
            pattern => {
                errors.on(
                    pattern,
                    format!(
                        "{runs} the body in the background from a copy of each parameter, so parameters must be plain names: bind the value to a name and destructure it in the body"
                    ),
                );
                None
            }
        };
        let passing = match referent(&typed.ty) {
            Some((true, _)) => {
                errors.on(
                    &typed.ty,
                    format!(
                        "{runs} the body in the background, where it may outlive the call, so it can't take a `&mut` parameter; pass the value by `&` or by value"
                    ),
                );
                continue;
            }
            Some((false, referent)) => Passing::Borrowed(Box::new(referent.clone())),
            None => Passing::ByValue,
        };
        if let Some(binding) = ident {
            parameters.push(RefreshParameter {
                written: typed.clone(),
                mutability: binding.mutability,
                ident: binding.ident.clone(),
                passing,
                cfg: cfg_of(&typed.attrs),
            });
        }
    }
    Refresh {
        option,
        receiver,
        parameters,
    }
}

/// The rule that keeps users apart: a parameter that is in neither the key
/// nor `skip` would let calls that differ only in it share one entry.
///
/// Tags do not count: only the key tells calls apart. A parameter that is in
/// a tag but not in the key gets a message saying so.
fn check_every_parameter_is_keyed(
    template: &KeyTemplate,
    tags: &[KeyTemplate],
    skipped: &HashSet<String>,
    parameters: &Parameters,
    batch_parameter: Option<&str>,
    unkeyed: &mut Unkeyed,
) {
    for parameter in &parameters.bindings {
        let name = &parameter.name;
        if template.uses(name) || skipped.contains(name) || batch_parameter == Some(name) {
            continue;
        }
        let message = if tags.iter().any(|tag| tag.uses(name)) {
            format!(
                "parameter `{name}` is in a tag but not in the key; add `<{name}>` to the key or `skip({name})`: only the key tells calls apart, and forgetting one serves one user's data to another"
            )
        } else {
            format!(
                "parameter `{name}` is not in the key; add `<{name}>` to the key or `skip({name})`: forgetting one serves one user's data to another"
            )
        };
        unkeyed.report(&parameter.cfg, parameter.ident.span(), message);
    }
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use super::*;
    use crate::plan::SourceKind;
    use crate::validate::testing::{assert_one, cached, errors_of, planned, written};

    #[test]
    fn accepts_the_full_example() {
        let plan = planned(cached(
            quote! { key = "org:<org>:user:<id>", ttl = 300, jitter = 0.2, negative = 60, cache = self.cache, skip(filter) },
            quote! {
                pub async fn find(&self, org: u32, id: u64, filter: &Filter) -> Result<Option<User>, DbError> {
                    loop {}
                }
            },
        ));
        assert_eq!(plan.common.function_name, "find");
        assert_eq!(plan.entry.key.written, "org:<org>:user:<id>");
        assert!(plan.entry.tags.is_empty());
        assert_eq!(plan.entry.ttl.seconds(), Some(300));
        assert_eq!(plan.entry.jitter, Some(0.2));
        assert_eq!(
            plan.negative
                .as_ref()
                .map(|negative| negative.lifetime.seconds()),
            Some(Some(60))
        );
        assert!(plan.l1);
        let cache = plan.common.cache.to_token_stream().to_string();
        assert_eq!(cache, "self . cache");
        let runtime = plan.common.runtime.to_token_stream().to_string();
        assert_eq!(runtime, ":: cache_runtime");
    }

    #[test]
    fn defaults_and_overrides() {
        let plan = planned(cached(
            quote! { key = "n:<n>", ttl = 1, jitter = 0, l1 = false, crate = "my::rt" },
            quote! { async fn f(n: u8) -> u8 { n } },
        ));
        assert_eq!(plan.entry.jitter, Some(0.0));
        assert!(plan.negative.is_none());
        assert!(!plan.l1);
        assert!(plan.common.cache.is_none());
        let runtime = plan.common.runtime.to_token_stream().to_string();
        assert_eq!(runtime, "my :: rt");
        assert_eq!(plan.common.function_name, "f");
    }

    /// Whether the return type has a `None` is not decided by name (an
    /// alias hides it): the compiler checks it in the expansion.
    #[test]
    fn negative_is_planned_for_any_return_type() {
        let args = quote!(key = "k", ttl = 1, negative = 5);
        for return_type in [
            quote!(Option<u8>),
            quote!(Result<Option<u8>, E>),
            quote!(MaybeUser),
            quote!(Result<u8, E>),
        ] {
            let function = quote! { async fn f() -> #return_type { loop {} } };
            let plan = planned(cached(args.clone(), function));
            assert_eq!(
                plan.negative.map(|negative| negative.lifetime.seconds()),
                Some(Some(5)),
                "{return_type}"
            );
        }
    }

    #[test]
    fn return_type_must_be_a_concrete_value() {
        let not_concrete = "`#[cached]` needs a concrete return type, not `impl Trait`: cached values are deserialized into it";
        let cases = [
            (
                quote! { async fn f() {} },
                "`f` returns nothing, so there is nothing to cache; `#[cached]` needs a return value",
            ),
            (
                quote! { async fn f() -> () {} },
                "a `#[cached]` function must return a value; `()` leaves nothing to cache",
            ),
            (quote! { async fn f() -> impl Display { 1 } }, not_concrete),
            (
                quote! { async fn f() -> Option<impl Display> { 1 } },
                not_concrete,
            ),
        ];
        for (function, expected) in cases {
            let errors = errors_of(quote!(key = "k", ttl = 1), function.clone());
            assert_eq!(errors, [expected], "{function}");
        }
    }

    #[test]
    fn every_parameter_must_be_in_the_key_or_skipped() {
        let function = quote! { async fn find(&self, org: u32, id: u64) -> u8 { 1 } };
        let errors = errors_of(quote!(key = "user:<id>", ttl = 1), function.clone());
        let expected = "parameter `org` is not in the key; add `<org>` to the key or `skip(org)`: forgetting one serves one user's data to another";
        assert_eq!(errors, [expected]);
        let errors = errors_of(quote!(key = "user:<id>", ttl = 1, skip(org)), function);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn destructured_parameters_bind_names_that_must_be_keyed_or_skipped() {
        let function =
            quote! { async fn f((a, b): (u32, u32), _: u8, Point { x, .. }: Point) -> u8 { 1 } };
        assert!(errors_of(quote!(key = "<a>:<b>:<x>", ttl = 1), function.clone()).is_empty());
        assert!(errors_of(quote!(key = "<a>", ttl = 1, skip(b, x)), function.clone()).is_empty());
        let errors = errors_of(quote!(key = "<a>", ttl = 1), function);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("parameter `b` is not in the key"));
        assert!(errors[1].starts_with("parameter `x` is not in the key"));
    }

    #[test]
    fn skip_lists_parameters_outside_the_key() {
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1, skip(self, pool, id, nope, pool)),
            quote! { async fn find(&self, id: u64, pool: &Pool) -> u8 { 1 } },
        );
        assert_eq!(
            errors,
            [
                "the receiver is never part of the key, so it needs no `skip`",
                "`id` is in the key, so it can't be skipped; remove it from `skip(...)`",
                "`skip` lists `nope`, which is not a parameter of `find`",
                "`pool` is listed twice in `skip`",
            ]
        );
    }

    #[test]
    fn reports_every_mistake_at_once() {
        let errors = errors_of(
            quote! { key = "user:<uid>", ttl = 0, jitter = 2, negative = 0, lock = 1, stale = 0 },
            quote! { fn find(&mut self, id: u64, (a, b): (u8, u8), c: &mut u8) -> u8 { 1 } },
        );
        assert_eq!(errors.len(), 14, "{errors:#?}");
    }

    #[test]
    fn lock_early_and_stale() {
        let function = quote! { async fn f(n: u8) -> u8 { n } };
        let plan = planned(cached(quote!(key = "<n>", ttl = 1), function.clone()));
        assert!(!plan.lock);
        assert_eq!(plan.early, None);
        assert!(plan.entry.stale.is_none());
        assert!(plan.refresh.is_none());

        let args = quote!(key = "<n>", ttl = 1, lock, early, stale = 30);
        let plan = planned(cached(args, function.clone()));
        assert!(plan.lock);
        assert_eq!(plan.early, Some(1.0));
        assert_eq!(
            plan.entry.stale.map(|stale| stale.seconds()),
            Some(Some(30))
        );
        assert!(plan.refresh.is_some());

        for (early, beta) in [(quote!(0.5), 0.5), (quote!(2), 2.0), (quote!(1e-3), 0.001)] {
            let args = quote!(key = "<n>", ttl = 1, early = #early);
            let plan = planned(cached(args, function.clone()));
            assert_eq!(plan.early, Some(beta), "{early}");
            assert!(plan.refresh.is_some());
        }

        // `lock` needs nothing of the function.
        let plan = planned(cached(quote!(key = "<n>", ttl = 1, lock), function));
        assert!(plan.lock && plan.refresh.is_none());
    }

    #[test]
    fn early_is_above_zero_and_stale_is_positive_whole_seconds() {
        let function = quote! { async fn f() -> u8 { 1 } };
        let early_above_zero = "`early` must be greater than 0: it scales how early before expiry a hot key is refreshed (`early` alone means 1.0; larger refreshes earlier)";
        for early in [quote!(0), quote!(0.0), quote!(-1), quote!(-0.5)] {
            let errors = errors_of(quote!(key = "k", ttl = 1, early = #early), function.clone());
            assert_eq!(errors, [early_above_zero], "{early}");
        }
        let errors = errors_of(quote!(key = "k", ttl = 1, early = 1e309), function.clone());
        assert_eq!(
            errors,
            [
                "`early = 1e309` is not a finite number: it is too large for an `f64`; `early` scales how early before expiry a hot key is refreshed, and values such as `1.0` or `2.0` are typical"
            ]
        );
        for (stale, expected) in [
            (quote!(0), "`stale` must be greater than 0 seconds"),
            (quote!(-5), "`stale` must be greater than 0 seconds"),
            (quote!(1.5), "`stale` is a whole number of seconds"),
        ] {
            let errors = errors_of(quote!(key = "k", ttl = 1, stale = #stale), function.clone());
            assert_eq!(errors, [expected], "{stale}");
        }
    }

    #[test]
    fn generic_parameters_are_keyed_or_skipped() {
        let plan = planned(cached(
            quote!(key = "s:<N>:<T>:<id>:<n>:<page.number>", ttl = 1),
            quote! { async fn f<'a, const N: u64, T: Tenant>(id: &'a u64, n: u64, page: Page) -> u64 { 1 } },
        ));
        let sources: Vec<(String, SourceKind)> = plan
            .entry
            .key
            .placeholders()
            .map(|placeholder| {
                let source = placeholder.source.as_ref().expect("resolved");
                (source.ident.to_string(), source.kind)
            })
            .collect();
        assert_eq!(
            sources,
            [
                ("N".to_owned(), SourceKind::ConstGeneric),
                ("T".to_owned(), SourceKind::TypeGeneric),
                ("id".to_owned(), SourceKind::Parameter),
                // A primitive integer by value renders without `Display`.
                ("n".to_owned(), SourceKind::Integer),
                ("page".to_owned(), SourceKind::Parameter),
            ]
        );

        let function = quote! { async fn scaled<const N: u64, D: Db>(id: u64) -> u64 { 1 } };
        let errors = errors_of(quote!(key = "s:<id>", ttl = 1), function.clone());
        assert_eq!(
            errors,
            [
                "const generic parameter `N` is not in the key, so calls that differ only in `N` would share one entry; add `<N>` to the key (the value of `N`), such as `key = \"s:<N>:<id>\"`, or `skip(N)` if the result does not depend on it",
                "type parameter `D` is not in the key, so calls that differ only in `D` would share one entry; add `<D>` to the key (the name of the type `D` stands for), such as `key = \"s:<D>:<id>\"`, or `skip(D)` if the result does not depend on it",
            ]
        );
        let errors = errors_of(
            quote!(key = "s:<N>:<id>", ttl = 1, skip(D)),
            function.clone(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let errors = errors_of(quote!(key = "s:<N.x>:<id>", ttl = 1, skip(D)), function);
        assert_eq!(
            errors,
            [
                "placeholder `<N.x>`: `N` is a const generic parameter of `scaled`, which has no fields; write `<N>`"
            ]
        );
        // A type parameter that is the type of a value the key renders is
        // keyed by that value, as `impl Display` would be; anywhere else it
        // is not.
        for function in [
            quote! { async fn f<K: Display>(id: K) -> u8 { 1 } },
            quote! { async fn f<K: Display>(id: &K) -> u8 { 1 } },
        ] {
            let errors = errors_of(quote!(key = "<id>", ttl = 1), function.clone());
            assert!(errors.is_empty(), "{function}: {errors:?}");
        }
        for (key, function) in [
            (
                quote!("<id>"),
                quote! { async fn f<K: Model>(id: Id<K>) -> u8 { 1 } },
            ),
            (
                quote!("<id.0>"),
                quote! { async fn f<K: Model>(id: K) -> u8 { 1 } },
            ),
            (
                quote!("<id>"),
                quote! { async fn f<K: Model>(id: u64, other: K) -> u8 { 1 } },
            ),
        ] {
            let errors = errors_of(quote!(key = #key, ttl = 1, skip(other)), function.clone());
            let errors: Vec<_> = errors
                .into_iter()
                .filter(|error| !error.starts_with("`skip` lists `other`"))
                .collect();
            assert_one(&errors, "type parameter `K` is not in the key", &function);
        }
        let errors = errors_of(
            quote!(key = "<M>", ttl = 1),
            quote! { async fn f<const N: u8>() -> u8 { 1 } },
        );
        assert_eq!(
            errors,
            [
                "placeholder `<M>` names no parameter of `f`; its generic parameters are `N`",
                "const generic parameter `N` is not in the key, so calls that differ only in `N` would share one entry; add `<N>` to the key (the value of `N`), such as `key = \"<N>:<M>\"`, or `skip(N)` if the result does not depend on it",
            ]
        );
    }

    #[test]
    fn a_parameter_under_cfg_is_required_under_that_cfg() {
        let function = quote! {
            async fn f(#[cfg(feature = "tenants")] tenant: u32, id: u64) -> u64 { 1 }
        };
        // Not an error now: one the expansion reports where the parameter
        // exists.
        let plan = planned(cached(quote!(key = "user:<id>", ttl = 1), function.clone()));
        let [conditional] = plan.common.conditional_errors.as_slice() else {
            panic!("one conditional error expected");
        };
        assert_eq!(
            conditional.cfg.to_token_stream().to_string(),
            quote!(#[cfg(feature = "tenants")]).to_string()
        );
        assert!(
            conditional
                .message
                .starts_with("parameter `tenant` is not in the key")
        );
        let plan = planned(cached(
            quote!(key = "user:<tenant>:<id>", ttl = 1),
            function,
        ));
        assert!(plan.common.conditional_errors.is_empty());
        let tenant = plan.entry.key.placeholders().next().expect("a placeholder");
        let source = tenant.source.as_ref().expect("resolved");
        assert!(!source.cfg.is_empty());
    }

    #[test]
    fn arc_receivers_are_copied_as_arcs() {
        let plan = planned(cached(
            quote!(key = "<id>", ttl = 1, stale = 5),
            quote! { async fn f(self: &Arc<Self>, id: u64) -> u64 { 1 } },
        ));
        let receiver = plan
            .refresh
            .and_then(|refresh| refresh.receiver)
            .expect("a receiver");
        assert_eq!(
            receiver.referent.to_token_stream().to_string(),
            "Arc < Self >"
        );
    }

    #[test]
    fn refresh_copies_the_receiver_and_every_named_parameter() {
        let function = |unused: proc_macro2::TokenStream| {
            quote! {
                async fn f(
                    &self, id: u64, mut n: u8, name: &'a str, pool: Pool, #unused,
                    filter: &impl Filter, it: impl Iterator<Item = u8>,
                ) -> u8 { 1 }
            }
        };
        // `_x` is a name, so it is copied: `&mut` is refused.
        let errors = errors_of(
            quote!(
                key = "<id>:<name>",
                ttl = 1,
                stale = 5,
                skip(n, pool, filter, _x, it)
            ),
            function(quote!(_: u8, _x: &mut Unused)),
        );
        let mut_reference = "`stale` runs the body in the background, where it may outlive the call, so it can't take a `&mut` parameter; pass the value by `&` or by value";
        assert_eq!(errors, [mut_reference]);

        let plan = planned(cached(
            quote!(
                key = "<id>:<name>",
                ttl = 1,
                stale = 5,
                skip(n, pool, filter, it)
            ),
            function(quote!(_: &mut u8)),
        ));
        let refresh = plan.refresh.expect("`stale` was given");
        assert!(refresh.receiver.is_some());
        let parameters: Vec<String> = refresh
            .parameters
            .iter()
            .map(|parameter| {
                let mutability = if parameter.mutability.is_some() {
                    "mut "
                } else {
                    ""
                };
                let passing = match &parameter.passing {
                    Passing::ByValue => "by value".to_owned(),
                    Passing::Borrowed(referent) => {
                        format!("borrowed {}", referent.to_token_stream())
                    }
                };
                format!("{mutability}{}: {passing}", parameter.ident)
            })
            .collect();
        assert_eq!(
            parameters,
            [
                "id: by value",
                "mut n: by value",
                "name: borrowed str",
                "pool: by value",
                "filter: borrowed impl Filter",
                "it: by value",
            ]
        );
    }

    #[test]
    fn refresh_needs_named_parameters_and_no_mut_references() {
        let function = quote! {
            async fn f((a, b): (u8, u8), ref c: u8, d @ 1..=3: u8, e: &mut u8, (f): u8) -> u8 { 1 }
        };
        let errors = errors_of(
            quote!(key = "<a>:<b>:<c>:<d>:<e>:<f>", ttl = 1, early),
            function.clone(),
        );
        let destructured = "`early` runs the body in the background from a copy of each parameter, so parameters must be plain names: bind the value to a name and destructure it in the body";
        let mut_reference = "`early` runs the body in the background, where it may outlive the call, so it can't take a `&mut` parameter; pass the value by `&` or by value";
        let expected = [
            destructured,
            destructured,
            destructured,
            mut_reference,
            destructured,
        ];
        assert_eq!(errors, expected);
        // Both options: both named, and each mistake reported once.
        let errors = errors_of(
            quote!(
                key = "<a>:<b>:<c>:<d>:<e>:<f>",
                ttl = 1,
                early = 0,
                stale = 5
            ),
            function,
        );
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors[0].starts_with("`early` must be greater than 0"));
        let both = "`early` and `stale` run the body in the background";
        assert!(errors[1].starts_with(both), "{errors:#?}");
        // Without `early` / `stale`, patterns and `&mut` are fine.
        let errors = errors_of(
            quote!(key = "<a>:<b>:<e>", ttl = 1, lock),
            quote! { async fn f((a, b): (u8, u8), e: &mut u8) -> u8 { 1 } },
        );
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn tags_are_templates_whose_parameters_need_not_be_in_the_key() {
        let function = quote! { async fn find(org: u32, team: u32, id: u64) -> u8 { 1 } };
        let plan = planned(cached(
            quote!(
                key = "user:<id>",
                ttl = 1,
                tags = ["org:<org>", "team:<team>:all"],
                skip(org, team)
            ),
            function.clone(),
        ));
        assert_eq!(written(&plan.entry.tags), ["org:<org>", "team:<team>:all"]);

        // A parameter in a tag but not in the key still needs `skip`.
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1, tags = ["org:<org>"]),
            function.clone(),
        );
        assert_eq!(
            errors,
            [
                "parameter `org` is in a tag but not in the key; add `<org>` to the key or `skip(org)`: only the key tells calls apart, and forgetting one serves one user's data to another",
                "parameter `team` is not in the key; add `<team>` to the key or `skip(team)`: forgetting one serves one user's data to another",
            ]
        );

        let tags = quote!([
            "org:<organisation>",
            "org *",
            "<self.org>",
            "org:<org>",
            "org:<org>"
        ]);
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1, tags = #tags, skip(org, team)),
            function,
        );
        assert_eq!(
            errors,
            [
                "placeholder `<organisation>` names no parameter of `find`; its parameters are `org`, `team`, `id`",
                "the tag can't contain whitespace (found ' '); tags are shown and matched by tools that split on it",
                "the tag can't contain `*`: `{ } * ? [ ]` are Redis hash-tag and pattern characters",
                "placeholder `<self.org>` uses the receiver, which is never part of the tag; pass the value as a parameter",
                "the tag `org:<org>` is written twice",
            ]
        );
    }
}
