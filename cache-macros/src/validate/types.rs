//! Questions about the types in a signature.

use quote::ToTokens;
use syn::Type;

use crate::shape::ungrouped;

/// Whether `impl Trait` appears anywhere in the type.
pub(super) fn mentions_impl_trait(ty: &Type) -> bool {
    fn has_impl(tokens: proc_macro2::TokenStream) -> bool {
        tokens.into_iter().any(|token| match token {
            proc_macro2::TokenTree::Ident(ident) => ident == "impl",
            proc_macro2::TokenTree::Group(group) => has_impl(group.stream()),
            _ => false,
        })
    }
    has_impl(ty.to_token_stream())
}

/// `()`, through invisible groups and parentheses.
pub(super) fn is_unit(ty: &Type) -> bool {
    matches!(ungrouped(ty), Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// For a reference type `&T` / `&mut T` (through invisible groups and
/// parentheses): whether it is `&mut`, and `T`.
pub(super) fn referent(ty: &Type) -> Option<(bool, &Type)> {
    match ungrouped(ty) {
        Type::Reference(reference) => Some((reference.mutability.is_some(), &reference.elem)),
        _ => None,
    }
}
