//! What a return type, as written, visibly stores.
//!
//! The macro does not pick a function's return shape: it cannot see
//! through a type alias (`type ApiResult<T> = Result<T, String>`,
//! `sqlx::Result<T>`) nor tell `std`'s `Result` from a crate's own type of
//! that name, so a choice made by name would cache an alias's `Err`. The
//! expansion asks the compiler instead (`__private::shape_of!(ReturnType)`,
//! see the runtime's `shape` module), and `negative` on a return type
//! without a `None` is a type error there, on the `negative` option.
//!
//! What is left here is a hint read from the written type, for an error
//! that helps early: a `#[write_through]` whose written return type visibly
//! stores nothing (`()`, `Result<(), E>`, `Option<()>`) should be an
//! `#[invalidates]`. Only the last path segment is looked at, so
//! `io::Result<()>` counts too; an alias hides it, and then `()` is
//! stored, harmlessly.

use syn::{GenericArgument, PathArguments, PathSegment, Type};

/// The type a written return type visibly stores: `T` in `Option<T>`,
/// `Result<T, E>`, `io::Result<T>`, `Result<Option<T>, E>`,
/// `Option<Result<T, E>>`; the type itself otherwise. `None` when it is not
/// written out (a `Result` alias without type arguments).
pub(crate) fn visibly_stored(return_type: &Type) -> Option<&Type> {
    match last_segment(return_type) {
        Some(segment) if segment.ident == "Option" || segment.ident == "Result" => {
            let inner = first_type_argument(segment)?;
            match last_segment(inner) {
                Some(nested) if nested.ident == "Option" || nested.ident == "Result" => {
                    first_type_argument(nested)
                }
                _ => Some(inner),
            }
        }
        _ => Some(return_type),
    }
}

/// `T` in `Option<T>`, `Result<T, E>` or `io::Result<T>`.
fn first_type_argument(segment: &PathSegment) -> Option<&Type> {
    match &segment.arguments {
        PathArguments::AngleBracketed(arguments) => match arguments.args.first()? {
            GenericArgument::Type(first) => Some(first),
            _ => None,
        },
        _ => None,
    }
}

fn last_segment(ty: &Type) -> Option<&PathSegment> {
    match ungrouped(ty) {
        Type::Path(path) => path.path.segments.last(),
        _ => None,
    }
}

/// The type inside any invisible groups and parentheses: types passed
/// through `macro_rules!` arrive wrapped in invisible groups, and `(T)` is
/// the same type as `T`.
pub(crate) fn ungrouped(ty: &Type) -> &Type {
    match ty {
        Type::Group(group) => ungrouped(&group.elem),
        Type::Paren(paren) => ungrouped(&paren.elem),
        ty => ty,
    }
}

#[cfg(test)]
mod tests {
    use syn::parse_quote;

    use super::*;

    #[test]
    fn finds_what_the_written_type_stores() {
        let cases: [(Type, Option<&str>); 11] = [
            (parse_quote!(User), Some("User")),
            (parse_quote!(()), Some("()")),
            (
                parse_quote!(Vec<Option<User>>),
                Some("Vec < Option < User > >"),
            ),
            (parse_quote!(Option<User>), Some("User")),
            (parse_quote!(Result<(), DbError>), Some("()")),
            (parse_quote!(io::Result<Vec<u8>>), Some("Vec < u8 >")),
            (parse_quote!(Result<Option<User>, DbError>), Some("User")),
            (parse_quote!(Option<Result<(), DbError>>), Some("()")),
            (parse_quote!((Option<()>)), Some("()")),
            (parse_quote!(ApiResult<()>), Some("ApiResult < () >")),
            (parse_quote!(Result), None),
        ];
        for (ty, expected) in cases {
            let stored = visibly_stored(&ty).map(|stored| quote::quote!(#stored).to_string());
            assert_eq!(stored.as_deref(), expected, "{}", quote::quote!(#ty));
        }
    }
}
