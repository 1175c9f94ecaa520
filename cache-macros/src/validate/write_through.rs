//! `#[write_through]`: one key, a TTL, and a return type that carries a
//! value. Its parameters need not all be in the key: it stores what the body
//! returned, whatever the call.

use syn::{ReturnType, Signature, Type};

use super::front::Front;
use super::types::{is_unit, mentions_impl_trait};
use super::{Report, Stage};
use crate::errors::Errors;
use crate::plan::WriteThroughPlan;
use crate::shape::Shape;

/// `#[write_through]`'s own rule, checked after the front's: the function
/// returns a value to store. The plan unless a part of it is missing (which
/// was reported).
pub(super) fn plan(front: Front, report: &mut Report) -> Option<WriteThroughPlan> {
    let returned = stored_value(front.parameters.signature, report.stage(Stage::Return));
    Some(WriteThroughPlan {
        common: front.common(returned?),
        entry: front.entry()?,
    })
}

/// `#[write_through]`'s return type and its shape; `None` (with an error)
/// when it carries no value to store: `()`, `Result<(), E>`, `Option<()>`.
fn stored_value(signature: &Signature, errors: &mut Errors) -> Option<(Type, Shape)> {
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
            let shape = Shape::of(return_type);
            if shape.stored_type(return_type).is_some_and(is_unit) {
                errors.on(return_type, NO_VALUE);
                return None;
            }
            Some(((**return_type).clone(), shape))
        }
        ReturnType::Default => {
            errors.at(signature.ident.span(), NO_VALUE);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;
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
        assert_eq!(plan.entry.ttl_secs, 300);
        assert_eq!(plan.entry.jitter, Some(0.1));
        assert_eq!(plan.entry.stale_secs, Some(60));
        assert_eq!(plan.common.shape, Shape::Result);

        for (return_type, shape) in [
            (quote!(User), Shape::Plain),
            (quote!(Option<User>), Shape::Option),
            (quote!(Result<Option<User>, E>), Shape::ResultOption),
            (quote!(anyhow::Result<User>), Shape::Result),
        ] {
            let function = quote! { async fn f(id: u64, name: String) -> #return_type { loop {} } };
            let plan = planned(write_through(quote!(key = "user:<id>", ttl = 1), function));
            assert_eq!(plan.common.shape, shape, "{return_type}");
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
}
