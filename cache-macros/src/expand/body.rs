//! The body's future: `async move { body }`, with its return type pinned,
//! spliced once for every expansion.

use proc_macro2::{Delimiter, Group, Ident, Spacing, TokenStream, TokenTree};
use quote::{quote, quote_spanned};
use syn::{Block, Type};

use super::parts::{first_and_last_span, spanned_group};

/// `async move { rebind copies; pin the return type; body }`.
///
/// `from_copies` is `None` when the body runs in the call, on the caller's
/// receiver and parameters. With `early` or `stale` it runs from copies of
/// them: `from_copies` holds the statements binding the copies to the
/// parameters' names inside the future, and `self` in the body is replaced
/// by the receiver's copy, `__cache_self`.
///
/// The body's statements are spliced in (a block nested as the tail would
/// trip `unused_braces`) and the braces keep the body's span, so diagnostics
/// about the future (`{async block@..}`) point at the body.
pub(super) fn write_body_future(
    return_type: &Type,
    body: &Block,
    from_copies: Option<TokenStream>,
) -> TokenStream {
    let statements = &body.stmts;
    let statements = quote!(#(#statements)*);
    let (prelude, statements) = match from_copies {
        None => (TokenStream::new(), statements),
        Some(rebind) => (rebind, replace_self(statements)),
    };
    let pin_return_type = pin_return_type(return_type);
    let body_span = body.brace_token.span.join();
    let braced = spanned_group(
        Group::new(
            Delimiter::Brace,
            quote!(#prelude #pin_return_type #statements),
        ),
        body_span,
    );
    quote_spanned!(body_span=> async move #braced)
}

/// A first (never taken) `return` of the declared type, spanned at the
/// return type.
///
/// The async block's output type is otherwise inferred from the body, so a
/// body returning the wrong type would be reported as "expected `{async
/// block}` to resolve to `T`" on the attribute. This fixes the output type
/// before the body is checked, and mistakes are reported in the body as
/// without the macro (tracing-attributes' "fake return edge").
pub(super) fn pin_return_type(return_type: &Type) -> TokenStream {
    let (first, _) = first_and_last_span(return_type);
    quote_spanned! {first=>
        #[allow(
            unknown_lints,
            unreachable_code,
            clippy::diverging_sub_expression,
            clippy::empty_loop,
            clippy::let_unit_value,
            clippy::needless_return
        )]
        if false {
            let __cache_unreachable: #return_type = loop {};
            return __cache_unreachable;
        }
    }
}

/// The body with `self` replaced by `__cache_self`, as async-trait does:
/// inside groups and macro invocations too, but not in paths (`self::x`,
/// `use a::{self}`), not as a macro metavariable (`$self`), and not inside
/// nested `impl` and `trait` blocks, whose `self` is their own.
fn replace_self(tokens: TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut replaced = Vec::with_capacity(tokens.len());
    // Set after `impl` / `trait` until the item's body (the next braces).
    let mut in_item_header = false;
    for (index, token) in tokens.iter().enumerate() {
        let before = |offset: usize| index.checked_sub(offset).map(|i| &tokens[i]);
        let after_path_separator = is_punct(before(1), ':') && is_punct(before(2), ':');
        let token = match token {
            TokenTree::Ident(ident) if ident == "impl" || ident == "trait" => {
                in_item_header = true;
                token.clone()
            }
            TokenTree::Punct(punct) if punct.as_char() == ';' => {
                in_item_header = false;
                token.clone()
            }
            TokenTree::Ident(ident) if ident == "self" => {
                let before_path_separator = matches!(
                    (tokens.get(index + 1), tokens.get(index + 2)),
                    (Some(TokenTree::Punct(first)), Some(TokenTree::Punct(second)))
                        if first.as_char() == ':'
                            && first.spacing() == Spacing::Joint
                            && second.as_char() == ':'
                );
                if before_path_separator || after_path_separator || is_punct(before(1), '$') {
                    token.clone()
                } else {
                    TokenTree::Ident(Ident::new("__cache_self", ident.span()))
                }
            }
            TokenTree::Group(group) => {
                let nested_item_body = in_item_header && group.delimiter() == Delimiter::Brace;
                if nested_item_body {
                    in_item_header = false;
                }
                if nested_item_body
                    || (after_path_separator && group.delimiter() == Delimiter::Brace)
                {
                    token.clone()
                } else {
                    let mut replaced = Group::new(group.delimiter(), replace_self(group.stream()));
                    replaced.set_span(group.span());
                    TokenTree::Group(replaced)
                }
            }
            _ => token.clone(),
        };
        replaced.push(token);
    }
    replaced.into_iter().collect()
}

fn is_punct(token: Option<&TokenTree>, c: char) -> bool {
    matches!(token, Some(TokenTree::Punct(punct)) if punct.as_char() == c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_the_return_type_before_the_body() {
        let body: Block = syn::parse_quote!({ self.load(id).await });
        let return_type: Type = syn::parse_quote!(Option<User>);
        let pin = "# [allow (unknown_lints , unreachable_code , clippy :: diverging_sub_expression , clippy :: empty_loop , clippy :: let_unit_value , clippy :: needless_return)] if false { let __cache_unreachable : Option < User > = loop { } ; return __cache_unreachable ; }";
        assert_eq!(pin_return_type(&return_type).to_string(), pin);
        let in_the_call = write_body_future(&return_type, &body, None).to_string();
        assert_eq!(
            in_the_call,
            format!("async move {{ {pin} self . load (id) . await }}")
        );
        let rebind = quote!(let id = *__cache_id;);
        let from_copies = write_body_future(&return_type, &body, Some(rebind)).to_string();
        assert_eq!(
            from_copies,
            format!(
                "async move {{ let id = * __cache_id ; {pin} __cache_self . load (id) . await }}"
            )
        );
    }

    #[test]
    fn self_is_replaced_everywhere_but_in_paths_and_nested_items() {
        let cases = [
            (
                quote! { let a = self.a + Self::b(self) + self::c(&self, [self], { self }); },
                quote! { let a = __cache_self.a + Self::b(__cache_self) + self::c(&__cache_self, [__cache_self], { __cache_self }); },
            ),
            (
                quote! { let s = format!("{}", self.name); },
                quote! { let s = format!("{}", __cache_self.name); },
            ),
            (
                quote! { macro_rules! m { ($self:ident) => { $self.x + self.y }; } },
                quote! { macro_rules! m { ($self:ident) => { $self.x + __cache_self.y }; } },
            ),
            // Replaced again after a nested item.
            (
                quote! { trait Local { fn g(&self) { self.h() } } self },
                quote! { trait Local { fn g(&self) { self.h() } } __cache_self },
            ),
        ];
        for (written, replaced) in cases {
            assert_eq!(replace_self(written).to_string(), replaced.to_string());
        }
        let kept = quote! {
            use std::io::{self, Read};
            use self::module::Item;
            impl Helper for Thing { fn f(&self) -> u8 { self.x } }
            trait Local { fn g(&self) { self.h() } }
        };
        assert_eq!(replace_self(kept.clone()).to_string(), kept.to_string());
    }
}
