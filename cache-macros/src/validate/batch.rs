//! `#[cached(batch(id in ids))]`: the parameter `ids` holds many ids, each
//! with an entry of its own under the key the template renders with `<id>`
//! bound to it. The parameter is a `Vec<K>` or a `&[K]`, the key uses the
//! element, and the options that act on one key's load (`lock`, `early`,
//! `stale`) or store what a batch does not render (`tags`) are refused.
//!
//! The return type (`HashMap<K, V>` or `Result<HashMap<K, V>, E>`) is the
//! compiler's to check, through the runtime's `Batched` trait, as it checks
//! the other return shapes (aliases included).

use proc_macro2::{Ident, Span};
use syn::{FnArg, Pat, PatIdent, PatType, Signature};

use super::parameters::{Element, Parameters, cfg_of, name_of};
use super::types::{batch_form, mentions_impl_trait, referent};
use super::{Report, Stage};
use crate::args::{Args, BatchSpec, Setting};
use crate::errors::Errors;
use crate::key::KeyTemplate;
use crate::plan::Batch;

/// The element `id`, with its type `K` when `ids` is a `Vec<K>` or a
/// `&[K]`, so that the key's `<id>` placeholders resolve before anything
/// else about the batch is checked (by [`plan`]).
pub(super) fn element<'a>(batch: &BatchSpec, signature: &'a Signature) -> Element<'a> {
    let ty = plain_parameter(signature, &batch.parameter)
        .and_then(|(typed, _)| batch_form(&typed.ty))
        .map(|(_, element)| element);
    Element {
        ident: batch.element.clone(),
        ty,
    }
}

/// The parameter named `name`, when it is a plain name (`ids`, `mut ids`),
/// with its pattern.
fn plain_parameter<'a>(
    signature: &'a Signature,
    name: &Ident,
) -> Option<(&'a PatType, &'a PatIdent)> {
    signature.inputs.iter().find_map(|input| match input {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(binding) if name_of(&binding.ident) == name_of(name) => {
                Some((typed, binding))
            }
            _ => None,
        },
        FnArg::Receiver(_) => None,
    })
}

/// Checks `batch(id in ids)` against the function and the other options;
/// the plan unless something about it is wrong (reported). `key` is the key
/// template and the literal it was written in, when it parsed.
pub(super) fn plan(
    args: &Args,
    batch: &Setting<BatchSpec>,
    parameters: &Parameters,
    key: Option<(&KeyTemplate, Span)>,
    report: &mut Report,
) -> Option<Batch> {
    let BatchSpec { element, parameter } = &batch.value;
    let errors = report.stage(Stage::Batch);
    refuse_options_acting_on_one_key(args, errors);
    let element_is_free = check_element_name(element, parameter, parameters, errors);
    let batch = batch_parameter(element, parameter, parameters, errors);
    check_key_uses_element(
        args,
        element,
        parameter,
        key,
        report.stage(Stage::Parameters),
    );
    batch.filter(|_| element_is_free)
}

/// `lock`, `early`, `stale` and `tags`, each on its name.
fn refuse_options_acting_on_one_key(args: &Args, errors: &mut Errors) {
    let refused = [
        (
            args.lock.as_ref().map(|lock| lock.name),
            "lock",
            "the Redis lock guards the load of one key, and a batch loads many keys in one run of the body",
        ),
        (
            args.early.as_ref().map(|early| early.name),
            "early",
            "it refreshes one key in the background, and a batch loads its keys together, in the call",
        ),
        (
            args.stale.as_ref().map(|stale| stale.name),
            "stale",
            "it refreshes one key in the background, and a batch loads its keys together, in the call",
        ),
        (
            args.tags.as_ref().map(|tags| tags.name),
            "tags",
            "a batch stores its entries without tags; invalidate them by key (`#[invalidates(key = \"...\")]`, with the same template)",
        ),
    ];
    for (written, option, why) in refused {
        if let Some(span) = written {
            errors.at(
                span,
                format!("`{option}` is not supported with `batch`: {why}"),
            );
        }
    }
}

/// The element needs a name of its own: a parameter's or a generic
/// parameter's name would make `<id>` mean two things.
fn check_element_name(
    element: &Ident,
    parameter: &Ident,
    parameters: &Parameters,
    errors: &mut Errors,
) -> bool {
    let name = name_of(element);
    let clashes_with = if parameters
        .bindings
        .iter()
        .any(|binding| binding.name == name)
    {
        "a parameter"
    } else if parameters
        .generics
        .iter()
        .any(|generic| generic.name == name)
    {
        "a generic parameter"
    } else {
        return true;
    };
    let suggestion = if name == "id" { "item" } else { "id" };
    errors.at(
        element.span(),
        format!(
            "`{name}` is already {clashes_with} of `{}`, so `<{name}>` in the key would name two things; give each element a name of its own, such as `batch({suggestion} in {parameter})`",
            parameters.function_name()
        ),
    );
    false
}

/// The batch, when its parameter is a plain name whose type is a `Vec<K>`
/// or a `&[K]`, declared in every build.
fn batch_parameter(
    element: &Ident,
    parameter: &Ident,
    parameters: &Parameters,
    errors: &mut Errors,
) -> Option<Batch> {
    let function = parameters.function_name();
    if parameter == "self" {
        errors.at(
            parameter.span(),
            format!(
                "`batch` takes a parameter holding the ids, not the receiver: add one such as `ids: Vec<u64>` to `{function}` and write `batch({element} in ids)`"
            ),
        );
        return None;
    }
    let Some((typed, binding)) = plain_parameter(parameters.signature, parameter) else {
        let name = name_of(parameter);
        let message = if parameters
            .bindings
            .iter()
            .any(|binding| binding.name == name)
        {
            format!(
                "`{parameter}` is bound inside a pattern; `batch` takes a parameter that is a plain name, such as `{parameter}: Vec<u64>`"
            )
        } else if parameters.bindings.is_empty() {
            format!("`batch` names `{parameter}`, which is not a parameter: `{function}` has none")
        } else {
            format!(
                "`batch` names `{parameter}`, which is not a parameter of `{function}`; {}",
                parameters.names()
            )
        };
        errors.at(parameter.span(), message);
        return None;
    };
    let mut usable = true;
    if binding.by_ref.is_some() || binding.subpat.is_some() {
        errors.on(
            &typed.pat,
            format!(
                "`batch` takes a parameter that is a plain name, such as `{parameter}: Vec<u64>`"
            ),
        );
        usable = false;
    }
    if !cfg_of(&typed.attrs).is_empty() {
        errors.on(
            &typed.pat,
            format!(
                "the parameter of `batch` can't be under `#[cfg]`: every build of `{function}` renders its keys from `{parameter}`"
            ),
        );
        usable = false;
    }
    let Some((form, element_type)) = batch_form(&typed.ty) else {
        let hint = match referent(&typed.ty) {
            Some((false, _)) => "; take a slice, `&[K]`, rather than another reference",
            Some((true, _)) => "; take `&[K]`: the ids are only read",
            None => "",
        };
        errors.on(
            &typed.ty,
            format!(
                "the parameter of `batch({element} in {parameter})` must be a `Vec<K>` or a `&[K]`, whose elements `K` are the ids (`Clone + Eq + Hash`, the keys of the returned `HashMap`){hint}"
            ),
        );
        return None;
    };
    if mentions_impl_trait(element_type) {
        errors.on(
            element_type,
            "the ids of a batch can't be `impl Trait`: their type is the key type of the returned `HashMap`, which names it",
        );
        return None;
    }
    usable.then(|| Batch {
        element: element.clone(),
        parameter: binding.ident.clone(),
        mutability: binding.mutability,
        element_type: Box::new(element_type.clone()),
        form,
    })
}

/// The key renders each id's entry, so it must use the element; and the
/// parameter itself is neither rendered nor skipped (its elements are).
fn check_key_uses_element(
    args: &Args,
    element: &Ident,
    parameter: &Ident,
    key: Option<(&KeyTemplate, Span)>,
    errors: &mut Errors,
) {
    let parameter_name = name_of(parameter);
    // `skip(ids)` with `<ids>` in the key is reported as any skipped
    // parameter in the key is.
    let rendered = key.is_some_and(|(key, _)| key.uses(&parameter_name));
    for skipped in args.skip.iter().flat_map(|skip| &skip.value) {
        if name_of(skipped) == parameter_name && !rendered {
            errors.at(
                skipped.span(),
                format!(
                    "`{parameter}` is the parameter of `batch`: each of its elements is keyed by `<{element}>`, so it needs no `skip`; remove it from `skip(...)`"
                ),
            );
        }
    }
    let Some((key, written)) = key else {
        return;
    };
    for placeholder in key.placeholders() {
        if name_of(&placeholder.root) == parameter_name {
            errors.at(
                placeholder.span,
                format!(
                    "placeholder `{}` renders all the ids of the batch into one key; each id has a key of its own: write `<{element}>`",
                    placeholder.written
                ),
            );
        }
    }
    if key.well_formed && !key.uses(&name_of(element)) {
        errors.at(
            written,
            format!(
                "the key does not use `<{element}>`, so every id of `batch({element} in {parameter})` would share one entry; add `<{element}>` to the key, such as `key = \"{}:<{element}>\"`",
                key.written
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use crate::plan::BatchForm;
    use crate::validate::testing::{cached, errors_of, planned};

    #[test]
    fn plans_a_vec_or_a_slice_of_ids() {
        let plan = planned(cached(
            quote!(key = "org:<org>:user:<id>", ttl = 300, negative = 60, batch(id in ids), skip(db)),
            quote! {
                async fn get_users(db: &Db, org: u32, mut ids: Vec<u64>) -> Result<HashMap<u64, User>, DbError> {
                    loop {}
                }
            },
        ));
        let batch = plan.batch.expect("`batch` was given");
        assert_eq!(batch.element, "id");
        assert_eq!(batch.parameter, "ids");
        assert!(batch.mutability.is_some());
        assert_eq!(batch.form, BatchForm::Owned);
        assert_eq!(batch.element_type.to_token_stream().to_string(), "u64");
        assert!(plan.refresh.is_none() && !plan.lock);
        assert_eq!(
            plan.negative.map(|negative| negative.lifetime.seconds()),
            Some(Some(60))
        );
        // `<id>` resolves to the element, with fields too.
        let roots: Vec<String> = plan
            .entry
            .key
            .placeholders()
            .map(|placeholder| {
                placeholder
                    .source
                    .as_ref()
                    .expect("resolved")
                    .ident
                    .to_string()
            })
            .collect();
        assert_eq!(roots, ["org", "id"]);

        let plan = planned(cached(
            quote!(key = "user:<user.id>:<user.0>", ttl = 1, batch(user in users), cache = self.cache),
            quote! {
                async fn f(&self, users: &'a [UserRef]) -> HashMap<UserRef, User> { loop {} }
            },
        ));
        let batch = plan.batch.expect("`batch` was given");
        assert_eq!(batch.form, BatchForm::Borrowed);
        assert_eq!(batch.element_type.to_token_stream().to_string(), "UserRef");
    }

    #[test]
    fn a_type_parameter_of_the_ids_is_keyed_by_their_values() {
        let function = quote! {
            async fn f<K: Display + Clone + Eq + Hash>(ids: Vec<K>) -> HashMap<K, u8> { loop {} }
        };
        let errors = errors_of(
            quote!(key = "n:<id>", ttl = 1, batch(id in ids)),
            function.clone(),
        );
        assert!(errors.is_empty(), "{errors:?}");
        // Through a field, `K` is not what the key renders.
        let errors = errors_of(
            quote!(key = "n:<id.0>", ttl = 1, batch(id in ids)),
            function,
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("type parameter `K` is not in the key"),
            "{errors:?}"
        );
    }

    #[test]
    fn the_parameter_is_a_plain_vec_or_slice_that_exists() {
        let vec_or_slice = "the parameter of `batch(id in ids)` must be a `Vec<K>` or a `&[K]`, whose elements `K` are the ids (`Clone + Eq + Hash`, the keys of the returned `HashMap`)";
        let cases = [
            (quote!(ids: HashSet<u64>), vec_or_slice.to_owned()),
            (
                quote!(ids: &Vec<u64>),
                format!("{vec_or_slice}; take a slice, `&[K]`, rather than another reference"),
            ),
            (
                quote!(ids: &mut [u64]),
                format!("{vec_or_slice}; take `&[K]`: the ids are only read"),
            ),
            (
                quote!(ids: Vec<impl Display>),
                "the ids of a batch can't be `impl Trait`: their type is the key type of the returned `HashMap`, which names it".to_owned(),
            ),
            (
                quote!(ref ids: Vec<u64>),
                "`batch` takes a parameter that is a plain name, such as `ids: Vec<u64>`".to_owned(),
            ),
            (
                quote!(#[cfg(unix)] ids: Vec<u64>),
                "the parameter of `batch` can't be under `#[cfg]`: every build of `f` renders its keys from `ids`".to_owned(),
            ),
            (
                quote!((ids, n): (Vec<u64>, u8)),
                "`ids` is bound inside a pattern; `batch` takes a parameter that is a plain name, such as `ids: Vec<u64>`".to_owned(),
            ),
            (
                quote!(idz: Vec<u64>),
                "`batch` names `ids`, which is not a parameter of `f`; its parameters are `idz`".to_owned(),
            ),
        ];
        for (parameter, expected) in cases {
            let errors = errors_of(
                quote!(key = "u:<id>", ttl = 1, batch(id in ids), skip(n, idz)),
                quote! { async fn f(#parameter) -> HashMap<u64, u8> { loop {} } },
            );
            let errors: Vec<_> = errors
                .into_iter()
                .filter(|error| !error.starts_with("`skip` lists"))
                .collect();
            assert_eq!(errors, [expected], "{parameter}");
        }
        let errors = errors_of(
            quote!(key = "u:<id>", ttl = 1, batch(id in ids)),
            quote! { async fn all() -> HashMap<u64, u8> { loop {} } },
        );
        assert_eq!(
            errors,
            ["`batch` names `ids`, which is not a parameter: `all` has none"]
        );
        let errors = errors_of(
            quote!(key = "u:<id>", ttl = 1, batch(id in self)),
            quote! { async fn f(&self) -> HashMap<u64, u8> { loop {} } },
        );
        assert_eq!(
            errors,
            [
                "`batch` takes a parameter holding the ids, not the receiver: add one such as `ids: Vec<u64>` to `f` and write `batch(id in ids)`"
            ]
        );
    }

    #[test]
    fn the_element_has_a_name_of_its_own() {
        let function = quote! {
            async fn find<T: Tenant>(org: u32, ids: Vec<u64>) -> HashMap<u64, u8> { loop {} }
        };
        let cases = [
            (
                quote!(batch(org in ids)),
                "`org` is already a parameter of `find`, so `<org>` in the key would name two things; give each element a name of its own, such as `batch(id in ids)`",
            ),
            (
                quote!(batch(ids in ids)),
                "`ids` is already a parameter of `find`, so `<ids>` in the key would name two things; give each element a name of its own, such as `batch(id in ids)`",
            ),
            (
                quote!(batch(T in ids)),
                "`T` is already a generic parameter of `find`, so `<T>` in the key would name two things; give each element a name of its own, such as `batch(id in ids)`",
            ),
        ];
        for (batch, expected) in cases {
            let errors = errors_of(
                quote!(key = "u:<org>:<T>:<ids>", ttl = 1, #batch),
                function.clone(),
            );
            assert_eq!(
                errors.first().map(String::as_str),
                Some(expected),
                "{batch}: {errors:#?}"
            );
        }
    }

    #[test]
    fn the_key_renders_each_element() {
        let function =
            quote! { async fn f(org: u32, ids: Vec<u64>) -> HashMap<u64, u8> { loop {} } };
        let errors = errors_of(
            quote!(key = "org:<org>", ttl = 1, batch(id in ids)),
            function.clone(),
        );
        assert_eq!(
            errors,
            [
                "the key does not use `<id>`, so every id of `batch(id in ids)` would share one entry; add `<id>` to the key, such as `key = \"org:<org>:<id>\"`"
            ]
        );
        let errors = errors_of(
            quote!(key = "org:<org>:<id>", ttl = 1, batch(id in ids), skip(ids)),
            function.clone(),
        );
        assert_eq!(
            errors,
            [
                "`ids` is the parameter of `batch`: each of its elements is keyed by `<id>`, so it needs no `skip`; remove it from `skip(...)`"
            ]
        );
        let errors = errors_of(
            quote!(key = "org:<org>:<ids>:<id>", ttl = 1, batch(id in ids)),
            function.clone(),
        );
        assert_eq!(
            errors,
            [
                "placeholder `<ids>` renders all the ids of the batch into one key; each id has a key of its own: write `<id>`"
            ]
        );
        // The other parameters are keyed or skipped as usual; the batch's is
        // keyed by its elements.
        let errors = errors_of(
            quote!(key = "user:<id>", ttl = 1, batch(id in ids)),
            function,
        );
        assert_eq!(
            errors,
            [
                "parameter `org` is not in the key; add `<org>` to the key or `skip(org)`: forgetting one serves one user's data to another"
            ]
        );
    }

    #[test]
    fn a_batch_that_did_not_parse_or_names_no_parameter_causes_no_other_errors() {
        let function =
            quote! { async fn f(org: u32, ids: Vec<u64>) -> HashMap<u64, u8> { loop {} } };
        // Not also "`<id>` names no parameter", nor "`ids` is not in the
        // key": which are the element and the parameter is unknown.
        let errors = errors_of(
            quote!(key = "org:<org>:<id>", ttl = 1, batch(id ids)),
            function.clone(),
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("expected `in` between `id` and the parameter"),
            "{errors:?}"
        );
        let errors = errors_of(
            quote!(key = "org:<org>:<id>", ttl = 1, batch(id in idz)),
            function.clone(),
        );
        assert_eq!(
            errors,
            [
                "`batch` names `idz`, which is not a parameter of `f`; its parameters are `org`, `ids`"
            ]
        );
        // A placeholder that is neither is still reported once the batch
        // parsed.
        let errors = errors_of(
            quote!(key = "org:<org>:<id>:<x>", ttl = 1, batch(id in ids)),
            function,
        );
        assert_eq!(
            errors,
            ["placeholder `<x>` names no parameter of `f`; its parameters are `org`, `ids`"]
        );
    }

    #[test]
    fn options_acting_on_one_key_are_refused() {
        let errors = errors_of(
            quote!(key = "u:<id>", ttl = 1, lock, early, stale = 5, tags = ["all"], batch(id in ids)),
            quote! { async fn f(ids: &mut Vec<u64>) -> HashMap<u64, u8> { loop {} } },
        );
        assert_eq!(
            errors,
            [
                "`lock` is not supported with `batch`: the Redis lock guards the load of one key, and a batch loads many keys in one run of the body",
                "`early` is not supported with `batch`: it refreshes one key in the background, and a batch loads its keys together, in the call",
                "`stale` is not supported with `batch`: it refreshes one key in the background, and a batch loads its keys together, in the call",
                "`tags` is not supported with `batch`: a batch stores its entries without tags; invalidate them by key (`#[invalidates(key = \"...\")]`, with the same template)",
                // Not also "`&mut` can't run in the background".
                "the parameter of `batch(id in ids)` must be a `Vec<K>` or a `&[K]`, whose elements `K` are the ids (`Clone + Eq + Hash`, the keys of the returned `HashMap`); take `&[K]`: the ids are only read",
            ]
        );
    }
}
