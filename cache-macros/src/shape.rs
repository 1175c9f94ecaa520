//! Classifies a function's return type into the four shapes the runtime
//! knows how to cache.
//!
//! Only the last path segment is looked at, so `io::Result<T>`,
//! `anyhow::Result<T>` and `std::option::Option<T>` are recognised. A macro
//! cannot resolve type aliases, so a user alias such as `type Found =
//! Option<User>` is treated as a plain value.

use syn::{GenericArgument, PathArguments, PathSegment, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `T`: every value is cached.
    Plain,
    /// `Option<T>`: `None` is cached only with `negative = N`.
    Option,
    /// `Result<T, E>`: `Err` is never cached.
    Result,
    /// `Result<Option<T>, E>`: `Ok(None)` is cached only with `negative = N`.
    ResultOption,
}

impl Shape {
    pub(crate) fn of(return_type: &Type) -> Shape {
        match last_segment(return_type) {
            Some(segment) if segment.ident == "Option" => Shape::Option,
            Some(segment) if segment.ident == "Result" => {
                let first_argument = match &segment.arguments {
                    PathArguments::AngleBracketed(arguments) => arguments.args.first(),
                    _ => None,
                };
                match first_argument {
                    Some(GenericArgument::Type(ok)) if Shape::of(ok) == Shape::Option => {
                        Shape::ResultOption
                    }
                    _ => Shape::Result,
                }
            }
            _ => Shape::Plain,
        }
    }

    /// Whether the function can return "not found", which `negative` caches.
    pub(crate) fn has_none(self) -> bool {
        matches!(self, Shape::Option | Shape::ResultOption)
    }

    /// The innermost value type `T` of `return_type` (of this shape), the one
    /// that is stored; `None` when it is not written out (a `Result` alias
    /// without type arguments).
    pub(crate) fn stored_type(self, return_type: &Type) -> Option<&Type> {
        match self {
            Shape::Plain => Some(return_type),
            Shape::Option | Shape::Result => first_type_argument(return_type),
            Shape::ResultOption => first_type_argument(return_type).and_then(first_type_argument),
        }
    }

    /// The marker type's name in `__private::shape`.
    pub(crate) fn marker_name(self) -> &'static str {
        match self {
            Shape::Plain => "Plain",
            Shape::Option => "Option",
            Shape::Result => "Result",
            Shape::ResultOption => "ResultOption",
        }
    }
}

/// `T` in `Option<T>`, `Result<T, E>` or `io::Result<T>`.
fn first_type_argument(ty: &Type) -> Option<&Type> {
    match &last_segment(ty)?.arguments {
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
    fn classifies_by_the_last_path_segment() {
        let cases: [(Type, Shape); 12] = [
            (parse_quote!(User), Shape::Plain),
            (parse_quote!(Vec<Option<User>>), Shape::Plain),
            (parse_quote!(&'static str), Shape::Plain),
            (parse_quote!((u32, u32)), Shape::Plain),
            (parse_quote!(Option<User>), Shape::Option),
            (parse_quote!(std::option::Option<User>), Shape::Option),
            (parse_quote!(Result<User, DbError>), Shape::Result),
            (parse_quote!(io::Result<User>), Shape::Result),
            (parse_quote!(anyhow::Result<Vec<User>>), Shape::Result),
            (
                parse_quote!(Result<Option<User>, DbError>),
                Shape::ResultOption,
            ),
            (
                parse_quote!(std::io::Result<core::option::Option<User>>),
                Shape::ResultOption,
            ),
            (parse_quote!((Option<User>)), Shape::Option),
        ];
        for (ty, expected) in cases {
            assert_eq!(Shape::of(&ty), expected, "{}", quote::quote!(#ty));
        }
    }

    #[test]
    fn finds_the_stored_type() {
        let cases: [(Type, Option<&str>); 7] = [
            (parse_quote!(User), Some("User")),
            (parse_quote!(()), Some("()")),
            (parse_quote!(Option<User>), Some("User")),
            (parse_quote!(Result<(), DbError>), Some("()")),
            (parse_quote!(io::Result<Vec<u8>>), Some("Vec < u8 >")),
            (parse_quote!(Result<Option<User>, DbError>), Some("User")),
            (parse_quote!(Result), None),
        ];
        for (ty, expected) in cases {
            let stored = Shape::of(&ty)
                .stored_type(&ty)
                .map(|stored| quote::quote!(#stored).to_string());
            assert_eq!(stored.as_deref(), expected, "{}", quote::quote!(#ty));
        }
    }

    #[test]
    fn only_option_shapes_have_none() {
        assert!(Shape::Option.has_none() && Shape::ResultOption.has_none());
        assert!(!Shape::Plain.has_none() && !Shape::Result.has_none());
    }
}
