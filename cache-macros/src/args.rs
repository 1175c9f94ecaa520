//! Parses the inside of `#[cached(...)]` into [`CachedArgs`].
//!
//! This module only checks syntax (which options exist, which kind of token
//! each takes, no option twice). Rules about values and about the function
//! (`ttl > 0`, every parameter in the key, ...) live in `validate.rs`.
//!
//! Each top-level comma-separated segment is parsed on its own, so one bad
//! option does not hide the mistakes after it: all of them are reported in
//! one build.

use proc_macro2::{Ident, Punct, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, LitBool, LitStr, Path, Token};

use crate::errors::Errors;

pub(crate) mod kw {
    syn::custom_keyword!(key);
    syn::custom_keyword!(ttl);
    syn::custom_keyword!(jitter);
    syn::custom_keyword!(negative);
    syn::custom_keyword!(cache);
    syn::custom_keyword!(skip);
    syn::custom_keyword!(l1);
    syn::custom_keyword!(lock);
    syn::custom_keyword!(early);
    syn::custom_keyword!(stale);
    // An option of a later release, recognised so it is refused by name
    // instead of being reported as unknown.
    syn::custom_keyword!(tags);
}

/// The options `#[cached]` accepts, in the order the docs present them.
pub(crate) const SUPPORTED_OPTIONS: &str =
    "`key`, `ttl`, `jitter`, `negative`, `lock`, `early`, `stale`, `cache`, `skip`, `l1`, `crate`";

/// One option as written: the span of its name (for errors about the option
/// as a whole, such as "specified more than once") and its value's tokens.
#[derive(Clone)]
pub(crate) struct Setting<T> {
    pub(crate) name: Span,
    pub(crate) value: T,
}

/// A numeric literal with an optional leading minus, kept as written so the
/// validator can say "`ttl` must be greater than 0" on `-5` instead of the
/// parser's "expected integer literal".
#[derive(Clone)]
pub(crate) struct Number {
    pub(crate) minus: Option<Token![-]>,
    /// Either a `Lit::Int` or a `Lit::Float`.
    pub(crate) lit: Lit,
}

impl ToTokens for Number {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        self.minus.to_tokens(tokens);
        self.lit.to_tokens(tokens);
    }
}

/// Everything written inside `#[cached(...)]`; `None` for an option not given.
#[derive(Default)]
pub(crate) struct CachedArgs {
    pub(crate) key: Option<Setting<LitStr>>,
    pub(crate) ttl: Option<Setting<Number>>,
    pub(crate) jitter: Option<Setting<Number>>,
    pub(crate) negative: Option<Setting<Number>>,
    /// `lock`, a flag: the setting only records where it was written.
    pub(crate) lock: Option<Setting<()>>,
    /// `early` (value `None`: the default beta) or `early = B`.
    pub(crate) early: Option<Setting<Option<Number>>>,
    pub(crate) stale: Option<Setting<Number>>,
    pub(crate) cache: Option<Setting<Expr>>,
    pub(crate) skip: Option<Setting<Vec<Ident>>>,
    pub(crate) l1: Option<Setting<LitBool>>,
    /// `crate = "path"`: where generated code finds the runtime.
    pub(crate) krate: Option<Setting<Path>>,
    /// Options that were written but whose value did not parse (already
    /// reported), so the validator does not also call them missing.
    pub(crate) malformed: Vec<String>,
}

enum CachedOption {
    Key(Setting<LitStr>),
    Ttl(Setting<Number>),
    Jitter(Setting<Number>),
    Negative(Setting<Number>),
    Lock(Setting<()>),
    Early(Setting<Option<Number>>),
    Stale(Setting<Number>),
    Cache(Setting<Expr>),
    Skip(Setting<Vec<Ident>>),
    L1(Setting<LitBool>),
    Crate(Setting<Path>),
}

/// Parses the attribute's arguments. Never fails as a whole: every mistake is
/// pushed to `errors` and the options that did parse are returned.
pub(crate) fn parse_cached_args(tokens: TokenStream, errors: &mut Errors) -> CachedArgs {
    let mut args = CachedArgs::default();
    let segments = split_at_top_level_commas(tokens);
    let mut index = 0;
    while index < segments.len() {
        let segment = &segments[index];
        index += 1;
        if segment.tokens.is_empty() {
            // A trailing comma leaves one empty segment at the end; any other
            // empty segment is a doubled comma.
            if let Some(comma) = &segment.comma
                && index < segments.len()
            {
                errors.at(comma.span(), "expected an option before this `,`");
            }
            continue;
        }
        match parse_option.parse2(segment.stream()) {
            Ok(option) => args.set(option, errors),
            Err(error) => {
                // `cache = EXPR` is the one value that may itself contain a
                // top-level comma (`cache = pick::<A, B>()`): try the segment
                // joined with the ones after it before calling it an error.
                let rejoined = starts_with_cache_option(segment)
                    .then(|| rejoin_cache_expression(&segments[index - 1..]))
                    .flatten();
                match rejoined {
                    Some((option, segments_used)) => {
                        args.set(option, errors);
                        index += segments_used - 1;
                    }
                    None => {
                        args.note_malformed(segment);
                        errors.push(error);
                    }
                }
            }
        }
    }
    args
}

impl CachedArgs {
    /// Whether `name` was written, even if its value did not parse.
    pub(crate) fn mentions(&self, name: &str) -> bool {
        self.malformed.iter().any(|malformed| malformed == name)
    }

    fn note_malformed(&mut self, segment: &Segment) {
        if let Some(TokenTree::Ident(name)) = segment.tokens.first() {
            self.malformed.push(name.to_string());
        }
    }

    fn set(&mut self, option: CachedOption, errors: &mut Errors) {
        match option {
            CachedOption::Key(setting) => set_once(&mut self.key, "key", setting, errors),
            CachedOption::Ttl(setting) => set_once(&mut self.ttl, "ttl", setting, errors),
            CachedOption::Jitter(setting) => {
                set_once(&mut self.jitter, "jitter", setting, errors);
            }
            CachedOption::Negative(setting) => {
                set_once(&mut self.negative, "negative", setting, errors);
            }
            CachedOption::Lock(setting) => set_once(&mut self.lock, "lock", setting, errors),
            CachedOption::Early(setting) => set_once(&mut self.early, "early", setting, errors),
            CachedOption::Stale(setting) => set_once(&mut self.stale, "stale", setting, errors),
            CachedOption::Cache(setting) => set_once(&mut self.cache, "cache", setting, errors),
            CachedOption::Skip(setting) => set_once(&mut self.skip, "skip", setting, errors),
            CachedOption::L1(setting) => set_once(&mut self.l1, "l1", setting, errors),
            CachedOption::Crate(setting) => set_once(&mut self.krate, "crate", setting, errors),
        }
    }
}

/// The one place duplicates are detected, so every option reports them alike.
/// The first occurrence wins; the error points at the repeated name.
fn set_once<T>(
    slot: &mut Option<Setting<T>>,
    name: &str,
    setting: Setting<T>,
    errors: &mut Errors,
) {
    if slot.is_some() {
        errors.at(setting.name, format!("`{name}` specified more than once"));
    } else {
        *slot = Some(setting);
    }
}

fn parse_option(input: ParseStream) -> syn::Result<CachedOption> {
    let lookahead = input.lookahead1();
    let option = if lookahead.peek(kw::key) {
        let name = input.parse::<kw::key>()?.span;
        CachedOption::Key(Setting {
            name,
            value: parse_value(input)?,
        })
    } else if lookahead.peek(kw::ttl) {
        let name = input.parse::<kw::ttl>()?.span;
        CachedOption::Ttl(Setting {
            name,
            value: parse_number_value(input)?,
        })
    } else if lookahead.peek(kw::jitter) {
        let name = input.parse::<kw::jitter>()?.span;
        CachedOption::Jitter(Setting {
            name,
            value: parse_number_value(input)?,
        })
    } else if lookahead.peek(kw::negative) {
        let name = input.parse::<kw::negative>()?.span;
        CachedOption::Negative(Setting {
            name,
            value: parse_number_value(input)?,
        })
    } else if lookahead.peek(kw::lock) {
        let name = input.parse::<kw::lock>()?.span;
        if input.peek(Token![=]) {
            let equals = input.parse::<Token![=]>()?;
            let value: TokenStream = input.parse()?;
            let message = "`lock` is a flag: write `lock`";
            return Err(if value.is_empty() {
                syn::Error::new(equals.span, message)
            } else {
                syn::Error::new_spanned(value, message)
            });
        }
        CachedOption::Lock(Setting { name, value: () })
    } else if lookahead.peek(kw::early) {
        let name = input.parse::<kw::early>()?.span;
        let value = if input.is_empty() {
            None
        } else {
            Some(parse_number_value(input)?)
        };
        CachedOption::Early(Setting { name, value })
    } else if lookahead.peek(kw::stale) {
        let name = input.parse::<kw::stale>()?.span;
        CachedOption::Stale(Setting {
            name,
            value: parse_number_value(input)?,
        })
    } else if lookahead.peek(kw::cache) {
        let name = input.parse::<kw::cache>()?.span;
        CachedOption::Cache(Setting {
            name,
            value: parse_value(input)?,
        })
    } else if lookahead.peek(kw::skip) {
        let name = input.parse::<kw::skip>()?.span;
        CachedOption::Skip(Setting {
            name,
            value: parse_skip_list(input)?,
        })
    } else if lookahead.peek(kw::l1) {
        let name = input.parse::<kw::l1>()?.span;
        CachedOption::L1(Setting {
            name,
            value: parse_value(input)?,
        })
    } else if lookahead.peek(Token![crate]) {
        let name = input.parse::<Token![crate]>()?.span;
        let path: LitStr = parse_value(input)?;
        // `LitStr::parse` gives the path's tokens the string's span, so a
        // path that does not resolve is reported on the user's string.
        let value = path.parse().map_err(|_| {
            syn::Error::new(
                path.span(),
                "`crate` takes the runtime's path as a string, such as `crate = \"::cache_runtime\"`",
            )
        })?;
        CachedOption::Crate(Setting { name, value })
    } else if input.peek(kw::tags) {
        let name = input.call(Ident::parse_any)?;
        return Err(syn::Error::new(
            name.span(),
            format!("`{name}` is not supported yet"),
        ));
    } else if input.peek(Ident::peek_any) {
        let name = input.call(Ident::parse_any)?;
        return Err(syn::Error::new(
            name.span(),
            format!("unknown option `{name}`; expected one of: {SUPPORTED_OPTIONS}"),
        ));
    } else {
        return Err(lookahead.error());
    };
    if !input.is_empty() {
        return Err(input.error("expected `,` between options"));
    }
    Ok(option)
}

/// `= VALUE`, for an option whose name was just parsed.
fn parse_value<T: syn::parse::Parse>(input: ParseStream) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input.parse()
}

fn parse_number_value(input: ParseStream) -> syn::Result<Number> {
    input.parse::<Token![=]>()?;
    let minus = input.parse()?;
    let lookahead = input.lookahead1();
    if lookahead.peek(syn::LitInt) || lookahead.peek(syn::LitFloat) {
        Ok(Number {
            minus,
            lit: input.parse()?,
        })
    } else {
        Err(lookahead.error())
    }
}

/// `(a, b, ...)`. Names are parsed with `parse_any` so that `skip(self)`
/// reaches the validator, which explains that the receiver needs no skip.
fn parse_skip_list(input: ParseStream) -> syn::Result<Vec<Ident>> {
    if !input.peek(syn::token::Paren) {
        return Err(input.error("`skip` takes parameter names in parentheses: `skip(pool, trace)`"));
    }
    let content;
    syn::parenthesized!(content in input);
    let names = Punctuated::<Ident, Token![,]>::parse_terminated_with(&content, Ident::parse_any)?;
    Ok(names.into_iter().collect())
}

/// The tokens between two top-level commas, and the comma that ended them
/// (`None` for the last segment).
struct Segment {
    tokens: Vec<TokenTree>,
    comma: Option<Punct>,
}

impl Segment {
    fn stream(&self) -> TokenStream {
        self.tokens.iter().cloned().collect()
    }
}

/// Splits at commas outside any bracket. Commas inside `(...)`, `[...]` and
/// `{...}` are inside a `Group` token and so are never seen here.
fn split_at_top_level_commas(tokens: TokenStream) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut current = Vec::new();
    for token in tokens {
        match token {
            TokenTree::Punct(punct) if punct.as_char() == ',' => {
                segments.push(Segment {
                    tokens: std::mem::take(&mut current),
                    comma: Some(punct),
                });
            }
            token => current.push(token),
        }
    }
    segments.push(Segment {
        tokens: current,
        comma: None,
    });
    segments
}

fn starts_with_cache_option(segment: &Segment) -> bool {
    matches!(segment.tokens.first(), Some(TokenTree::Ident(ident)) if ident == "cache")
}

/// Joins `segments[0]` with as few following segments as make a valid
/// `cache = EXPR`, returning the option and how many segments it used.
fn rejoin_cache_expression(segments: &[Segment]) -> Option<(CachedOption, usize)> {
    let mut joined = segments[0].stream();
    for (used, next) in segments.iter().enumerate().skip(1) {
        let comma = segments[used - 1].comma.as_ref()?;
        joined.extend(quote!(#comma));
        joined.extend(next.stream());
        if let Ok(option) = parse_option.parse2(joined.clone()) {
            return Some((option, used + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: TokenStream) -> (CachedArgs, Vec<String>) {
        let mut errors = Errors::new();
        let args = parse_cached_args(tokens, &mut errors);
        (args, errors.messages())
    }

    #[test]
    fn parses_every_supported_option() {
        let (args, errors) = parse(quote!(
            key = "org:<org>:user:<id>",
            ttl = 300,
            jitter = 0.2,
            negative = 60,
            cache = self.cache,
            skip(filter, pool),
            l1 = false,
            crate = "my::runtime",
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.key.unwrap().value.value(), "org:<org>:user:<id>");
        assert_eq!(
            args.ttl.unwrap().value.lit.to_token_stream().to_string(),
            "300"
        );
        assert_eq!(
            args.jitter.unwrap().value.lit.to_token_stream().to_string(),
            "0.2"
        );
        assert_eq!(
            args.negative
                .unwrap()
                .value
                .lit
                .to_token_stream()
                .to_string(),
            "60"
        );
        assert_eq!(
            args.cache.unwrap().value.to_token_stream().to_string(),
            "self . cache"
        );
        let skipped: Vec<String> = args
            .skip
            .unwrap()
            .value
            .iter()
            .map(Ident::to_string)
            .collect();
        assert_eq!(skipped, ["filter", "pool"]);
        assert!(!args.l1.unwrap().value.value);
        assert_eq!(
            args.krate.unwrap().value.to_token_stream().to_string(),
            "my :: runtime"
        );
    }

    #[test]
    fn empty_attribute_is_not_a_parse_error() {
        let (args, errors) = parse(quote!());
        assert!(errors.is_empty());
        assert!(args.key.is_none() && args.ttl.is_none());
    }

    #[test]
    fn keeps_a_minus_sign_for_the_validator() {
        let (args, errors) = parse(quote!(ttl = -5, jitter = -0.5));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.ttl.unwrap().value.minus.is_some());
        assert!(args.jitter.unwrap().value.minus.is_some());
    }

    #[test]
    fn reports_duplicates_once_per_repeat() {
        let (args, errors) = parse(quote!(ttl = 1, ttl = 2, key = "a", ttl = 3));
        assert_eq!(
            errors,
            [
                "`ttl` specified more than once",
                "`ttl` specified more than once"
            ]
        );
        assert_eq!(
            args.ttl.unwrap().value.lit.to_token_stream().to_string(),
            "1"
        );
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let (_, errors) = parse(quote!(ttll = 5));
        assert_eq!(
            errors,
            [
                "unknown option `ttll`; expected one of: `key`, `ttl`, `jitter`, `negative`, `lock`, `early`, `stale`, `cache`, `skip`, `l1`, `crate`"
            ]
        );
    }

    #[test]
    fn tags_is_refused_by_name() {
        let (args, errors) = parse(quote!(lock, tags = ["org:<org>"], stale = 30));
        assert_eq!(errors, ["`tags` is not supported yet"]);
        assert!(args.lock.is_some() && args.stale.is_some());
    }

    #[test]
    fn parses_lock_early_and_stale() {
        let (args, errors) = parse(quote!(lock, early = 0.5, stale = 30));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.lock.is_some());
        let early = args.early.unwrap().value.expect("a beta was written");
        assert_eq!(early.lit.to_token_stream().to_string(), "0.5");
        assert_eq!(
            args.stale.unwrap().value.lit.to_token_stream().to_string(),
            "30"
        );

        let (args, errors) = parse(quote!(early, early = 2));
        assert_eq!(errors, ["`early` specified more than once"]);
        assert!(args.early.unwrap().value.is_none(), "the first one wins");
        assert!(args.lock.is_none() && args.stale.is_none());
    }

    #[test]
    fn lock_is_a_flag() {
        for value in [quote!(3), quote!(true), quote!(false), quote!()] {
            let (args, errors) = parse(quote!(lock = #value, ttl = 1));
            assert_eq!(errors, ["`lock` is a flag: write `lock`"], "{value}");
            assert!(args.lock.is_none());
            assert!(args.mentions("lock"));
            assert!(args.ttl.is_some());
        }
        let (_, errors) = parse(quote!(lock, lock));
        assert_eq!(errors, ["`lock` specified more than once"]);
    }

    #[test]
    fn early_and_stale_values_are_numbers() {
        let (args, errors) = parse(quote!(early = -1, stale = -5));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.early.unwrap().value.unwrap().minus.is_some());
        assert!(args.stale.unwrap().value.minus.is_some());
        let (_, errors) = parse(quote!(early = fast, stale, stale = "30"));
        assert_eq!(
            errors,
            [
                "expected integer literal or floating point literal",
                "expected `=`",
                "expected integer literal or floating point literal",
            ]
        );
    }

    #[test]
    fn reports_every_bad_segment_and_keeps_the_good_ones() {
        let (args, errors) = parse(quote!(key = 5, ttl = "300", bogus, l1 = false, negative));
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert_eq!(errors[0], "expected string literal");
        assert_eq!(
            errors[1],
            "expected integer literal or floating point literal"
        );
        assert!(errors[2].starts_with("unknown option `bogus`"));
        assert_eq!(errors[3], "expected `=`");
        assert!(args.l1.is_some());
    }

    #[test]
    fn missing_comma_between_options() {
        let (_, errors) = parse(quote!(ttl = 300 key = "a"));
        assert_eq!(errors, ["expected `,` between options"]);
    }

    #[test]
    fn doubled_comma_is_reported_once() {
        let (args, errors) = parse(quote!(ttl = 300,, key = "a",));
        assert_eq!(errors, ["expected an option before this `,`"]);
        assert!(args.key.is_some());
    }

    #[test]
    fn cache_expression_may_contain_top_level_commas() {
        let (args, errors) = parse(quote!(cache = pick::<A, B>(&x), ttl = 5));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            args.cache.unwrap().value.to_token_stream().to_string(),
            "pick :: < A , B > (& x)"
        );
        assert!(args.ttl.is_some());
    }

    #[test]
    fn broken_cache_expression_is_one_error() {
        let (args, errors) = parse(quote!(cache = , ttl = 5));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(args.ttl.is_some());
    }

    #[test]
    fn skip_takes_a_parenthesized_list() {
        let (_, errors) = parse(quote!(skip = pool));
        assert_eq!(
            errors,
            ["`skip` takes parameter names in parentheses: `skip(pool, trace)`"]
        );
        let (args, errors) = parse(quote!(skip(self)));
        assert!(errors.is_empty());
        assert_eq!(args.skip.unwrap().value[0], "self");
    }

    #[test]
    fn crate_path_must_be_a_path() {
        let (_, errors) = parse(quote!(crate = "not a path"));
        assert_eq!(
            errors,
            ["`crate` takes the runtime's path as a string, such as `crate = \"::cache_runtime\"`"]
        );
        let (args, errors) = parse(quote!(crate = "::cache_runtime"));
        assert!(errors.is_empty());
        assert_eq!(
            args.krate.unwrap().value.to_token_stream().to_string(),
            ":: cache_runtime"
        );
    }
}
