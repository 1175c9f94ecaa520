//! `#[write_behind]`: one key, a TTL, the parameter whose value is stored,
//! and a signature a worker can call later: no generic parameters, a shared
//! reference first at most (the handle, which the worker owns and lends to
//! each deferred call), every other parameter a plain name of an owned
//! type (it travels in the queue). Whether the return type is `()` or
//! `Result<(), E>` (aliases included) the compiler tells, through the
//! runtime's `Deferred`.

use proc_macro2::Span;
use quote::ToTokens;
use syn::{AttrStyle, Attribute, FnArg, LitStr, Pat, PatType, ReturnType, Signature, Type};

use super::front::Front;
use super::parameters::{cfg_of, name_of};
use super::types::{mentions_impl_trait, referent};
use super::{Report, Stage};
use crate::args::Args;
use crate::errors::Errors;
use crate::plan::{Handle, QueuedParameter, StoredValue, WriteBehindPlan};
use crate::shape::ungrouped;

/// `#[write_behind]`'s own rules, checked after the front's (which checked
/// `async`, that a receiver is `&self`, the key, tags, `ttl`, `jitter` and
/// `stale`). The plan unless a part of it is missing (which was reported).
pub(super) fn plan(
    args: &Args,
    attrs: &[Attribute],
    front: Front,
    report: &mut Report,
) -> Option<WriteBehindPlan> {
    let signature = front.parameters.signature;
    check_not_generic(signature, report.stage(Stage::Signature));
    let return_type = deferred_return_type(signature, report.stage(Stage::Return));
    let value = args.value.as_ref().map(|value| &value.value);
    let value_missing = value.is_none() && !args.mentions("value");
    if value_missing {
        report.stage(Stage::Value).at(
            Span::call_site(),
            "missing `value = <parameter>`: `#[write_behind]` stores a clone of one parameter under the key (the value the deferred body writes), such as `value = at`",
        );
    }
    let queue = queue_name(args, signature, report.stage(Stage::Value));
    let (handle, queued) = split_parameters(signature, report.stage(Stage::Parameters));
    let value = value.and_then(|value| {
        stored_value(
            value,
            handle.as_ref(),
            &queued,
            signature,
            report.stage(Stage::Value),
        )
    });
    let sibling_attrs = sibling_attrs(attrs);
    let coalesce = args.coalesce.is_some();
    let common = front.common(return_type?, Vec::new());
    Some(WriteBehindPlan {
        common,
        entry: front.entry()?,
        handle: handle?,
        queued: queued?,
        parameter_list: signature.paren_token.span.join(),
        value: value?,
        queue: queue?,
        coalesce,
        sibling_attrs,
    })
}

/// The worker calls the body from what the queue holds, which records no
/// type or const arguments; a named lifetime could only tie a parameter to
/// the caller, whom a deferred call outlives.
fn check_not_generic(signature: &Signature, errors: &mut Errors) {
    let generics = &signature.generics;
    if generics.params.is_empty() && generics.where_clause.is_none() {
        if let Some(unsafety) = &signature.unsafety {
            errors.on(
                unsafety,
                "`#[write_behind]` can't be on an `unsafe fn`: the worker calls the body, with no caller to uphold its contract",
            );
        }
        return;
    }
    let only_lifetimes = generics
        .params
        .iter()
        .all(|param| matches!(param, syn::GenericParam::Lifetime(_)));
    let message = if only_lifetimes && !generics.params.is_empty() {
        "`#[write_behind]` functions can't have lifetime parameters: a deferred call runs after the caller has returned, from a handle the worker owns and values the queue holds; write `&Db` for the handle and owned types for the rest"
    } else {
        "`#[write_behind]` functions can't be generic: the worker runs the body from what the queue holds, which records no type arguments; write a function for each type"
    };
    if generics.params.is_empty() {
        errors.on(&generics.where_clause, message);
    } else {
        errors.on(generics, message);
    }
}

/// The declared return type, or `()` when none is written. Whether it is
/// `()` or `Result<(), E>` is the compiler's to say (aliases included):
/// the runtime's `Deferred`, whose bound the expansion places at this type.
fn deferred_return_type(signature: &Signature, errors: &mut Errors) -> Option<Type> {
    match &signature.output {
        ReturnType::Type(_, return_type) if mentions_impl_trait(return_type) => {
            errors.on(
                return_type,
                "`#[write_behind]` needs a concrete return type, `()` or `Result<(), E>`, not `impl Trait`: the call returns before the body runs, with `()` or `Ok(())`",
            );
            None
        }
        ReturnType::Type(_, return_type) => Some((**return_type).clone()),
        ReturnType::Default => {
            let span = signature.ident.span();
            Some(syn::parse_quote_spanned!(span=> ()))
        }
    }
}

/// `queue = "..."`, or the function's name. The runtime escapes it into
/// its Redis keys, so any name that shows in logs and stats will do.
fn queue_name(args: &Args, signature: &Signature, errors: &mut Errors) -> Option<LitStr> {
    let Some(queue) = &args.queue else {
        let name = name_of(&signature.ident);
        return Some(LitStr::new(&name, signature.ident.span()));
    };
    let name = queue.value.value();
    if !name.is_empty() && !name.chars().any(char::is_control) {
        Some(queue.value.clone())
    } else {
        errors.on(
            &queue.value,
            "`queue` needs a name without control characters, such as `queue = \"seen\"`: logs, stats and the worker's handler name the queue by it",
        );
        None
    }
}

/// The handle (a first parameter `&H`, or `&self`) and the queued
/// parameters; `None` for either when a parameter is wrong (reported).
fn split_parameters(
    signature: &Signature,
    errors: &mut Errors,
) -> (Option<Option<Handle>>, Option<Vec<QueuedParameter>>) {
    let mut handle = None;
    let mut handle_ok = true;
    let mut queued = Vec::new();
    let mut queued_ok = true;
    for (index, input) in signature.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(receiver) => {
                // The front reported any receiver but a shared reference.
                match referent(&receiver.ty) {
                    Some((false, referent)) => {
                        handle = Some(Handle::Receiver {
                            self_token: receiver.self_token,
                            referent: Box::new(referent.clone()),
                        });
                    }
                    _ => handle_ok = false,
                }
            }
            FnArg::Typed(typed) => {
                let first = index == 0;
                match parameter(typed, first, handle.is_some(), errors) {
                    Some(Parameter::Handle(parameter)) => handle = Some(parameter),
                    Some(Parameter::Queued(parameter)) => queued.push(parameter),
                    None if first => handle_ok = false,
                    None => queued_ok = false,
                }
            }
        }
    }
    (handle_ok.then_some(handle), queued_ok.then_some(queued))
}

enum Parameter {
    Handle(Handle),
    Queued(QueuedParameter),
}

/// One typed parameter: the handle when it is the first and a reference,
/// queued otherwise; `None` when it is wrong (reported).
fn parameter(
    typed: &PatType,
    first: bool,
    has_handle: bool,
    errors: &mut Errors,
) -> Option<Parameter> {
    let conditional = !cfg_of(&typed.attrs).is_empty();
    if conditional {
        errors.on(
            &typed.attrs[0],
            "a `#[write_behind]` parameter can't be under `#[cfg]`: the caller and the worker must agree on what the queue holds, whatever either was built with",
        );
    }
    let ident = match &*typed.pat {
        Pat::Ident(binding) if binding.by_ref.is_none() && binding.subpat.is_none() => {
            Some(binding.ident.clone())
        }
        pattern => {
            errors.on(
                pattern,
                "`#[write_behind]` parameters must be plain names (`point: Point`, not `Point { x, y }: Point`): the worker calls the body with each queued value by name; destructure it in the body",
            );
            None
        }
    };
    let ty = &typed.ty;
    let reference = referent(ty);
    if first && let Some((mutable, referent)) = reference {
        if mutable {
            errors.on(
                ty,
                "the handle must be a shared reference (`&Db`, not `&mut Db`): the worker owns one and lends it to deferred calls that may run at the same time",
            );
        }
        if mentions_impl_trait(referent) {
            errors.on(
                referent,
                "the handle needs a concrete type, not `impl Trait`: the generated handler function takes one, which the worker owns",
            );
            return None;
        }
        let handle = Handle::Parameter {
            ident: ident?,
            referent: Box::new(referent.clone()),
        };
        return (!mutable && !conditional).then_some(Parameter::Handle(handle));
    }
    if let Some((_, referent)) = reference {
        let name = ident
            .as_ref()
            .map_or_else(|| "this parameter".to_owned(), |ident| format!("`{ident}`"));
        let owned = owned_suggestion(referent);
        let message = if has_handle {
            format!(
                "{name} travels in the queue, which holds owned values: take `{owned}`; only the first parameter may be a reference, the handle the worker lends to each deferred call"
            )
        } else {
            format!(
                "{name} is a reference, and only the first parameter may be one: the handle, which the worker owns and lends to each deferred call; move it first if it is the handle, or take `{owned}`: every other parameter travels in the queue as an owned value"
            )
        };
        errors.on(ty, message);
        return None;
    }
    if mentions_impl_trait(ty) {
        errors.on(
            ty,
            "`#[write_behind]` parameters need a concrete type, not `impl Trait`: the worker reads each queued value back as the type written here",
        );
        return None;
    }
    let queued = QueuedParameter {
        ident: ident?,
        ty: ty.clone(),
    };
    (!conditional).then_some(Parameter::Queued(queued))
}

/// The owned type to take instead of `&T`, for messages: `String` for
/// `&str`, `Vec<T>` for `&[T]`, `T` otherwise.
fn owned_suggestion(referent: &Type) -> String {
    match ungrouped(referent) {
        Type::Path(path) if path.qself.is_none() && path.path.is_ident("str") => {
            "String".to_owned()
        }
        Type::Slice(slice) => format!("Vec<{}>", slice.elem.to_token_stream()),
        other => other.to_token_stream().to_string(),
    }
}

/// `value = name`: a queued parameter.
fn stored_value(
    value: &proc_macro2::Ident,
    handle: Option<&Option<Handle>>,
    queued: &Option<Vec<QueuedParameter>>,
    signature: &Signature,
    errors: &mut Errors,
) -> Option<StoredValue> {
    let name = name_of(value);
    let function = name_of(&signature.ident);
    let queued_names = || {
        queued
            .iter()
            .flatten()
            .map(|parameter| format!("`{}`", parameter.ident))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let choose = || match queued_names() {
        names if names.is_empty() => format!(
            "`{function}` has no parameter besides the handle: add the value the body writes as a parameter"
        ),
        names => format!("name the parameter whose value the cache stores, one of {names}"),
    };
    let handle_name = match handle {
        Some(Some(Handle::Parameter { ident, .. })) => Some(name_of(ident)),
        Some(Some(Handle::Receiver { .. })) => Some("self".to_owned()),
        _ => None,
    };
    if name == "self" || handle_name.as_deref() == Some(&name) {
        errors.at(
            value.span(),
            format!(
                "`value = {name}` names the handle, which the worker owns and the cache does not store; {}",
                choose()
            ),
        );
        return None;
    }
    let parameter = signature.inputs.iter().find_map(|input| match input {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(binding) if name_of(&binding.ident) == name => Some(binding.ident.clone()),
            _ => None,
        },
        FnArg::Receiver(_) => None,
    });
    match parameter {
        Some(parameter) => Some(StoredValue {
            parameter,
            written: value.span(),
        }),
        None => {
            errors.at(
                value.span(),
                format!(
                    "`value = {name}` names no parameter of `{function}`; {}",
                    choose()
                ),
            );
            None
        }
    }
}

/// The function's attributes the generated siblings repeat: `#[cfg]`s (and
/// the `#[cfg_attr]`s that can yield one), so they exist exactly where the
/// function does, and lint levels (`allow`, `warn`, `deny`, `forbid`), so
/// the body, which moves to a sibling, is linted as written. `expect`
/// stays on the function alone: repeated, one copy would go unfulfilled.
///
/// The body's inner attributes (`#![allow(..)]`, which syn lists with the
/// outer ones) move with the body, so only outer ones are repeated.
fn sibling_attrs(attrs: &[Attribute]) -> Vec<Attribute> {
    let outer: Vec<Attribute> = attrs
        .iter()
        .filter(|attr| matches!(attr.style, AttrStyle::Outer))
        .cloned()
        .collect();
    let lint_levels = outer.iter().filter(|attr| {
        ["allow", "warn", "deny", "forbid"]
            .iter()
            .any(|level| attr.path().is_ident(level))
    });
    cfg_of(&outer)
        .0
        .into_iter()
        .chain(lint_levels.cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use crate::plan::Handle;
    use crate::validate::testing::{assert_one, errors_in, planned, write_behind, written};

    #[test]
    fn plans_the_handle_the_queued_parameters_and_the_value() {
        let plan = planned(write_behind(
            quote! { key = "user:<id>:seen", ttl = 300, value = at, tags = ["org:<org>"], jitter = 0.1, queue = "seen", coalesce },
            quote! {
                pub async fn record_seen(db: &Db, id: u64, org: u32, mut at: i64) -> Result<(), DbError> { Ok(()) }
            },
        ));
        assert_eq!(plan.common.function_name, "record_seen");
        assert_eq!(plan.entry.key.written, "user:<id>:seen");
        assert_eq!(written(&plan.entry.tags), ["org:<org>"]);
        assert_eq!(plan.entry.ttl.seconds(), Some(300));
        assert_eq!(plan.entry.jitter, Some(0.1));
        let Some(Handle::Parameter { ident, referent }) = &plan.handle else {
            panic!("`db` is the handle");
        };
        assert_eq!(ident, "db");
        assert_eq!(referent.to_token_stream().to_string(), "Db");
        let queued: Vec<String> = plan
            .queued
            .iter()
            .map(|parameter| format!("{}: {}", parameter.ident, parameter.ty.to_token_stream()))
            .collect();
        assert_eq!(queued, ["id: u64", "org: u32", "at: i64"]);
        assert_eq!(plan.value.parameter, "at");
        assert_eq!(plan.queue.value(), "seen");
        assert!(plan.coalesce);
        assert_eq!(
            plan.common.return_type.to_token_stream().to_string(),
            "Result < () , DbError >"
        );
    }

    #[test]
    fn the_queue_defaults_to_the_function_name_and_the_handle_is_optional() {
        let plan = planned(write_behind(
            quote!(key = "views:<page>", ttl = 60, value = count),
            quote! { async fn r#count_views(page: String, count: u64) { } },
        ));
        assert!(plan.handle.is_none());
        assert_eq!(plan.queue.value(), "count_views");
        assert!(!plan.coalesce);
        assert_eq!(plan.common.return_type.to_token_stream().to_string(), "()");
        assert_eq!(plan.queued.len(), 2);

        let plan = planned(write_behind(
            quote!(
                key = "user:<id>:seen",
                ttl = 60,
                value = at,
                cache = self.cache
            ),
            quote! { async fn record_seen(&self, id: u64, at: i64) -> std::io::Result<()> { Ok(()) } },
        ));
        let Some(Handle::Receiver { referent, .. }) = &plan.handle else {
            panic!("`&self` is the handle");
        };
        assert_eq!(referent.to_token_stream().to_string(), "Self");
    }

    #[test]
    fn value_is_required_and_names_a_queued_parameter() {
        let function = quote! { async fn record_seen(db: &Db, id: u64, at: i64) { } };
        let errors = errors_in(write_behind(
            quote!(key = "user:<id>", ttl = 1),
            function.clone(),
        ));
        assert_one(&errors, "missing `value = <parameter>`", "missing");
        let errors = errors_in(write_behind(
            quote!(key = "user:<id>", ttl = 1, value = when),
            function.clone(),
        ));
        assert_eq!(
            errors,
            [
                "`value = when` names no parameter of `record_seen`; name the parameter whose value the cache stores, one of `id`, `at`"
            ]
        );
        let errors = errors_in(write_behind(
            quote!(key = "user:<id>", ttl = 1, value = db),
            function,
        ));
        assert_eq!(
            errors,
            [
                "`value = db` names the handle, which the worker owns and the cache does not store; name the parameter whose value the cache stores, one of `id`, `at`"
            ]
        );
        let errors = errors_in(write_behind(
            quote!(key = "k", ttl = 1, value = self),
            quote! { async fn f(&self) { } },
        ));
        assert_eq!(
            errors,
            [
                "`value = self` names the handle, which the worker owns and the cache does not store; `f` has no parameter besides the handle: add the value the body writes as a parameter"
            ]
        );
        let errors = errors_in(write_behind(
            quote!(key = "k", ttl = 1, value = user.id),
            quote! { async fn f(user: User) { } },
        ));
        assert_eq!(
            errors,
            [
                "`value` takes the name of a parameter, such as `value = at`: the cache stores a clone of that parameter"
            ]
        );
    }

    #[test]
    fn only_the_first_parameter_may_be_a_reference() {
        let cases = [
            (
                quote! { async fn f(db: &Db, name: &str, at: i64) {} },
                "`name` travels in the queue, which holds owned values: take `String`; only the first parameter may be a reference, the handle the worker lends to each deferred call",
            ),
            (
                quote! { async fn f(&self, ids: &[u64], at: i64) {} },
                "`ids` travels in the queue, which holds owned values: take `Vec<u64>`; only the first parameter may be a reference, the handle the worker lends to each deferred call",
            ),
            (
                quote! { async fn f(at: i64, db: &Db) {} },
                "`db` is a reference, and only the first parameter may be one: the handle, which the worker owns and lends to each deferred call; move it first if it is the handle, or take `Db`: every other parameter travels in the queue as an owned value",
            ),
            (
                quote! { async fn f(db: &mut Db, at: i64) {} },
                "the handle must be a shared reference (`&Db`, not `&mut Db`): the worker owns one and lends it to deferred calls that may run at the same time",
            ),
            (
                quote! { async fn f(db: &Db, at: impl Into<i64>) {} },
                "`#[write_behind]` parameters need a concrete type, not `impl Trait`: the worker reads each queued value back as the type written here",
            ),
            (
                quote! { async fn f(db: &impl Store, at: i64) {} },
                "the handle needs a concrete type, not `impl Trait`: the generated handler function takes one, which the worker owns",
            ),
            (
                quote! { async fn f(db: &Db, (a, b): (u8, u8), at: i64) {} },
                "`#[write_behind]` parameters must be plain names (`point: Point`, not `Point { x, y }: Point`): the worker calls the body with each queued value by name; destructure it in the body",
            ),
            (
                quote! { async fn f(db: &Db, #[cfg(test)] extra: u8, at: i64) {} },
                "a `#[write_behind]` parameter can't be under `#[cfg]`: the caller and the worker must agree on what the queue holds, whatever either was built with",
            ),
        ];
        for (function, expected) in cases {
            let errors = errors_in(write_behind(
                quote!(key = "k", ttl = 1, value = at),
                function.clone(),
            ));
            assert_eq!(errors, [expected], "{function}");
        }
    }

    #[test]
    fn receivers_other_than_a_shared_reference_are_refused() {
        for receiver in [quote!(self), quote!(&mut self), quote!(mut self: Box<Self>)] {
            let function = quote! { async fn f(#receiver, at: i64) {} };
            let errors = errors_in(write_behind(
                quote!(key = "k", ttl = 1, value = at),
                function,
            ));
            assert_one(
                &errors,
                "`#[write_behind]` methods must take `&self`: it is the handle the worker owns",
                receiver,
            );
        }
    }

    #[test]
    fn generics_are_refused() {
        let generic = "`#[write_behind]` functions can't be generic: the worker runs the body from what the queue holds, which records no type arguments; write a function for each type";
        let lifetime = "`#[write_behind]` functions can't have lifetime parameters: a deferred call runs after the caller has returned, from a handle the worker owns and values the queue holds; write `&Db` for the handle and owned types for the rest";
        let cases = [
            (quote! { async fn f<T: Store>(db: &T, at: i64) {} }, generic),
            (quote! { async fn f<const N: usize>(at: i64) {} }, generic),
            (quote! { async fn f(at: i64) where u8: Copy {} }, generic),
            (quote! { async fn f<'a>(db: &'a Db, at: i64) {} }, lifetime),
        ];
        for (function, expected) in cases {
            let errors = errors_in(write_behind(
                quote!(key = "k", ttl = 1, value = at),
                function.clone(),
            ));
            assert_eq!(errors, [expected], "{function}");
        }
    }

    #[test]
    fn return_type_queue_and_unsafe() {
        let errors = errors_in(write_behind(
            quote!(key = "k", ttl = 1, value = at, queue = ""),
            quote! { async unsafe fn f(at: i64) -> impl Sized {} },
        ));
        assert_eq!(
            errors,
            [
                "`#[write_behind]` can't be on an `unsafe fn`: the worker calls the body, with no caller to uphold its contract",
                "`#[write_behind]` needs a concrete return type, `()` or `Result<(), E>`, not `impl Trait`: the call returns before the body runs, with `()` or `Ok(())`",
                "`queue` needs a name without control characters, such as `queue = \"seen\"`: logs, stats and the worker's handler name the queue by it",
            ]
        );
        // Any other return type is the compiler's to refuse (`Deferred`),
        // so that aliases of `Result<(), E>` work.
        let errors = errors_in(write_behind(
            quote!(key = "k", ttl = 1, value = at),
            quote! { async fn f(at: i64) -> anyhow::Result<()> { Ok(()) } },
        ));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn write_behind_needs_a_key_a_ttl_and_an_async_fn() {
        let errors = errors_in(write_behind(
            quote!(skip(at), lock),
            quote! { fn f(at: i64) {} },
        ));
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert_one(&errors[..1], "unknown option `skip`", "skip");
        assert_one(&errors[1..2], "unknown option `lock`", "lock");
        assert_eq!(
            errors[2],
            "`#[write_behind]` requires an `async fn`: storing the value and queueing the write wait on Redis"
        );
        assert_one(&errors[3..4], "missing `key = \"...\"`", "key");
        assert_one(&errors[4..5], "missing `ttl = N`", "ttl");
        assert_one(&errors[5..], "missing `value = <parameter>`", "value");
    }

    #[test]
    fn write_behind_stacks_with_no_other_attribute_of_this_crate() {
        let function = |attribute: proc_macro2::TokenStream| {
            quote! { #attribute async fn f(id: u64, at: i64) {} }
        };
        let args = quote!(key = "a:<id>", ttl = 1, value = at);
        let cases = [
            (
                quote!(#[write_behind(key = "b:<id>", ttl = 1, value = at)]),
                "`#[write_behind]` is written twice on this function: each would queue the write; keep one",
            ),
            (
                quote!(#[cache_runtime::invalidates(key = "b:<id>")]),
                "`#[write_behind]` and `#[invalidates]` can't be on one function: `#[write_behind]` returns before the body runs, so `#[invalidates]` would act before the database has the write; `#[write_behind]` already stores the new value (add `tags` to it to group entries)",
            ),
            (
                quote!(#[cached(key = "b:<id>", ttl = 1)]),
                "`#[write_behind]` and `#[cached]` can't be on one function: `#[write_behind]` returns before the body runs, so `#[cached]` would act before the database has the write; `#[write_behind]` already stores the new value (add `tags` to it to group entries)",
            ),
        ];
        for (attribute, expected) in cases {
            let errors = errors_in(write_behind(args.clone(), function(attribute.clone())));
            assert_eq!(errors, [expected], "{attribute}");
        }
        // The others see it too.
        let errors = errors_in(crate::validate::testing::write_through(
            quote!(key = "a:<id>", ttl = 1),
            function(quote!(#[write_behind(key = "b:<id>", ttl = 1, value = at)])),
        ));
        assert_one(
            &errors[..1],
            "`#[write_behind]` and `#[write_through]` can't be on one function",
            "write_through",
        );
    }

    #[test]
    fn lint_levels_and_cfgs_are_repeated_on_the_siblings() {
        let plan = planned(write_behind(
            quote!(key = "k", ttl = 1, value = at),
            quote! {
                /// Docs stay on the function.
                #[cfg(feature = "seen")]
                #[allow(clippy::unused_async)]
                #[expect(unused)]
                #[tracing::instrument]
                async fn f(at: i64) {
                    #![allow(unused_variables)]
                }
            },
        ));
        let repeated: Vec<String> = plan
            .sibling_attrs
            .iter()
            .map(|attr| attr.to_token_stream().to_string())
            .collect();
        assert_eq!(
            repeated,
            [
                "# [cfg (feature = \"seen\")]",
                "# [allow (clippy :: unused_async)]"
            ]
        );
    }
}
