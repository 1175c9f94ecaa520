//! The names a function's parameters and generic parameters bind, which
//! templates and `skip` refer to.

use proc_macro2::Ident;
use syn::ext::IdentExt;
use syn::punctuated::Punctuated;
use syn::{Attribute, FnArg, GenericParam, Meta, Pat, Signature, Token, Type};

use crate::errors::Errors;
use crate::key::KeyTemplate;
use crate::plan::{Cfg, Source, SourceKind};

/// A function's signature and the names its parameters bind, in order (the
/// receiver aside).
pub(super) struct Parameters<'a> {
    pub(super) signature: &'a Signature,
    pub(super) bindings: Vec<Binding<'a>>,
    /// Its const and type parameters, in order (lifetimes tell no calls
    /// apart).
    pub(super) generics: Vec<Generic<'a>>,
    /// With `batch(id in ids)`: `id`, which placeholders may name too. Not
    /// among `bindings`, which are what `skip` and the rule "every
    /// parameter is in the key" are about.
    pub(super) element: Option<Element<'a>>,
    /// Set when a `batch(..)` was written but did not parse: its element's
    /// name is unknown.
    pub(super) element_unknown: bool,
}

/// The element of `batch(id in ids)`: a name bound to each id in turn when
/// the keys are rendered.
pub(super) struct Element<'a> {
    /// As the attribute writes it.
    pub(super) ident: Ident,
    /// `K`, when the parameter is a `Vec<K>` or a `&[K]`.
    pub(super) ty: Option<&'a Type>,
}

/// A name the function body can use that came from a parameter: the
/// parameter itself, or a name bound inside a destructuring pattern such as
/// `(a, b): (u32, u32)`, which each count as a parameter of their own.
pub(super) struct Binding<'a> {
    pub(super) ident: &'a Ident,
    /// Without `r#`, so `r#type` in the signature matches `<r#type>` and
    /// `skip(r#type)` however each is written.
    pub(super) name: String,
    /// The `#[cfg]`s the parameter is declared under.
    pub(super) cfg: Cfg,
    /// The parameter's type, when the name is the whole parameter (`id: K`),
    /// not a part of a destructuring pattern.
    pub(super) ty: Option<&'a Type>,
}

/// `const N: u64` or `T`: calls that differ only in it run different code,
/// so it is part of the key like a parameter.
pub(super) struct Generic<'a> {
    pub(super) ident: &'a Ident,
    pub(super) name: String,
    /// `ConstGeneric` or `TypeGeneric`.
    pub(super) kind: SourceKind,
    pub(super) cfg: Cfg,
}

impl Generic<'_> {
    /// "const generic parameter" or "type parameter", for messages.
    pub(super) fn noun(&self) -> &'static str {
        match self.kind {
            SourceKind::ConstGeneric => "const generic parameter",
            _ => "type parameter",
        }
    }
}

impl<'a> Parameters<'a> {
    pub(super) fn of(signature: &'a Signature) -> Self {
        let mut bindings = Vec::new();
        for input in &signature.inputs {
            if let FnArg::Typed(typed) = input {
                let first = bindings.len();
                collect_bindings(&typed.pat, &cfg_of(&typed.attrs), &mut bindings);
                if let (Pat::Ident(_), [binding]) = (&*typed.pat, &mut bindings[first..]) {
                    binding.ty = Some(&typed.ty);
                }
            }
        }
        let generics = signature
            .generics
            .params
            .iter()
            .filter_map(|param| {
                let (ident, kind, attrs) = match param {
                    GenericParam::Type(ty) => (&ty.ident, SourceKind::TypeGeneric, &ty.attrs),
                    GenericParam::Const(constant) => {
                        (&constant.ident, SourceKind::ConstGeneric, &constant.attrs)
                    }
                    GenericParam::Lifetime(_) => return None,
                };
                Some(Generic {
                    ident,
                    name: name_of(ident),
                    kind,
                    cfg: cfg_of(attrs),
                })
            })
            .collect();
        Parameters {
            signature,
            bindings,
            generics,
            element: None,
            element_unknown: false,
        }
    }

    /// The function's name without `r#`, as messages and logs show it.
    pub(super) fn function_name(&self) -> Ident {
        self.signature.ident.unraw()
    }

    fn binding(&self, ident: &Ident) -> Option<&Binding<'a>> {
        let name = name_of(ident);
        self.bindings.iter().find(|binding| binding.name == name)
    }

    fn generic(&self, ident: &Ident) -> Option<&Generic<'a>> {
        let name = name_of(ident);
        self.generics.iter().find(|generic| generic.name == name)
    }

    /// Whether a parameter binds `ident`, however either is written.
    pub(super) fn binds(&self, ident: &Ident) -> bool {
        self.binding(ident).is_some()
    }

    /// Whether the type parameter `name` is the type of a parameter whose
    /// value the key renders whole (`<id>` with `id: K` or `id: &K`): that
    /// value is keyed by its `Display`, as an `impl Display` parameter is,
    /// and `K` is as anonymous as the type behind `impl Display`. A type
    /// parameter anywhere else (`Id<K>`, the return type, nowhere) is not
    /// covered.
    pub(super) fn is_type_of_keyed_value(&self, name: &str, key: &KeyTemplate) -> bool {
        let rendered_whole = |binding: &str| {
            key.placeholders().any(|placeholder| {
                placeholder.fields.is_empty() && name_of(&placeholder.root) == binding
            })
        };
        let by_parameter = self.bindings.iter().any(|binding| {
            rendered_whole(&binding.name)
                && binding.ty.is_some_and(|ty| is_type_parameter(ty, name))
        });
        // `batch(id in ids)` with `ids: Vec<K>` and `<id>`: each id is keyed
        // by its value, as a parameter `id: K` would be.
        let by_element = self.element.as_ref().is_some_and(|element| {
            rendered_whole(&name_of(&element.ident))
                && element.ty.is_some_and(|ty| is_type_parameter(ty, name))
        });
        by_parameter || by_element
    }

    /// Whether `ident` is a const or type parameter of the function.
    pub(super) fn is_generic(&self, ident: &Ident) -> bool {
        self.generic(ident).is_some()
    }

    /// Every placeholder must start with a parameter's name, or be a
    /// generic parameter on its own; each is resolved to what it names.
    pub(super) fn resolve_placeholders(&self, template: &mut KeyTemplate, errors: &mut Errors) {
        let noun = template.kind.noun();
        for placeholder in template.placeholders_mut() {
            let root = &placeholder.root;
            let element = self
                .element
                .as_ref()
                .filter(|element| name_of(&element.ident) == name_of(root));
            if let Some(element) = element {
                placeholder.source = Some(Source {
                    kind: SourceKind::Parameter,
                    ident: element.ident.clone(),
                    cfg: Cfg::default(),
                });
            } else if root == "self" {
                errors.at(
                    placeholder.span,
                    format!(
                        "placeholder `{}` uses the receiver, which is never part of the {noun}; pass the value as a parameter",
                        placeholder.written,
                    ),
                );
            } else if let Some(binding) = self.binding(root) {
                let integer =
                    placeholder.fields.is_empty() && binding.ty.is_some_and(is_primitive_integer);
                placeholder.source = Some(Source {
                    kind: if integer {
                        SourceKind::Integer
                    } else {
                        SourceKind::Parameter
                    },
                    ident: binding.ident.clone(),
                    cfg: binding.cfg.clone(),
                });
            } else if let Some(generic) = self.generic(root) {
                if placeholder.fields.is_empty() {
                    placeholder.source = Some(Source {
                        kind: generic.kind,
                        ident: generic.ident.clone(),
                        cfg: generic.cfg.clone(),
                    });
                } else {
                    errors.at(
                        placeholder.span,
                        format!(
                            "placeholder `{}`: `{root}` is a {} of `{}`, which has no fields; write `<{root}>`",
                            placeholder.written,
                            generic.noun(),
                            self.function_name(),
                        ),
                    );
                }
            } else if self.element_unknown {
                // It may be the element of the `batch` that did not parse
                // (reported): saying it names nothing would be noise.
            } else {
                let function = self.function_name();
                let message = if self.bindings.is_empty() && self.generics.is_empty() {
                    format!(
                        "placeholder `{}` names no parameter: `{function}` has none",
                        placeholder.written
                    )
                } else {
                    format!(
                        "placeholder `{}` names no parameter of `{function}`; {}",
                        placeholder.written,
                        self.names()
                    )
                };
                errors.at(placeholder.span, message);
            }
        }
    }

    /// "its parameters are `a`, `b`", and its generic parameters, for
    /// messages.
    pub(super) fn names(&self) -> String {
        let list = |names: Vec<&Ident>| {
            names
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let parameters = list(self.bindings.iter().map(|binding| binding.ident).collect());
        let generics = list(self.generics.iter().map(|generic| generic.ident).collect());
        match (parameters.is_empty(), generics.is_empty()) {
            (false, true) => format!("its parameters are {parameters}"),
            (true, false) => format!("its generic parameters are {generics}"),
            _ => format!("its parameters are {parameters}, and its generic parameters {generics}"),
        }
    }
}

/// Whether `ty` is written as one of the primitive integer types (`u64`,
/// not `&u64` or an alias, which keep `Display`).
fn is_primitive_integer(ty: &Type) -> bool {
    const INTEGERS: [&str; 12] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
    ];
    match ty {
        Type::Paren(paren) => is_primitive_integer(&paren.elem),
        Type::Group(group) => is_primitive_integer(&group.elem),
        Type::Path(path) => {
            path.qself.is_none()
                && path
                    .path
                    .get_ident()
                    .is_some_and(|ident| INTEGERS.iter().any(|integer| ident == integer))
        }
        _ => false,
    }
}

/// `K`, `&K`, `&mut K`, `(K)`: the type parameter itself.
fn is_type_parameter(ty: &Type, name: &str) -> bool {
    match ty {
        Type::Reference(reference) => is_type_parameter(&reference.elem, name),
        Type::Paren(paren) => is_type_parameter(&paren.elem, name),
        Type::Group(group) => is_type_parameter(&group.elem, name),
        Type::Path(path) => {
            path.qself.is_none()
                && path
                    .path
                    .get_ident()
                    .is_some_and(|ident| name_of(ident) == name)
        }
        _ => false,
    }
}

fn collect_bindings<'a>(pattern: &'a Pat, cfg: &Cfg, bindings: &mut Vec<Binding<'a>>) {
    let mut collect = |pattern| collect_bindings(pattern, cfg, bindings);
    match pattern {
        Pat::Ident(ident) => {
            bindings.push(Binding {
                ident: &ident.ident,
                name: name_of(&ident.ident),
                cfg: cfg.clone(),
                ty: None,
            });
            if let Some((_, subpattern)) = &ident.subpat {
                collect_bindings(subpattern, cfg, bindings);
            }
        }
        Pat::Tuple(tuple) => tuple.elems.iter().for_each(collect),
        Pat::TupleStruct(tuple) => tuple.elems.iter().for_each(collect),
        Pat::Struct(fields) => fields.fields.iter().for_each(|field| collect(&field.pat)),
        Pat::Slice(slice) => slice.elems.iter().for_each(collect),
        Pat::Reference(reference) => collect(&reference.pat),
        Pat::Paren(paren) => collect(&paren.pat),
        Pat::Type(typed) => collect(&typed.pat),
        // Every alternative binds the same names.
        Pat::Or(or) => {
            if let Some(first) = or.cases.first() {
                collect(first);
            }
        }
        // `_`, literals, ranges, paths, `..`: nothing the body can read.
        _ => {}
    }
}

/// The attributes among `attrs` that decide whether the item exists: every
/// `#[cfg(..)]`, and each `#[cfg_attr(pred, ..)]` reduced to the `cfg`s it
/// can yield (lint attributes and the like say nothing about existence).
pub(super) fn cfg_of(attrs: &[Attribute]) -> Cfg {
    Cfg(attrs.iter().filter_map(existence_attribute).collect())
}

fn existence_attribute(attr: &Attribute) -> Option<Attribute> {
    if attr.path().is_ident("cfg") {
        return Some(attr.clone());
    }
    if !attr.path().is_ident("cfg_attr") {
        return None;
    }
    let nested = attr
        .parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)
        .ok()?;
    let mut nested = nested.into_iter();
    let predicate = nested.next()?;
    let kept: Vec<Meta> = nested.filter(|meta| meta.path().is_ident("cfg")).collect();
    if kept.is_empty() {
        return None;
    }
    let mut reduced = attr.clone();
    reduced.meta = syn::parse_quote!(cfg_attr(#predicate, #(#kept),*));
    Some(reduced)
}

/// A name without `r#`.
pub(super) fn name_of(ident: &Ident) -> String {
    ident.unraw().to_string()
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    #[test]
    fn cfg_attributes_are_kept_and_cfg_attr_is_reduced_to_its_cfgs() {
        let attrs: Vec<Attribute> = vec![
            syn::parse_quote!(#[cfg(feature = "tenants")]),
            syn::parse_quote!(#[allow(unused)]),
            syn::parse_quote!(#[cfg_attr(test, allow(unused))]),
            syn::parse_quote!(#[cfg_attr(unix, cfg(feature = "x"), allow(unused))]),
        ];
        let cfg = cfg_of(&attrs);
        assert_eq!(
            quote!(#cfg).to_string(),
            quote!(#[cfg(feature = "tenants")] #[cfg_attr(unix, cfg(feature = "x"))]).to_string()
        );
    }
}
