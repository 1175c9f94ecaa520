//! Questions about the types in a signature.

use quote::ToTokens;
use syn::Type;

use crate::shape::ungrouped;

/// A type as a user would write it (`Result<String, io::Error>`), where
/// printing tokens would give `Result < String , io :: Error >`.
pub(super) fn compact(ty: &Type) -> String {
    let printed = ty.to_token_stream().to_string();
    let mut compacted = String::new();
    let mut previous = "";
    for piece in printed.split(' ') {
        let is_word =
            |text: &str| text.starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '\'');
        if (is_word(previous) && is_word(piece)) || matches!(previous, "," | "+") || piece == "+" {
            compacted.push(' ');
        }
        compacted.push_str(piece);
        previous = piece;
    }
    compacted
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_in_messages_read_as_written() {
        let cases: [(Type, &str); 4] = [
            (
                syn::parse_quote!(Result<String, std::io::Error>),
                "Result<String, std::io::Error>",
            ),
            (syn::parse_quote!(&'static str), "&'static str"),
            (
                syn::parse_quote!(Box<dyn Error + Send>),
                "Box<dyn Error + Send>",
            ),
            (syn::parse_quote!((u8, Vec<u8>)), "(u8, Vec<u8>)"),
        ];
        for (ty, expected) in cases {
            assert_eq!(compact(&ty), expected);
        }
    }
}
