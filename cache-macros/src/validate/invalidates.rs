//! `#[invalidates]`: at least one `key` or `tag` (checked by the front), any
//! return type. Its parameters need not all appear.

use syn::ReturnType;

use super::front::Front;
use crate::plan::InvalidatesPlan;

/// `#[invalidates]` has no rules of its own beyond the front's; any return
/// type is fine. Neither parameters nor generic parameters need appear in
/// its keys: deleting is safe whatever it deletes, and a generic function
/// (over a database handle, say) may well invalidate a key that no generic
/// parameter is part of.
pub(super) fn plan(front: Front) -> InvalidatesPlan {
    // What counts as success (`Ok`, or any value) the compiler finds from
    // the returned value's type: see `shape.rs`.
    let returned = match &front.parameters.signature.output {
        ReturnType::Type(_, return_type) => (**return_type).clone(),
        ReturnType::Default => syn::parse_quote!(()),
    };
    InvalidatesPlan {
        common: front.common(returned, Vec::new()),
        keys: front.keys,
        tags: front.tags,
    }
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use crate::validate::testing::{assert_one, errors_in, invalidates, planned, written};

    #[test]
    fn invalidates_keys_and_tags() {
        let plan = planned(invalidates(
            quote! { key = "user:<id>", tag = "org:<org>", key = "name:<data.name>", cache = self.cache },
            quote! {
                async fn update_user(&self, id: u64, org: u32, data: UserUpdate) -> Result<(), DbError> { Ok(()) }
            },
        ));
        assert_eq!(plan.common.function_name, "update_user");
        assert_eq!(written(&plan.keys), ["user:<id>", "name:<data.name>"]);
        assert_eq!(written(&plan.tags), ["org:<org>"]);
        let return_type = plan.common.return_type.to_token_stream().to_string();
        assert_eq!(return_type, "Result < () , DbError >");
        assert!(plan.common.cache.is_some());

        // Tags alone, no return type, parameters left out of every template.
        let function = quote! { async fn purge(org: u32, reason: String) {} };
        let plan = planned(invalidates(quote!(tag = "org:<org>"), function));
        assert!(plan.keys.is_empty());
        assert_eq!(plan.common.return_type.to_token_stream().to_string(), "()");
    }

    #[test]
    fn generic_parameters_need_not_be_in_its_keys() {
        let plan = planned(invalidates(
            quote!(key = "user:<id>", key = "s:<N>:<id>"),
            quote! { async fn update<const N: u64, D: Db>(db: &D, id: u64) {} },
        ));
        assert_eq!(written(&plan.keys), ["user:<id>", "s:<N>:<id>"]);
    }

    #[test]
    fn invalidates_reports_every_mistake() {
        let function = quote! { async fn f(id: u64) {} };
        let errors = errors_in(invalidates(quote!(), function.clone()));
        let nothing_named = "`#[invalidates]` needs at least one `key = \"...\"` or `tag = \"...\"`: they name what to delete after the body succeeds";
        assert_eq!(errors, [nothing_named]);
        // A key whose value did not parse is not also missing.
        let errors = errors_in(invalidates(quote!(key = user_key), function));
        assert_eq!(errors, ["expected string literal"]);

        let errors = errors_in(invalidates(
            quote! { key = "user:<uid>", tag = "org:*", key = "user:<uid>", ttl = 5 },
            quote! { fn f(&mut self, id: u64) {} },
        ));
        assert_eq!(
            errors,
            [
                "unknown option `ttl`; expected one of: `key`, `tag`, `cache`, `crate`; `#[invalidates]` only deletes entries: how long they live is set where they are stored (`#[cached]`, `#[write_through]`)",
                "`#[invalidates]` requires an `async fn`: deleting the entries waits on Redis",
                "`#[invalidates]` methods must take `&self`: the body runs in a future while the cache (such as `cache = self.cache`) stays borrowed, which rules out taking or changing `self`",
                "placeholder `<uid>` names no parameter of `f`; its parameters are `id`",
                "the key `user:<uid>` is written twice",
                "placeholder `<uid>` names no parameter of `f`; its parameters are `id`",
                "the tag can't contain `*`: `{ } * ? [ ]` are Redis hash-tag and pattern characters",
            ]
        );
        let errors = errors_in(invalidates(
            quote!(key = "k"),
            quote! { async fn f(self) {} },
        ));
        assert_one(
            &errors,
            "`#[invalidates]` methods must take `&self`",
            "receiver",
        );
    }
}
