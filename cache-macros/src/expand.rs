//! Writes the generated code. Every rule was checked in `validate.rs`; here
//! the only decisions are spans.
//!
//! On any error the user's item is emitted unchanged beside the
//! `compile_error!`s (as tokio-macros and thiserror do), so callers of the
//! function and the IDE keep working and the user sees only our errors, not
//! a cascade caused by a missing function (a function's body only gains a
//! `let _ = &param;` per parameter, so one that only the key read is not
//! reported unused).
//!
//! Every name the expansion introduces is hygienic (`generated!`), its
//! statics sit in blocks the body can't see into, and it carries no
//! `#[allow]` a crate could have forbidden.
//!
//! - `cached.rs` writes `#[cached]`: a call to `get_or_load` (or, with
//!   `early` / `stale`, `get_or_refresh`) in place of the body;
//! - `batch.rs` writes `#[cached(batch(id in ids))]`: a key per id and a
//!   call to `get_many_or_load`, the body loading the missing ids;
//! - `mutation.rs` writes `#[invalidates]` and `#[write_through]`: the body,
//!   then the runtime call that follows a body that changed data;
//! - `write_behind.rs` writes `#[write_behind]`: the value stored and the
//!   write queued, the body moved to a sibling function, and the companion
//!   building the worker's handler;
//! - `body.rs` wraps the body in its future, for the first three;
//! - `parts.rs` writes the pieces they share (the site, templates, the cache,
//!   runtime calls) and the span helpers.

/// `quote!` for the code the macro itself introduces. Every token written
/// in the template gets `Span::mixed_site()`, so the locals it binds
/// (`__cache_key`, `__cache_cache`, ...) are hygienic: the user's body and
/// options can't see them, and a parameter named `__cache_key` is not
/// shadowed by them. Tokens interpolated with `#` keep their own spans, so
/// the user's names resolve as the user wrote them and errors land on the
/// user's tokens.
macro_rules! generated {
    ($($tokens:tt)*) => {
        ::quote::quote_spanned!(::proc_macro2::Span::mixed_site()=> $($tokens)*)
    };
}

mod batch;
mod body;
mod cached;
mod mutation;
mod parts;
mod write_behind;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::quote;
use syn::parse::{ParseStream, Parser};
use syn::visit_mut::VisitMut;
use syn::{AttrStyle, Attribute, Block, FnArg, Item, ItemFn, Signature, Visibility};

use crate::args::{MacroKind, parse_args};
use crate::errors::Errors;
use crate::plan::Plan;
use crate::validate::validate;

/// Environment variable that makes every expansion print to stderr.
const DEBUG_VARIABLE: &str = "CACHE_MACROS_DEBUG";

/// `#[cached(args)] item`.
pub(crate) fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(MacroKind::Cached, args, item)
}

/// `#[invalidates(args)] item`.
pub(crate) fn invalidates(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(MacroKind::Invalidates, args, item)
}

/// `#[write_through(args)] item`.
pub(crate) fn write_through(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(MacroKind::WriteThrough, args, item)
}

/// `#[write_behind(args)] item`.
pub(crate) fn write_behind(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(MacroKind::WriteBehind, args, item)
}

fn expand(kind: MacroKind, args: TokenStream, item: TokenStream) -> TokenStream {
    let output = match expand_function(kind, args, item.clone()) {
        Ok(expanded) => expanded,
        Err(error) => unchanged_with_errors(item, &error),
    };
    print_if_debugging(kind.name(), &output);
    output
}

fn expand_function(
    kind: MacroKind,
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    let function = parse_function(kind, item)?;
    let mut errors = Errors::new();
    let args = parse_args(kind, args, &mut errors);
    Ok(match validate(kind, args, &function, errors)? {
        Plan::Cached(plan) => cached::write_cached_fn(function, &plan),
        Plan::Invalidates(plan) => mutation::write_invalidates_fn(function, &plan),
        Plan::WriteThrough(plan) => mutation::write_write_through_fn(function, &plan),
        Plan::WriteBehind(plan) => write_behind::write_write_behind_fn(function, &plan),
    })
}

/// The item as written, beside the errors. A function's body first touches
/// each parameter (`let _ = &id;`): a parameter used only in the key is
/// otherwise reported as unused, a warning about the expansion that did not
/// happen rather than about the user's code.
fn unchanged_with_errors(item: TokenStream, error: &syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    let item = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(mut function) => {
            let touches = touch_parameters(&function.sig);
            function.block.stmts.splice(0..0, touches);
            quote!(#function)
        }
        Err(_) => item,
    };
    quote!(#item #errors)
}

/// `let _ = &name;` for every name the parameters bind, under the
/// parameter's `#[cfg]`.
fn touch_parameters(signature: &Signature) -> Vec<syn::Stmt> {
    /// Every name bound in a pattern.
    #[derive(Default)]
    struct Names(Vec<syn::Ident>);
    impl VisitMut for Names {
        fn visit_pat_ident_mut(&mut self, binding: &mut syn::PatIdent) {
            self.0.push(binding.ident.clone());
            syn::visit_mut::visit_pat_ident_mut(self, binding);
        }
    }
    let mut touches = Vec::new();
    for input in &signature.inputs {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        let cfg = typed
            .attrs
            .iter()
            .filter(|attr| attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr"));
        let mut names = Names::default();
        names.visit_pat_mut(&mut (*typed.pat).clone());
        for name in names.0 {
            let cfg = cfg.clone();
            touches.push(syn::parse_quote!(#(#cfg)* let _ = &#name;));
        }
    }
    touches
}

fn parse_function(kind: MacroKind, item: TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(function)) => Ok(function),
        // A struct, an impl, a `fn` without a body (in a trait), ...
        _ => Err(syn::Error::new(
            item_keyword_span(item),
            format!("`#[{}]` applies to an `async fn` with a body", kind.name()),
        )),
    }
}

/// The span of the first token after the item's attributes and visibility
/// (`struct`, `impl`, `fn`, ...), which says what the item is.
fn item_keyword_span(item: TokenStream) -> Span {
    let keyword = |input: ParseStream| {
        input.call(Attribute::parse_outer)?;
        input.parse::<Visibility>()?;
        let keyword: TokenTree = input.parse()?;
        input.parse::<TokenStream>()?;
        Ok(keyword.span())
    };
    keyword
        .parse2(item)
        .unwrap_or_else(|_: syn::Error| Span::call_site())
}

/// The function with its attributes, visibility and signature as written
/// (but for what `write` changes in the signature), and its body replaced by
/// the statements `write` makes of it.
fn replace_body(
    function: ItemFn,
    write: impl FnOnce(&mut Signature, &Block) -> TokenStream,
) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = function;
    // syn keeps the body's `#![inner]` attributes with the outer ones; they
    // go back inside the body.
    let (inner_attrs, outer_attrs): (Vec<_>, Vec<_>) = attrs
        .into_iter()
        .partition(|attr| matches!(attr.style, AttrStyle::Inner(_)));
    let statements = write(&mut sig, &block);
    quote! {
        #(#outer_attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #statements
        }
    }
}

/// `CACHE_MACROS_DEBUG=1` prints each expansion (the variable is read when
/// the macro runs, so touch the file or `cargo clean -p` to see it again).
fn print_if_debugging(macro_name: &str, output: &TokenStream) {
    let enabled =
        std::env::var_os(DEBUG_VARIABLE).is_some_and(|value| !value.is_empty() && value != "0");
    if enabled {
        eprintln!("#[{macro_name}] expands to:\n{output}\n");
    }
}

/// Expected pieces of expansions, for the tests of every writer.
#[cfg(test)]
mod testing {
    use proc_macro2::TokenStream;
    use quote::quote;

    /// What every body future starts with (tested in `body.rs`).
    pub(super) fn pin(return_type: TokenStream) -> TokenStream {
        super::body::pin_return_type(&syn::parse2(return_type).expect("a type"))
    }

    /// A template rendered into a `KeyBuf` by `parts`, calls on
    /// `__cache_key`.
    pub(super) fn rendered(parts: TokenStream) -> TokenStream {
        quote!({
            let mut __cache_key = ::cache_runtime::__private::KeyBuf::new();
            #parts
            __cache_key
        })
    }

    pub(super) fn assert_contains(expanded: &str, fragments: &[&str]) {
        for fragment in fragments {
            assert!(expanded.contains(fragment), "{fragment}\nin\n{expanded}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        cached(args, item).to_string()
    }

    #[test]
    fn on_error_emits_the_function_unchanged_with_the_errors() {
        let function = quote!(
            fn find(id: u64) -> u8 {
                1
            }
        );
        let expanded = expand(quote!(key = "user:<id>", ttl = 0), function.clone());
        // As written, but for a touch of each parameter: one only the key
        // uses is not unused.
        let touched = quote!(
            fn find(id: u64) -> u8 {
                let _ = &id;
                1
            }
        );
        assert!(expanded.starts_with(&touched.to_string()), "{expanded}");
        assert_eq!(expanded.matches("compile_error").count(), 2, "{expanded}");
        let function = quote!(
            async fn find(&self, (a, b): (u8, u8), #[cfg(x)] c: u8, _: u8) -> u8 {
                #![allow(unused)]
                1
            }
        );
        let touched = quote!(
            async fn find(&self, (a, b): (u8, u8), #[cfg(x)] c: u8, _: u8) -> u8 {
                #![allow(unused)]
                let _ = &a;
                let _ = &b;
                #[cfg(x)]
                let _ = &c;
                1
            }
        );
        let expanded = expand(quote!(key = "user:<id>", ttl = 1), function);
        assert!(expanded.starts_with(&touched.to_string()), "{expanded}");
    }

    #[test]
    fn refuses_items_that_are_not_functions() {
        let item = quote!(
            #[derive(Clone)]
            pub struct User {
                id: u64,
            }
        );
        let expanded = expand(quote!(key = "k", ttl = 1), item.clone());
        assert!(expanded.starts_with(&item.to_string()));
        assert!(expanded.contains("`#[cached]` applies to an `async fn` with a body"));
        let declaration = quote!(
            async fn find(&self, id: u64) -> u8;
        );
        assert!(expand(quote!(key = "<id>", ttl = 1), declaration).contains("with a body"));
    }

    #[test]
    fn each_attribute_keeps_the_function_on_error() {
        let function = quote!(
            async fn update(id: u64) {}
        );
        let touched = quote!(
            async fn update(id: u64) {
                let _ = &id;
            }
        )
        .to_string();
        let expanded = invalidates(quote!(), function.clone()).to_string();
        assert!(expanded.starts_with(&touched), "{expanded}");
        assert_eq!(expanded.matches("compile_error").count(), 1, "{expanded}");
        let expanded =
            write_through(quote!(key = "user:<id>", ttl = 5), function.clone()).to_string();
        assert!(expanded.starts_with(&touched), "{expanded}");
        assert!(expanded.contains("use `#[invalidates]`"), "{expanded}");
        let item = quote!(
            struct Update;
        );
        for expanded in [
            invalidates(quote!(key = "k"), item.clone()).to_string(),
            write_through(quote!(key = "k", ttl = 1), item.clone()).to_string(),
        ] {
            assert!(expanded.starts_with(&item.to_string()), "{expanded}");
        }
        assert!(
            invalidates(quote!(key = "k"), item.clone())
                .to_string()
                .contains("`#[invalidates]` applies to an `async fn` with a body")
        );
        assert!(
            write_through(quote!(key = "k", ttl = 1), item)
                .to_string()
                .contains("`#[write_through]` applies to an `async fn` with a body")
        );
    }
}
