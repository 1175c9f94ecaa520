//! The body's future: `async move { body }`, with its return type pinned,
//! spliced once for every expansion.

use proc_macro2::{Delimiter, Group, Ident, Literal, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Block, Item, LitStr, Stmt, Type};

use super::parts::spanned_group;

/// What the body's future reads its receiver and parameters from.
pub(super) enum Inputs {
    /// The caller's, as they are: the body runs in the call.
    Caller,
    /// The caller's, after statements that rebind some parameters (a
    /// batch's ids, rebound to the missing ones); `self` is the caller's.
    Rebound(TokenStream),
    /// Copies (with `early` or `stale`): the statements bind the copies to
    /// the parameters' names inside the future, and `self` in the body is
    /// replaced by the receiver's copy, `__cache_self`.
    Copies(TokenStream),
}

/// `async move { leading items; rebinding; pin the return type; body }`.
///
/// The body's statements are spliced in (a block nested as the tail would
/// trip `unused_braces`) and the braces keep the body's span, so diagnostics
/// about the future (`{async block@..}`) point at the body. The items the
/// body starts with (`use`, `const`, `fn`, ...) stay first, so the
/// statements the macro adds do not put them "after statements"
/// (`clippy::items_after_statements`).
pub(super) fn write_body_future(return_type: &Type, body: &Block, inputs: Inputs) -> TokenStream {
    let (items, statements) = split_leading_items(&body.stmts);
    let items = quote!(#(#items)*);
    let statements = quote!(#(#statements)*);
    let (prelude, items, statements) = match inputs {
        Inputs::Caller => (TokenStream::new(), items, statements),
        Inputs::Rebound(rebind) => (rebind, items, statements),
        Inputs::Copies(rebind) => (rebind, replace_self(items), replace_self(statements)),
    };
    let pin_return_type = pin_return_type(return_type);
    let body_span = body.brace_token.span.join();
    let braced = spanned_group(
        Group::new(
            Delimiter::Brace,
            quote!(#items #prelude #pin_return_type #statements),
        ),
        body_span,
    );
    quote_spanned!(body_span=> async move #braced)
}

/// The items the body starts with, and the rest. Items can't read locals,
/// so they may come before the statements the macro adds; the run stops at
/// the first macro item, since a `macro_rules!` is in scope only after it
/// (an item after it may use it).
fn split_leading_items(statements: &[Stmt]) -> (&[Stmt], &[Stmt]) {
    let leading = statements
        .iter()
        .take_while(
            |statement| matches!(statement, Stmt::Item(item) if !matches!(item, Item::Macro(_))),
        )
        .count();
    statements.split_at(leading)
}

/// A first (never taken) `return` of the declared type.
///
/// The async block's output type is otherwise inferred from the body, so a
/// body returning the wrong type would be reported as "expected `{async
/// block}` to resolve to `T`" on the attribute. This fixes the output type
/// before the body is checked, and mistakes are reported in the body as
/// without the macro (tracing-attributes' "fake return edge").
///
/// The value comes from a function that never returns but is not typed
/// `!`, so nothing after it counts as unreachable: the expansion needs no
/// `#[allow(unreachable_code)]`, which a crate's
/// `#![forbid(unreachable_code)]` would turn into a hard error. Only the
/// type is the user's; the rest is the macro's (`mixed_site`).
pub(super) fn pin_return_type(return_type: &Type) -> TokenStream {
    generated! {
        if false {
            fn __cache_never<T>() -> T {
                loop {}
            }
            let __cache_unreachable: #return_type = __cache_never();
            return __cache_unreachable;
        }
    }
}

/// The body with `self` replaced by `__cache_self`, as async-trait does:
/// inside groups and macro invocations too, but not in paths (`self::x`,
/// `use a::{self}`), not as a macro metavariable (`$self`), and not inside
/// nested `impl` and `trait` blocks, whose `self` is their own.
///
/// `__cache_self` is the macro's hygienic name, located at the `self` it
/// replaces (so errors still point there). A format string captures
/// `{self}` by name inside its literal, out of reach of a token rewrite:
/// each such capture is renamed and passed as a named argument
/// (`format!("{self:?}")` becomes `format!("{__cache_self:?}", __cache_self
/// = __cache_self)`).
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
                    TokenTree::Ident(copy_of_self(ident.span()))
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
                    let mut stream = replace_self(group.stream());
                    // `name!(...)`: the arguments of a macro call.
                    if is_punct(before(1), '!') && matches!(before(2), Some(TokenTree::Ident(_))) {
                        stream = pass_self_to_format_strings(stream);
                    }
                    let mut replaced = Group::new(group.delimiter(), stream);
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

/// `__cache_self`, the macro's name for the receiver's copy, located at
/// `at`.
fn copy_of_self(at: Span) -> Ident {
    Ident::new("__cache_self", Span::mixed_site().located_at(at))
}

/// The arguments of a macro call, with every `{self}` capture in its
/// string literals renamed `{__cache_self}`, and `__cache_self =
/// __cache_self` appended once as a named argument when there was one.
/// Named arguments are matched by name, whatever the hygiene of the literal.
fn pass_self_to_format_strings(arguments: TokenStream) -> TokenStream {
    let mut tokens: Vec<TokenTree> = Vec::new();
    let mut capture_at = None;
    for token in arguments {
        if let TokenTree::Literal(literal) = &token
            && let Ok(string) = syn::parse2::<LitStr>(literal.to_token_stream())
            && let Some(renamed) = rename_self_captures(&string.value())
        {
            capture_at.get_or_insert(literal.span());
            let mut renamed = Literal::string(&renamed);
            renamed.set_span(literal.span());
            tokens.push(TokenTree::Literal(renamed));
            continue;
        }
        tokens.push(token);
    }
    let Some(at) = capture_at else {
        return tokens.into_iter().collect();
    };
    if !tokens.last().is_some_and(|last| is_punct(Some(last), ',')) {
        tokens.push(TokenTree::Punct(Punct::new(',', Spacing::Alone)));
    }
    let copy = copy_of_self(at);
    let mut stream: TokenStream = tokens.into_iter().collect();
    stream.extend(quote!(#copy = #copy));
    stream
}

/// The format string with each `{self}` / `{self:..}` capture renamed
/// `__cache_self`, or `None` when it has none. `{{` and `}}` are escaped
/// braces.
fn rename_self_captures(format: &str) -> Option<String> {
    let mut renamed = String::with_capacity(format.len());
    let mut found = false;
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        renamed.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        if let Some(after) = rest.strip_prefix('{') {
            renamed.push('{');
            rest = after;
            continue;
        }
        let argument_end = rest.find([':', '}']).unwrap_or(rest.len());
        if rest[..argument_end].trim() == "self" {
            renamed.push_str("__cache_self");
            rest = &rest[argument_end..];
            found = true;
        }
    }
    renamed.push_str(rest);
    found.then_some(renamed)
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
        let pin = "if false { fn __cache_never < T > () -> T { loop { } } let __cache_unreachable : Option < User > = __cache_never () ; return __cache_unreachable ; }";
        assert_eq!(pin_return_type(&return_type).to_string(), pin);
        let in_the_call = write_body_future(&return_type, &body, Inputs::Caller).to_string();
        assert_eq!(
            in_the_call,
            format!("async move {{ {pin} self . load (id) . await }}")
        );
        let rebind = quote!(let id = *__cache_id;);
        let from_copies =
            write_body_future(&return_type, &body, Inputs::Copies(rebind.clone())).to_string();
        assert_eq!(
            from_copies,
            format!(
                "async move {{ let id = * __cache_id ; {pin} __cache_self . load (id) . await }}"
            )
        );
        let rebound = write_body_future(&return_type, &body, Inputs::Rebound(rebind)).to_string();
        assert_eq!(
            rebound,
            format!("async move {{ let id = * __cache_id ; {pin} self . load (id) . await }}")
        );
    }

    #[test]
    fn leading_items_stay_first() {
        let body: Block = syn::parse_quote!({
            use std::fmt::Write;
            const N: u8 = 1;
            let s = N;
            fn late() {}
            s
        });
        let return_type: Type = syn::parse_quote!(u8);
        let pin = pin_return_type(&return_type).to_string();
        let future =
            write_body_future(&return_type, &body, Inputs::Copies(quote!(let id = 1;))).to_string();
        let expected = format!(
            "async move {{ use std :: fmt :: Write ; const N : u8 = 1 ; let id = 1 ; {pin} let s = N ; fn late () {{ }} s }}"
        );
        assert_eq!(future, expected);
        // A `macro_rules!` is in scope only after it: the run stops there.
        let body: Block = syn::parse_quote!({
            use a::b;
            macro_rules! m {
                () => {};
            }
            fn uses_m() {
                m!()
            }
            1
        });
        let future = write_body_future(&return_type, &body, Inputs::Caller).to_string();
        assert!(
            future.starts_with(&format!("async move {{ use a :: b ; {pin} macro_rules !")),
            "{future}"
        );
    }

    #[test]
    fn self_captured_by_a_format_string_is_passed_by_name() {
        let cases = [
            (
                quote! { format!("{self:?}:{id}") },
                quote! { format!("{__cache_self:?}:{id}", __cache_self = __cache_self) },
            ),
            (
                quote! { write!(f, "{self} {{self}} {}", self.x,) },
                quote! { write!(f, "{__cache_self} {{self}} {}", __cache_self.x, __cache_self = __cache_self) },
            ),
            (
                quote! { vec![format!("{self}")] },
                quote! { vec![format!("{__cache_self}", __cache_self = __cache_self)] },
            ),
            // Not a capture: left alone.
            (
                quote! { println!("{selfish} {0}", self) },
                quote! { println!("{selfish} {0}", __cache_self) },
            ),
        ];
        for (written, replaced) in cases {
            assert_eq!(replace_self(written).to_string(), replaced.to_string());
        }
        assert_eq!(
            rename_self_captures("{self:>8}").as_deref(),
            Some("{__cache_self:>8}")
        );
        assert_eq!(rename_self_captures("{{self}}"), None);
        assert_eq!(rename_self_captures("{self.x}"), None);
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
