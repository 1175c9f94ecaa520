//! Questions about the types in a signature.

use quote::ToTokens;
use syn::{GenericArgument, PathArguments, Type};

use crate::plan::BatchForm;
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

/// For the parameter of `batch(id in ids)`: `Vec<K>` (any path ending in
/// `Vec`, such as `std::vec::Vec<K>`) or `&[K]`, and `K`. The type is read
/// as written: an alias of either is not seen through.
pub(super) fn batch_form(ty: &Type) -> Option<(BatchForm, &Type)> {
    match ungrouped(ty) {
        Type::Reference(reference) if reference.mutability.is_none() => {
            match ungrouped(&reference.elem) {
                Type::Slice(slice) => Some((BatchForm::Borrowed, &slice.elem)),
                _ => None,
            }
        }
        Type::Path(path) if path.qself.is_none() => {
            let last = path.path.segments.last()?;
            let PathArguments::AngleBracketed(arguments) = &last.arguments else {
                return None;
            };
            match (arguments.args.len(), arguments.args.first()?) {
                (1, GenericArgument::Type(element)) if last.ident == "Vec" => {
                    Some((BatchForm::Owned, element))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quote::ToTokens;
    use syn::parse_quote;

    use super::*;

    #[test]
    fn a_batch_parameter_is_a_vec_or_a_slice_reference() {
        let cases: [(Type, Option<(BatchForm, &str)>); 9] = [
            (parse_quote!(Vec<u64>), Some((BatchForm::Owned, "u64"))),
            (
                parse_quote!(std::vec::Vec<UserId>),
                Some((BatchForm::Owned, "UserId")),
            ),
            (parse_quote!(&[u64]), Some((BatchForm::Borrowed, "u64"))),
            (
                parse_quote!(&'a [(u32, u64)]),
                Some((BatchForm::Borrowed, "(u32 , u64)")),
            ),
            (parse_quote!(&mut [u64]), None),
            (parse_quote!(&Vec<u64>), None),
            (parse_quote!(HashSet<u64>), None),
            (parse_quote!(Vec<u64, A>), None),
            (parse_quote!([u64; 3]), None),
        ];
        for (ty, expected) in cases {
            let found = batch_form(&ty)
                .map(|(form, element)| (form, element.to_token_stream().to_string()));
            let expected = expected.map(|(form, element)| (form, element.to_owned()));
            assert_eq!(found, expected, "{}", ty.to_token_stream());
        }
    }
}
