//! The names a function's parameters bind, which templates and `skip` refer
//! to.

use proc_macro2::Ident;
use syn::ext::IdentExt;
use syn::{FnArg, Pat, Signature};

use crate::errors::Errors;
use crate::key::KeyTemplate;

/// A function's signature and the names its parameters bind, in order (the
/// receiver aside).
pub(super) struct Parameters<'a> {
    pub(super) signature: &'a Signature,
    pub(super) bindings: Vec<Binding<'a>>,
}

/// A name the function body can use that came from a parameter: the
/// parameter itself, or a name bound inside a destructuring pattern such as
/// `(a, b): (u32, u32)`, which each count as a parameter of their own.
pub(super) struct Binding<'a> {
    pub(super) ident: &'a Ident,
    /// Without `r#`, so `r#type` in the signature matches `<r#type>` and
    /// `skip(r#type)` however each is written.
    pub(super) name: String,
}

impl<'a> Parameters<'a> {
    pub(super) fn of(signature: &'a Signature) -> Self {
        let mut bindings = Vec::new();
        for input in &signature.inputs {
            if let FnArg::Typed(typed) = input {
                collect_bindings(&typed.pat, &mut bindings);
            }
        }
        Parameters {
            signature,
            bindings,
        }
    }

    /// The function's name without `r#`, as messages and logs show it.
    pub(super) fn function_name(&self) -> Ident {
        self.signature.ident.unraw()
    }

    /// Whether a parameter binds `ident`, however either is written.
    pub(super) fn binds(&self, ident: &Ident) -> bool {
        let name = name_of(ident);
        self.bindings.iter().any(|binding| binding.name == name)
    }

    /// Every placeholder must start with a parameter's name.
    pub(super) fn check_placeholders(&self, template: &KeyTemplate, errors: &mut Errors) {
        for placeholder in template.placeholders() {
            let root = &placeholder.root;
            if root == "self" {
                errors.at(
                    placeholder.span,
                    format!(
                        "placeholder `{}` uses the receiver, which is never part of the {}; pass the value as a parameter",
                        placeholder.written,
                        template.kind.noun()
                    ),
                );
            } else if !self.binds(root) {
                let function = self.function_name();
                let message = if self.bindings.is_empty() {
                    format!(
                        "placeholder `{}` names no parameter: `{function}` has none",
                        placeholder.written
                    )
                } else {
                    format!(
                        "placeholder `{}` names no parameter of `{function}`; its parameters are {}",
                        placeholder.written,
                        self.names()
                    )
                };
                errors.at(placeholder.span, message);
            }
        }
    }

    /// `` `a`, `b` ``, for messages.
    fn names(&self) -> String {
        self.bindings
            .iter()
            .map(|binding| format!("`{}`", binding.ident))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn collect_bindings<'a>(pattern: &'a Pat, bindings: &mut Vec<Binding<'a>>) {
    match pattern {
        Pat::Ident(ident) => {
            bindings.push(Binding {
                ident: &ident.ident,
                name: name_of(&ident.ident),
            });
            if let Some((_, subpattern)) = &ident.subpat {
                collect_bindings(subpattern, bindings);
            }
        }
        Pat::Tuple(tuple) => tuple
            .elems
            .iter()
            .for_each(|elem| collect_bindings(elem, bindings)),
        Pat::TupleStruct(tuple) => {
            tuple
                .elems
                .iter()
                .for_each(|elem| collect_bindings(elem, bindings));
        }
        Pat::Struct(fields) => {
            fields
                .fields
                .iter()
                .for_each(|field| collect_bindings(&field.pat, bindings));
        }
        Pat::Slice(slice) => slice
            .elems
            .iter()
            .for_each(|elem| collect_bindings(elem, bindings)),
        Pat::Reference(reference) => collect_bindings(&reference.pat, bindings),
        Pat::Paren(paren) => collect_bindings(&paren.pat, bindings),
        Pat::Type(typed) => collect_bindings(&typed.pat, bindings),
        // Every alternative binds the same names.
        Pat::Or(or) => {
            if let Some(first) = or.cases.first() {
                collect_bindings(first, bindings);
            }
        }
        // `_`, literals, ranges, paths, `..`: nothing the body can read.
        _ => {}
    }
}

/// A name without `r#`.
pub(super) fn name_of(ident: &Ident) -> String {
    ident.unraw().to_string()
}
