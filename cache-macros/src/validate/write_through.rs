//! `#[write_through]`: one key, a TTL, and a return type that carries a
//! value. Its parameters need not all be in the key: it stores what the body
//! returned, whatever the call.

use syn::{ReturnType, Signature, Type};

use super::front::Front;
use super::types::{is_unit, mentions_impl_trait};
use super::{Report, Stage};
use crate::args::{Args, MacroKind};
use crate::errors::Errors;
use crate::plan::WriteThroughPlan;
use crate::shape::visibly_stored;

/// `#[write_through]`'s own rules, checked after the front's: the function
/// returns a value to store, and each generic parameter is in the key or in
/// `skip` (the entry `scaled::<2>` writes is not `scaled::<3>`'s). The plan
/// unless a part of it is missing (which was reported).
pub(super) fn plan(args: &Args, front: Front, report: &mut Report) -> Option<WriteThroughPlan> {
    let returned = stored_value(front.parameters.signature, report.stage(Stage::Return));
    let conditional_errors = front.check_keyed(
        MacroKind::WriteThrough,
        args.skip.as_ref(),
        report,
        |_, _, _| {},
    );
    Some(WriteThroughPlan {
        common: front.common(returned?, conditional_errors),
        entry: front.entry()?,
    })
}

/// `#[write_through]`'s return type; `None` (with an error) when it visibly
/// carries no value to store: `()`, `Result<(), E>`, `Option<()>`.
fn stored_value(signature: &Signature, errors: &mut Errors) -> Option<Type> {
    const NO_VALUE: &str = "`#[write_through]` stores the returned value; this function returns none: use `#[invalidates]`";
    match &signature.output {
        ReturnType::Type(_, return_type) if mentions_impl_trait(return_type) => {
            errors.on(
                return_type,
                "`#[write_through]` needs a concrete return type, not `impl Trait`: `#[cached]` functions read the stored value back as that type",
            );
            None
        }
        ReturnType::Type(_, return_type) => {
            if visibly_stored(return_type).is_some_and(is_unit) {
                errors.on(return_type, NO_VALUE);
                return None;
            }
            Some((**return_type).clone())
        }
        ReturnType::Default => {
            errors.at(signature.ident.span(), NO_VALUE);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use crate::validate::testing::{assert_one, errors_in, planned, write_through, written};

    #[test]
    fn write_through_plans_a_site() {
        let plan = planned(write_through(
            quote! { key = "user:<id>", ttl = 300, jitter = 0.1, stale = 60, tags = ["org:<org>"], cache = self.cache },
            quote! {
                async fn rename_user(&self, id: u64, org: u32, name: String) -> Result<User, DbError> { loop {} }
            },
        ));
        assert_eq!(plan.common.function_name, "rename_user");
        assert_eq!(plan.entry.key.written, "user:<id>");
        assert_eq!(written(&plan.entry.tags), ["org:<org>"]);
        assert_eq!(plan.entry.ttl.seconds(), Some(300));
        assert_eq!(plan.entry.jitter, Some(0.1));
        assert_eq!(
            plan.entry.stale.map(|stale| stale.seconds()),
            Some(Some(60))
        );

        // The shape is the compiler's to find (aliases included).
        for return_type in [
            quote!(User),
            quote!(Option<User>),
            quote!(Result<Option<User>, E>),
            quote!(anyhow::Result<User>),
            quote!(ApiResult<User>),
        ] {
            let function = quote! { async fn f(id: u64, name: String) -> #return_type { loop {} } };
            let plan = planned(write_through(quote!(key = "user:<id>", ttl = 1), function));
            let planned = plan.common.return_type.to_token_stream().to_string();
            assert_eq!(planned, return_type.to_string());
        }
    }

    #[test]
    fn write_through_needs_a_value_a_key_and_a_ttl() {
        let no_value = "`#[write_through]` stores the returned value; this function returns none: use `#[invalidates]`";
        let not_concrete = "`#[write_through]` needs a concrete return type, not `impl Trait`: `#[cached]` functions read the stored value back as that type";
        let cases = [
            (quote!(-> ()), no_value),
            (quote!(-> Result<(), E>), no_value),
            (quote!(-> std::io::Result<()>), no_value),
            (quote!(-> Option<()>), no_value),
            (quote!(-> Result<Option<()>, E>), no_value),
            (quote!(-> Option<Result<(), E>>), no_value),
            (quote!(), no_value),
            (quote!(-> impl Display), not_concrete),
        ];
        for (returns, expected) in cases {
            let function = quote! { async fn f() #returns { loop {} } };
            let errors = errors_in(write_through(quote!(key = "k", ttl = 1), function));
            assert_eq!(errors, [expected], "{returns}");
        }

        let errors = errors_in(write_through(
            quote!(),
            quote! { async fn f(id: u64) -> u8 { 1 } },
        ));
        assert_eq!(
            errors,
            [
                "missing `key = \"...\"`: `#[write_through]` stores the returned value under a key template, such as `key = \"user:<id>\"`",
                "missing `ttl = N`, the seconds a value stays fresh: how stale a value may be is a decision for each function, so there is no default",
            ]
        );

        let errors = errors_in(write_through(
            quote! { key = "user:<uid>", ttl = 0, jitter = 1, stale = 0, negative = 5, tags = ["<x>"] },
            quote! { fn f(self, id: u64) -> u8 { 1 } },
        ));
        assert_eq!(errors.len(), 8, "{errors:#?}");
        assert_one(&errors[..1], "unknown option `negative`", "parsing");
        let not_async =
            "`#[write_through]` requires an `async fn`: storing the value waits on Redis";
        assert_eq!(errors[1], not_async);
        assert_one(
            &errors[2..3],
            "`#[write_through]` methods must take `&self`",
            "receiver",
        );

        // Parameters need not be in the key.
        let function = quote! { async fn f(id: u64, name: String) -> u8 { 1 } };
        let errors = errors_in(write_through(quote!(key = "user:<id>", ttl = 1), function));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn generic_parameters_are_keyed_or_skipped() {
        let function = quote! { async fn save<const N: u64, D: Db>(db: &D, id: u64) -> u64 { 1 } };
        let errors = errors_in(write_through(
            quote!(key = "s:<id>", ttl = 1),
            function.clone(),
        ));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_one(
            &errors[..1],
            "const generic parameter `N` is not in the key",
            "N",
        );
        assert_one(&errors[1..], "type parameter `D` is not in the key", "D");
        let errors = errors_in(write_through(
            quote!(key = "s:<N>:<id>", ttl = 1, skip(D)),
            function.clone(),
        ));
        assert!(errors.is_empty(), "{errors:?}");
        // Only generic parameters need `skip` here.
        let errors = errors_in(write_through(
            quote!(key = "s:<N>:<id>", ttl = 1, skip(D, db)),
            function,
        ));
        assert_eq!(
            errors,
            [
                "`#[write_through]` does not require every parameter in the key, so only generic parameters need `skip`; remove `db` from `skip(...)`"
            ]
        );
    }
}
