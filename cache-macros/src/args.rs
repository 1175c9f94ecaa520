//! Parses the inside of `#[cached(...)]`, `#[invalidates(...)]`,
//! `#[write_through(...)]` and `#[write_behind(...)]` into [`Args`].
//!
//! This module only checks syntax (which options exist for which attribute,
//! which kind of token each takes, no option twice unless it may repeat).
//! Rules about values and about the function (`ttl > 0`, every parameter in
//! the key, ...) live in `validate.rs`.
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

/// Which attribute is being expanded: each accepts its own options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MacroKind {
    Cached,
    Invalidates,
    WriteThrough,
    WriteBehind,
}

impl MacroKind {
    /// The attribute's name, as users write it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            MacroKind::Cached => "cached",
            MacroKind::Invalidates => "invalidates",
            MacroKind::WriteThrough => "write_through",
            MacroKind::WriteBehind => "write_behind",
        }
    }

    /// The options the attribute accepts, in the order the docs present them.
    pub(crate) fn options(self) -> &'static [&'static str] {
        match self {
            MacroKind::Cached => &[
                "key", "ttl", "jitter", "negative", "lock", "early", "stale", "tags", "cache",
                "skip", "l1", "batch", "crate",
            ],
            MacroKind::Invalidates => &["key", "tag", "cache", "crate"],
            MacroKind::WriteThrough => &[
                "key", "ttl", "jitter", "stale", "tags", "cache", "skip", "crate",
            ],
            MacroKind::WriteBehind => &[
                "key", "ttl", "value", "jitter", "stale", "tags", "cache", "queue", "coalesce",
                "crate",
            ],
        }
    }

    /// `` `key`, `ttl`, ... ``, for messages.
    fn option_list(self) -> String {
        self.options()
            .iter()
            .map(|option| format!("`{option}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether `option` may be written more than once: `#[invalidates]`
    /// deletes any number of keys and tags.
    pub(crate) fn repeats(self, option: &str) -> bool {
        self == MacroKind::Invalidates && matches!(option, "key" | "tag")
    }
}

/// One option as written: the span of its name (for errors about the option
/// as a whole, such as "specified more than once") and its value's tokens.
#[derive(Clone)]
pub(crate) struct Setting<T> {
    pub(crate) name: Span,
    pub(crate) value: T,
}

impl<T> Setting<T> {
    fn new(name: Span, value: T) -> Self {
        Setting { name, value }
    }
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

/// The value of `ttl`, `negative` or `stale`: seconds as a literal, checked
/// by the validator, or an expression (a constant, a `Duration`, a value
/// from configuration) the runtime evaluates and checks when the function
/// first runs.
#[derive(Clone)]
pub(crate) enum Seconds {
    Literal(Number),
    Expression(Expr),
}

/// `batch(id in ids)` of `#[cached]`: the function loads many keys at once,
/// one per element of the parameter `ids`, each named `id` in the key.
#[derive(Clone)]
pub(crate) struct BatchSpec {
    /// The name each element takes in the key template (`id`).
    pub(crate) element: Ident,
    /// The parameter holding the elements (`ids`). Parsed with `parse_any`,
    /// so `batch(id in self)` reaches the validator.
    pub(crate) parameter: Ident,
}

/// Everything written inside the attribute; `None` (or empty) for an option
/// not given. The parser only fills the options the attribute accepts.
#[derive(Default)]
pub(crate) struct Args {
    /// Each `key = "..."`, in order: at most one for `#[cached]`,
    /// `#[write_through]` and `#[write_behind]` (a repeat is reported), any
    /// number for `#[invalidates]`.
    pub(crate) keys: Vec<Setting<LitStr>>,
    /// Each `tag = "..."` of `#[invalidates]`, in order.
    pub(crate) tag: Vec<Setting<LitStr>>,
    /// `tags = ["...", ...]` of `#[cached]`, `#[write_through]` and
    /// `#[write_behind]`.
    pub(crate) tags: Option<Setting<Vec<LitStr>>>,
    pub(crate) ttl: Option<Setting<Seconds>>,
    pub(crate) jitter: Option<Setting<Number>>,
    pub(crate) negative: Option<Setting<Seconds>>,
    /// `lock`, a flag: the setting only records where it was written.
    pub(crate) lock: Option<Setting<()>>,
    /// `early` (value `None`: the default beta) or `early = B`.
    pub(crate) early: Option<Setting<Option<Number>>>,
    pub(crate) stale: Option<Setting<Seconds>>,
    pub(crate) cache: Option<Setting<Expr>>,
    pub(crate) skip: Option<Setting<Vec<Ident>>>,
    pub(crate) l1: Option<Setting<LitBool>>,
    /// `batch(id in ids)` of `#[cached]`.
    pub(crate) batch: Option<Setting<BatchSpec>>,
    /// `crate = "path"`: where generated code finds the runtime.
    pub(crate) krate: Option<Setting<Path>>,
    /// `value = param` of `#[write_behind]`: the parameter whose value is
    /// stored. Parsed with `parse_any`, so `value = self` reaches the
    /// validator.
    pub(crate) value: Option<Setting<Ident>>,
    /// `queue = "name"` of `#[write_behind]`.
    pub(crate) queue: Option<Setting<LitStr>>,
    /// `coalesce`, a flag of `#[write_behind]`.
    pub(crate) coalesce: Option<Setting<()>>,
    /// Options that were written but whose value did not parse (already
    /// reported), so the validator does not also call them missing.
    pub(crate) malformed: Vec<String>,
}

enum ParsedOption {
    Key(Setting<LitStr>),
    Tag(Setting<LitStr>),
    Tags(Setting<Vec<LitStr>>),
    Ttl(Setting<Seconds>),
    Jitter(Setting<Number>),
    Negative(Setting<Seconds>),
    Lock(Setting<()>),
    Early(Setting<Option<Number>>),
    Stale(Setting<Seconds>),
    Cache(Setting<Expr>),
    Skip(Setting<Vec<Ident>>),
    L1(Setting<LitBool>),
    Batch(Setting<BatchSpec>),
    Crate(Setting<Path>),
    Value(Setting<Ident>),
    Queue(Setting<LitStr>),
    Coalesce(Setting<()>),
}

/// Parses the arguments of the attribute `kind`. Never fails as a whole:
/// every mistake is pushed to `errors` and the options that did parse are
/// returned.
pub(crate) fn parse_args(kind: MacroKind, tokens: TokenStream, errors: &mut Errors) -> Args {
    let mut args = Args::default();
    let segments = split_at_top_level_commas(tokens);
    let parse = |input: ParseStream| parse_option(kind, input);
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
        match parse.parse2(segment.stream()) {
            Ok(option) => args.set(kind, option, errors),
            Err(error) => {
                // `cache = EXPR` is the one value that may itself contain a
                // top-level comma (`cache = pick::<A, B>()`): try the segment
                // joined with the ones after it before calling it an error.
                let rejoined = starts_with_cache_option(segment)
                    .then(|| rejoin_cache_expression(kind, &segments[index - 1..]))
                    .flatten();
                match rejoined {
                    Some((option, segments_used)) => {
                        args.set(kind, option, errors);
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

impl Args {
    /// Whether `name` was written, even if its value did not parse.
    pub(crate) fn mentions(&self, name: &str) -> bool {
        self.malformed.iter().any(|malformed| malformed == name)
    }

    fn note_malformed(&mut self, segment: &Segment) {
        if let Some(TokenTree::Ident(name)) = segment.tokens.first() {
            self.malformed.push(name.to_string());
        }
    }

    fn set(&mut self, kind: MacroKind, option: ParsedOption, errors: &mut Errors) {
        match option {
            ParsedOption::Key(setting) => {
                if kind.repeats("key") || self.keys.is_empty() {
                    self.keys.push(setting);
                } else {
                    errors.at(setting.name, "`key` specified more than once");
                }
            }
            // Only `#[invalidates]` accepts `tag`, and there it repeats.
            ParsedOption::Tag(setting) => self.tag.push(setting),
            ParsedOption::Tags(setting) => set_once(&mut self.tags, "tags", setting, errors),
            ParsedOption::Ttl(setting) => set_once(&mut self.ttl, "ttl", setting, errors),
            ParsedOption::Jitter(setting) => {
                set_once(&mut self.jitter, "jitter", setting, errors);
            }
            ParsedOption::Negative(setting) => {
                set_once(&mut self.negative, "negative", setting, errors);
            }
            ParsedOption::Lock(setting) => set_once(&mut self.lock, "lock", setting, errors),
            ParsedOption::Early(setting) => set_once(&mut self.early, "early", setting, errors),
            ParsedOption::Stale(setting) => set_once(&mut self.stale, "stale", setting, errors),
            ParsedOption::Cache(setting) => set_once(&mut self.cache, "cache", setting, errors),
            ParsedOption::Skip(setting) => set_once(&mut self.skip, "skip", setting, errors),
            ParsedOption::L1(setting) => set_once(&mut self.l1, "l1", setting, errors),
            ParsedOption::Batch(setting) => set_once(&mut self.batch, "batch", setting, errors),
            ParsedOption::Crate(setting) => set_once(&mut self.krate, "crate", setting, errors),
            ParsedOption::Value(setting) => set_once(&mut self.value, "value", setting, errors),
            ParsedOption::Queue(setting) => set_once(&mut self.queue, "queue", setting, errors),
            ParsedOption::Coalesce(setting) => {
                set_once(&mut self.coalesce, "coalesce", setting, errors);
            }
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

fn parse_option(kind: MacroKind, input: ParseStream) -> syn::Result<ParsedOption> {
    if !input.peek(Ident::peek_any) {
        return Err(input.error(format!("expected one of: {}", kind.option_list())));
    }
    // `parse_any` so that `crate` (a keyword) is a name like the others.
    let ident = input.call(Ident::parse_any)?;
    let written = ident.to_string();
    if !kind.options().contains(&written.as_str()) {
        return Err(syn::Error::new(
            ident.span(),
            unknown_option_message(kind, &written),
        ));
    }
    let name = ident.span();
    let option = match written.as_str() {
        "key" => ParsedOption::Key(Setting::new(name, parse_value(input, &ident)?)),
        "tag" => ParsedOption::Tag(Setting::new(name, parse_value(input, &ident)?)),
        "tags" => ParsedOption::Tags(Setting::new(name, parse_tag_list(input, &ident)?)),
        "ttl" | "negative" | "stale" => {
            let seconds = Setting::new(name, parse_seconds_value(input, &ident)?);
            match written.as_str() {
                "ttl" => ParsedOption::Ttl(seconds),
                "negative" => ParsedOption::Negative(seconds),
                _ => ParsedOption::Stale(seconds),
            }
        }
        "jitter" => ParsedOption::Jitter(Setting::new(name, parse_number_value(input, &ident)?)),
        "lock" => ParsedOption::Lock(Setting::new(name, parse_flag(input, &ident)?)),
        "coalesce" => ParsedOption::Coalesce(Setting::new(name, parse_flag(input, &ident)?)),
        "value" => ParsedOption::Value(Setting::new(name, parse_parameter_name(input, &ident)?)),
        "queue" => ParsedOption::Queue(Setting::new(name, parse_value(input, &ident)?)),
        "early" => {
            let value = if input.is_empty() {
                None
            } else {
                Some(parse_number_value(input, &ident)?)
            };
            ParsedOption::Early(Setting::new(name, value))
        }
        "cache" => ParsedOption::Cache(Setting::new(name, parse_value(input, &ident)?)),
        "skip" => ParsedOption::Skip(Setting::new(name, parse_skip_list(input)?)),
        "l1" => ParsedOption::L1(Setting::new(name, parse_value(input, &ident)?)),
        "batch" => ParsedOption::Batch(Setting::new(name, parse_batch(input, &ident)?)),
        "crate" => {
            let path: LitStr = parse_value(input, &ident)?;
            // `LitStr::parse` gives the path's tokens the string's span, so a
            // path that does not resolve is reported on the user's string.
            let value = path.parse().map_err(|_| {
                syn::Error::new(
                    path.span(),
                    "`crate` takes the runtime's path as a string, such as `crate = \"::cache_runtime\"`",
                )
            })?;
            ParsedOption::Crate(Setting::new(name, value))
        }
        other => unreachable!("`{other}` is listed in `MacroKind::options` but not parsed"),
    };
    if !input.is_empty() {
        return Err(input.error("expected `,` between options"));
    }
    Ok(option)
}

/// How an option that takes a value is written, for messages.
fn example(option: &str) -> &'static str {
    match option {
        "key" => "key = \"user:<id>\"",
        "tag" => "tag = \"org:<org>\"",
        "tags" => "tags = [\"org:<org>\"]",
        "ttl" => "ttl = 300",
        "jitter" => "jitter = 0.1",
        "negative" => "negative = 60",
        "early" => "early = 2.0",
        "stale" => "stale = 600",
        "cache" => "cache = self.cache",
        "l1" => "l1 = false",
        "crate" => "crate = \"::cache_runtime\"",
        "value" => "value = at",
        "queue" => "queue = \"seen\"",
        _ => "",
    }
}

/// "unknown option", the options this attribute accepts, and a hint when the
/// name is an option of another attribute that is easily confused.
fn unknown_option_message(kind: MacroKind, name: &str) -> String {
    let hint = match (kind, name) {
        (MacroKind::Invalidates, "tags") => "; write each tag as `tag = \"...\"`",
        (MacroKind::Cached | MacroKind::WriteThrough | MacroKind::WriteBehind, "tag") => {
            "; tags are a list: `tags = [\"...\"]`"
        }
        (MacroKind::Invalidates, "ttl" | "jitter" | "stale" | "negative") => {
            "; `#[invalidates]` only deletes entries: how long they live is set where they are stored (`#[cached]`, `#[write_through]`)"
        }
        _ => "",
    };
    format!(
        "unknown option `{name}`; expected one of: {}{hint}",
        kind.option_list()
    )
}

/// `=`, after an option's name. An option written alone is reported on its
/// name (`l1` says it needs a value, not "expected `=`" on the whole
/// attribute).
fn parse_equals(input: ParseStream, name: &Ident) -> syn::Result<Token![=]> {
    if input.is_empty() {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "`{name}` needs a value: write `{}`",
                example(&name.to_string())
            ),
        ));
    }
    input.parse()
}

/// A flag such as `lock`: its name alone. A value is reported on itself
/// (or on the `=` when there is none after it).
fn parse_flag(input: ParseStream, name: &Ident) -> syn::Result<()> {
    if !input.peek(Token![=]) {
        return Ok(());
    }
    let equals = input.parse::<Token![=]>()?;
    let value: TokenStream = input.parse()?;
    let message = format!("`{name}` is a flag: write `{name}`");
    Err(if value.is_empty() {
        syn::Error::new(equals.span, message)
    } else {
        syn::Error::new_spanned(value, message)
    })
}

/// `= name`: one identifier naming a parameter (`self` included, for the
/// validator to explain). Anything else (a field, an expression, a string)
/// is one error over the whole value.
fn parse_parameter_name(input: ParseStream, name: &Ident) -> syn::Result<Ident> {
    parse_equals(input, name)?;
    let value: TokenStream = input.fork().parse()?;
    if value.is_empty() {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "`{name} =` needs a value after `=`: write `{}`",
                example(&name.to_string())
            ),
        ));
    }
    if input.peek(Ident::peek_any) {
        let parameter = input.call(Ident::parse_any)?;
        // `value = at key = ".."`: a missing comma, reported as such.
        if input.is_empty() || input.peek(Ident::peek_any) {
            return Ok(parameter);
        }
    }
    input.parse::<TokenStream>()?;
    Err(syn::Error::new_spanned(
        value,
        format!(
            "`{name}` takes the name of a parameter, such as `{}`: the cache stores a clone of that parameter",
            example(&name.to_string())
        ),
    ))
}

/// `= VALUE`, for an option whose name was just parsed. A missing value is
/// reported on the name.
fn parse_value<T: syn::parse::Parse>(input: ParseStream, name: &Ident) -> syn::Result<T> {
    parse_equals(input, name)?;
    if input.is_empty() {
        return Err(syn::Error::new(
            name.span(),
            format!(
                "`{name} =` needs a value after `=`: write `{}`",
                example(&name.to_string())
            ),
        ));
    }
    input.parse()
}

/// `= N` or `= -N`, a numeric literal alone. Anything else (an expression
/// such as `1.0 / 10.0`, a constant, a string) is one error over the whole
/// value, saying to write the literal.
fn parse_number_value(input: ParseStream, name: &Ident) -> syn::Result<Number> {
    parse_equals(input, name)?;
    let value: TokenStream = input.fork().parse()?;
    if let Some(number) = parse_number_alone(input)? {
        return Ok(number);
    }
    input.parse::<TokenStream>()?;
    let option = name.to_string();
    let mut message = format!(
        "`{option}` takes a number literal, such as `{}`",
        example(&option)
    );
    if value.is_empty() {
        return Err(syn::Error::new(name.span(), message));
    }
    if !matches!(
        syn::parse2::<Expr>(value.clone()),
        Ok(Expr::Lit(_)) | Err(_)
    ) {
        message.push_str("; the macro can't evaluate expressions or constants");
    }
    Err(syn::Error::new_spanned(value, message))
}

/// A numeric literal with an optional minus, when that is all the value
/// holds (or it is followed by another option's name: `ttl = 300 key =
/// ".."`, a missing comma, reported as such); `None`, having consumed
/// nothing, otherwise.
fn parse_number_alone(input: ParseStream) -> syn::Result<Option<Number>> {
    let alone = |input: ParseStream| -> syn::Result<Option<Number>> {
        let minus: Option<Token![-]> = input.parse()?;
        if input.peek(syn::LitInt) || input.peek(syn::LitFloat) {
            let lit: Lit = input.parse()?;
            if input.is_empty() || input.peek(Ident::peek_any) {
                return Ok(Some(Number { minus, lit }));
            }
        }
        Ok(None)
    };
    // Tried on a fork first, so that an expression is left whole.
    match alone(&input.fork())? {
        Some(_) => alone(input),
        None => Ok(None),
    }
}

/// `= N` (seconds as a literal) or `= EXPR`: a constant, a `Duration`, any
/// expression of a `u64` of seconds or a `Duration`, which the compiler
/// types and the runtime checks. A literal that is not a number (`ttl =
/// "300"`) is refused here.
fn parse_seconds_value(input: ParseStream, name: &Ident) -> syn::Result<Seconds> {
    parse_equals(input, name)?;
    let option = name.to_string();
    let takes = format!(
        "`{option}` takes whole seconds as an integer literal (`{}`), or an expression of a `u64` of seconds or a `Duration` (a constant, `Duration::from_secs(..)`, a value from configuration)",
        example(&option)
    );
    if input.is_empty() {
        return Err(syn::Error::new(name.span(), takes));
    }
    if let Some(number) = parse_number_alone(input)? {
        return Ok(Seconds::Literal(number));
    }
    let expression: Expr = input.parse()?;
    if let Expr::Lit(literal) = &expression {
        return Err(syn::Error::new_spanned(literal, takes));
    }
    Ok(Seconds::Expression(expression))
}

/// `= ["...", ...]`: tag templates.
fn parse_tag_list(input: ParseStream, name: &Ident) -> syn::Result<Vec<LitStr>> {
    parse_equals(input, name)?;
    if !input.peek(syn::token::Bracket) {
        return Err(input
            .error("`tags` takes a list of tag templates in brackets: `tags = [\"org:<org>\"]`"));
    }
    let content;
    syn::bracketed!(content in input);
    let templates = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
    Ok(templates.into_iter().collect())
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

/// How `batch` is written, for messages.
const BATCH_EXAMPLE: &str = "`batch(id in ids)`, where `ids` is a parameter (a `Vec<K>` or a `&[K]`) and `id` names each of its elements in the key";

/// `(ELEM in PARAM)`: two names around `in`. Each mistake is reported on
/// the tokens that caused it: missing parentheses on the name, a missing
/// `in` where it belongs, a path or an expression over all of it.
fn parse_batch(input: ParseStream, name: &Ident) -> syn::Result<BatchSpec> {
    let needs_parentheses =
        format!("`batch` takes an element and a parameter in parentheses: {BATCH_EXAMPLE}");
    if input.is_empty() {
        return Err(syn::Error::new(name.span(), needs_parentheses));
    }
    if !input.peek(syn::token::Paren) {
        let value: TokenStream = input.parse()?;
        return Err(syn::Error::new_spanned(value, needs_parentheses));
    }
    let content;
    let parentheses = syn::parenthesized!(content in input);
    if content.is_empty() {
        return Err(syn::Error::new(
            parentheses.span.join(),
            format!("`batch()` is empty: write {BATCH_EXAMPLE}"),
        ));
    }
    // The element: a plain name (`in` and `self` are not), alone before `in`.
    let element =
        if content.peek(syn::Ident) && (content.peek2(Token![in]) || content.peek2(syn::Ident)) {
            content.parse::<Ident>()?
        } else if content.peek(syn::Ident) && is_last(&content) {
            let element: Ident = content.parse()?;
            return Err(syn::Error::new(
                element.span(),
                format!("expected `in` after `{element}`: write {BATCH_EXAMPLE}"),
            ));
        } else {
            return Err(over_the_rest(
                &content,
                true,
                format!("`batch` takes a name for each element before `in`: write {BATCH_EXAMPLE}"),
            ));
        };
    if !content.peek(Token![in]) {
        return Err(content.error(format!(
            "expected `in` between `{element}` and the parameter: write {BATCH_EXAMPLE}"
        )));
    }
    let in_token: Token![in] = content.parse()?;
    if content.is_empty() {
        return Err(syn::Error::new(
            in_token.span,
            format!("expected a parameter after `in`: write {BATCH_EXAMPLE}"),
        ));
    }
    if content.peek(Ident::peek_any) && is_last(&content) {
        let parameter = content.call(Ident::parse_any)?;
        return Ok(BatchSpec { element, parameter });
    }
    Err(over_the_rest(
        &content,
        false,
        format!("`batch` takes the name of a parameter after `in`: write {BATCH_EXAMPLE}"),
    ))
}

/// Whether one token is left.
fn is_last(content: ParseStream) -> bool {
    let fork = content.fork();
    fork.parse::<TokenTree>().is_ok() && fork.is_empty()
}

/// An error spanned over the tokens left (up to `in`, when `to_in`).
fn over_the_rest(content: ParseStream, to_in: bool, message: String) -> syn::Error {
    let fork = content.fork();
    let mut written = TokenStream::new();
    let at_end = |fork: ParseStream| fork.is_empty() || (to_in && fork.peek(Token![in]));
    while !at_end(&fork) {
        match fork.parse::<TokenTree>() {
            Ok(token) => written.extend([token]),
            Err(_) => break,
        }
    }
    if written.is_empty() {
        content.error(message)
    } else {
        syn::Error::new_spanned(written, message)
    }
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
fn rejoin_cache_expression(kind: MacroKind, segments: &[Segment]) -> Option<(ParsedOption, usize)> {
    let parse = |input: ParseStream| parse_option(kind, input);
    let mut joined = segments[0].stream();
    for (used, next) in segments.iter().enumerate().skip(1) {
        let comma = segments[used - 1].comma.as_ref()?;
        joined.extend(quote!(#comma));
        joined.extend(next.stream());
        if let Ok(option) = parse.parse2(joined.clone()) {
            return Some((option, used + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(tokens: TokenStream) -> (Args, Vec<String>) {
        parse_for(MacroKind::Cached, tokens)
    }

    fn parse_for(kind: MacroKind, tokens: TokenStream) -> (Args, Vec<String>) {
        let mut errors = Errors::new();
        let args = parse_args(kind, tokens, &mut errors);
        (args, errors.messages())
    }

    fn values(templates: &[LitStr]) -> Vec<String> {
        templates.iter().map(LitStr::value).collect()
    }

    /// The literal of `ttl`, `negative` or `stale`, as written.
    fn literal(seconds: &Seconds) -> String {
        match seconds {
            Seconds::Literal(number) => number.to_token_stream().to_string(),
            Seconds::Expression(expression) => {
                panic!("a literal, not `{}`", expression.to_token_stream())
            }
        }
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
        assert_eq!(args.keys.len(), 1);
        assert_eq!(args.keys[0].value.value(), "org:<org>:user:<id>");
        assert_eq!(literal(&args.ttl.unwrap().value), "300");
        assert_eq!(
            args.jitter.unwrap().value.lit.to_token_stream().to_string(),
            "0.2"
        );
        assert_eq!(literal(&args.negative.unwrap().value), "60");
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
        assert!(args.keys.is_empty() && args.ttl.is_none());
    }

    #[test]
    fn keeps_a_minus_sign_for_the_validator() {
        let (args, errors) = parse(quote!(ttl = -5, jitter = -0.5));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(literal(&args.ttl.unwrap().value), "- 5");
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
        assert_eq!(literal(&args.ttl.unwrap().value), "1");
    }

    #[test]
    fn unknown_option_lists_the_valid_ones() {
        let (_, errors) = parse(quote!(ttll = 5));
        assert_eq!(
            errors,
            [
                "unknown option `ttll`; expected one of: `key`, `ttl`, `jitter`, `negative`, `lock`, `early`, `stale`, `tags`, `cache`, `skip`, `l1`, `batch`, `crate`"
            ]
        );
    }

    #[test]
    fn tags_take_a_list_of_templates() {
        let (args, errors) = parse(quote!(
            lock,
            tags = ["org:<org>", "team:<team>",],
            stale = 30
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.lock.is_some() && args.stale.is_some());
        assert_eq!(
            values(&args.tags.unwrap().value),
            ["org:<org>", "team:<team>"]
        );

        let (args, errors) = parse(quote!(tags = []));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.tags.unwrap().value.is_empty());

        let (args, errors) = parse(quote!(tags = "org:<org>", tags = [org], tags));
        assert_eq!(
            errors,
            [
                "`tags` takes a list of tag templates in brackets: `tags = [\"org:<org>\"]`",
                "expected string literal",
                "`tags` needs a value: write `tags = [\"org:<org>\"]`",
            ]
        );
        assert!(args.tags.is_none() && args.mentions("tags"));

        let (_, errors) = parse(quote!(tags = ["a"], tags = ["b"]));
        assert_eq!(errors, ["`tags` specified more than once"]);
        let (_, errors) = parse(quote!(tag = "org:<org>"));
        assert_eq!(
            errors,
            [
                "unknown option `tag`; expected one of: `key`, `ttl`, `jitter`, `negative`, `lock`, `early`, `stale`, `tags`, `cache`, `skip`, `l1`, `batch`, `crate`; tags are a list: `tags = [\"...\"]`"
            ]
        );
    }

    #[test]
    fn invalidates_repeats_key_and_tag() {
        let (args, errors) = parse_for(
            MacroKind::Invalidates,
            quote!(
                key = "user:<id>",
                tag = "org:<org>",
                key = "name:<name>",
                cache = self.cache,
                crate = "rt"
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
        let keys: Vec<String> = args.keys.iter().map(|key| key.value.value()).collect();
        assert_eq!(keys, ["user:<id>", "name:<name>"]);
        assert_eq!(args.tag.len(), 1);
        assert_eq!(args.tag[0].value.value(), "org:<org>");
        assert!(args.cache.is_some() && args.krate.is_some());
    }

    #[test]
    fn each_attribute_refuses_the_options_of_the_others() {
        let invalidates = "`key`, `tag`, `cache`, `crate`";
        let write_through = "`key`, `ttl`, `jitter`, `stale`, `tags`, `cache`, `skip`, `crate`";
        let cases = [
            (
                MacroKind::Invalidates,
                quote!(ttl = 60),
                format!(
                    "unknown option `ttl`; expected one of: {invalidates}; `#[invalidates]` only deletes entries: how long they live is set where they are stored (`#[cached]`, `#[write_through]`)"
                ),
            ),
            (
                MacroKind::Invalidates,
                quote!(tags = ["org:<org>"]),
                format!(
                    "unknown option `tags`; expected one of: {invalidates}; write each tag as `tag = \"...\"`"
                ),
            ),
            (
                MacroKind::Invalidates,
                quote!(skip(pool)),
                format!("unknown option `skip`; expected one of: {invalidates}"),
            ),
            (
                MacroKind::WriteThrough,
                quote!(negative = 5),
                format!("unknown option `negative`; expected one of: {write_through}"),
            ),
            (
                MacroKind::WriteThrough,
                quote!(lock),
                format!("unknown option `lock`; expected one of: {write_through}"),
            ),
        ];
        for (kind, tokens, expected) in cases {
            let (_, errors) = parse_for(kind, tokens.clone());
            assert_eq!(errors, [expected], "{kind:?} {tokens}");
        }
        let (args, errors) = parse_for(
            MacroKind::WriteThrough,
            quote!(
                key = "user:<id>",
                ttl = 300,
                jitter = 0.1,
                stale = 60,
                tags = ["org:<org>"],
                cache = CACHE,
                skip(D),
                crate = "rt"
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.skip.is_some());
        assert!(args.ttl.is_some() && args.jitter.is_some() && args.stale.is_some());
        assert!(args.tags.is_some() && args.cache.is_some() && args.krate.is_some());
        let (_, errors) = parse_for(MacroKind::WriteThrough, quote!(key = "a", key = "b"));
        assert_eq!(errors, ["`key` specified more than once"]);
    }

    #[test]
    fn write_behind_takes_a_value_a_queue_and_the_coalesce_flag() {
        let (args, errors) = parse_for(
            MacroKind::WriteBehind,
            quote!(
                key = "user:<id>:seen",
                ttl = 300,
                value = at,
                jitter = 0.1,
                stale = 60,
                tags = ["org:<org>"],
                cache = self.cache,
                queue = "seen",
                coalesce,
                crate = "rt"
            ),
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.value.unwrap().value, "at");
        assert_eq!(args.queue.unwrap().value.value(), "seen");
        assert!(args.coalesce.is_some());
        assert!(args.ttl.is_some() && args.jitter.is_some() && args.stale.is_some());
        assert!(args.tags.is_some() && args.cache.is_some() && args.krate.is_some());

        let (args, errors) = parse_for(MacroKind::WriteBehind, quote!(value = self));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.value.unwrap().value, "self");

        let (args, errors) = parse_for(
            MacroKind::WriteBehind,
            quote!(
                value = user.id,
                value,
                coalesce = true,
                queue = seen,
                value = "at"
            ),
        );
        assert_eq!(
            errors,
            [
                "`value` takes the name of a parameter, such as `value = at`: the cache stores a clone of that parameter",
                "`value` needs a value: write `value = at`",
                "`coalesce` is a flag: write `coalesce`",
                "expected string literal",
                "`value` takes the name of a parameter, such as `value = at`: the cache stores a clone of that parameter",
            ]
        );
        assert!(args.value.is_none() && args.mentions("value") && args.mentions("coalesce"));

        let (_, errors) = parse_for(MacroKind::WriteBehind, quote!(value = at key = "k"));
        assert_eq!(errors, ["expected `,` between options"]);
        let (_, errors) = parse_for(MacroKind::WriteBehind, quote!(value = a, value = b));
        assert_eq!(errors, ["`value` specified more than once"]);
        let (_, errors) = parse_for(MacroKind::WriteBehind, quote!(skip(db), tag = "t"));
        assert_eq!(
            errors,
            [
                "unknown option `skip`; expected one of: `key`, `ttl`, `value`, `jitter`, `stale`, `tags`, `cache`, `queue`, `coalesce`, `crate`",
                "unknown option `tag`; expected one of: `key`, `ttl`, `value`, `jitter`, `stale`, `tags`, `cache`, `queue`, `coalesce`, `crate`; tags are a list: `tags = [\"...\"]`",
            ]
        );
        // The options of `#[write_behind]` are its own.
        let (_, errors) = parse_for(MacroKind::WriteThrough, quote!(value = at));
        assert_one_starting(&errors, "unknown option `value`");
    }

    fn assert_one_starting(errors: &[String], start: &str) {
        assert!(
            matches!(errors, [error] if error.starts_with(start)),
            "{errors:?}"
        );
    }

    #[test]
    fn a_segment_that_is_not_an_option_lists_the_options() {
        let (_, errors) = parse_for(MacroKind::Invalidates, quote!("user:<id>"));
        assert_eq!(errors, ["expected one of: `key`, `tag`, `cache`, `crate`"]);
    }

    #[test]
    fn parses_lock_early_and_stale() {
        let (args, errors) = parse(quote!(lock, early = 0.5, stale = 30));
        assert!(errors.is_empty(), "{errors:?}");
        assert!(args.lock.is_some());
        let early = args.early.unwrap().value.expect("a beta was written");
        assert_eq!(early.lit.to_token_stream().to_string(), "0.5");
        assert_eq!(literal(&args.stale.unwrap().value), "30");

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
        assert_eq!(literal(&args.stale.unwrap().value), "- 5");
        let (_, errors) = parse(quote!(early = fast, stale, stale = "30", stale =));
        assert_eq!(
            errors,
            [
                "`early` takes a number literal, such as `early = 2.0`; the macro can't evaluate expressions or constants",
                "`stale` needs a value: write `stale = 600`",
                STALE_TAKES,
                STALE_TAKES,
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
            "`ttl` takes whole seconds as an integer literal (`ttl = 300`), or an expression of a `u64` of seconds or a `Duration` (a constant, `Duration::from_secs(..)`, a value from configuration)"
        );
        assert!(errors[2].starts_with("unknown option `bogus`"));
        assert_eq!(errors[3], "`negative` needs a value: write `negative = 60`");
        assert!(args.l1.is_some());
    }

    const STALE_TAKES: &str = "`stale` takes whole seconds as an integer literal (`stale = 600`), or an expression of a `u64` of seconds or a `Duration` (a constant, `Duration::from_secs(..)`, a value from configuration)";

    #[test]
    fn lifetimes_may_be_expressions_and_other_numbers_are_literals() {
        let (args, errors) = parse(quote!(
            ttl = 5 * 60,
            negative = config::NEGATIVE,
            stale = Duration::from_secs(STALE),
            key = "k",
        ));
        assert!(errors.is_empty(), "{errors:?}");
        let written = |seconds: Option<Setting<Seconds>>| match seconds.unwrap().value {
            Seconds::Expression(expression) => expression.to_token_stream().to_string(),
            Seconds::Literal(number) => panic!("an expression, not `{}`", number.to_token_stream()),
        };
        assert_eq!(written(args.ttl), "5 * 60");
        assert_eq!(written(args.negative), "config :: NEGATIVE");
        assert_eq!(written(args.stale), "Duration :: from_secs (STALE)");
        let (_, errors) = parse(quote!(ttl = TTL key = "k", jitter = 1.0 / 10.0));
        assert_eq!(
            errors,
            [
                "expected `,` between options",
                "`jitter` takes a number literal, such as `jitter = 0.1`; the macro can't evaluate expressions or constants",
            ]
        );
    }

    #[test]
    fn an_option_without_its_value_is_reported_on_its_name() {
        let (_, errors) = parse(quote!(l1, cache =, key, crate =));
        assert_eq!(
            errors,
            [
                "`l1` needs a value: write `l1 = false`",
                "`cache =` needs a value after `=`: write `cache = self.cache`",
                "`key` needs a value: write `key = \"user:<id>\"`",
                "`crate =` needs a value after `=`: write `crate = \"::cache_runtime\"`",
            ]
        );
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
        assert_eq!(args.keys.len(), 1);
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
    fn batch_names_an_element_and_a_parameter() {
        let (args, errors) = parse(quote!(key = "user:<id>", batch(id in ids), ttl = 5));
        assert!(errors.is_empty(), "{errors:?}");
        let batch = args.batch.unwrap().value;
        assert_eq!(
            (batch.element.to_string(), batch.parameter.to_string()),
            ("id".to_owned(), "ids".to_owned())
        );
        assert!(args.ttl.is_some());
        // `self` reaches the validator, which explains why it can't be.
        let (args, errors) = parse(quote!(batch(id in self)));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.batch.unwrap().value.parameter, "self");
        let (_, errors) = parse(quote!(batch(id in ids), batch(id in ids)));
        assert_eq!(errors, ["`batch` specified more than once"]);
        // `#[cached]`'s own.
        let (_, errors) = parse_for(MacroKind::WriteThrough, quote!(batch(id in ids)));
        assert_one_starting(&errors, "unknown option `batch`");
    }

    #[test]
    fn batch_mistakes_are_reported_on_their_tokens() {
        let example = "`batch(id in ids)`, where `ids` is a parameter (a `Vec<K>` or a `&[K]`) and `id` names each of its elements in the key";
        let cases = [
            (
                quote!(batch),
                format!("`batch` takes an element and a parameter in parentheses: {example}"),
            ),
            (
                quote!(batch = ids),
                format!("`batch` takes an element and a parameter in parentheses: {example}"),
            ),
            (
                quote!(batch()),
                format!("`batch()` is empty: write {example}"),
            ),
            (
                quote!(batch(ids)),
                format!("expected `in` after `ids`: write {example}"),
            ),
            (
                quote!(batch(id ids)),
                format!("expected `in` between `id` and the parameter: write {example}"),
            ),
            (
                quote!(batch(id of ids)),
                format!("expected `in` between `id` and the parameter: write {example}"),
            ),
            (
                quote!(batch(id in)),
                format!("expected a parameter after `in`: write {example}"),
            ),
            (
                quote!(batch(user.id in users)),
                format!("`batch` takes a name for each element before `in`: write {example}"),
            ),
            (
                quote!(batch(in ids)),
                format!("`batch` takes a name for each element before `in`: write {example}"),
            ),
            (
                quote!(batch(id in self.ids)),
                format!("`batch` takes the name of a parameter after `in`: write {example}"),
            ),
            (
                quote!(batch(id in ids, names)),
                format!("`batch` takes the name of a parameter after `in`: write {example}"),
            ),
        ];
        // Where each is reported, the compile tests show
        // (tests/ui/fail/batch-*.rs).
        for (tokens, expected) in cases {
            let (args, errors) = parse(quote!(#tokens, ttl = 1));
            assert_eq!(errors, [expected], "{tokens}");
            assert!(args.batch.is_none() && args.mentions("batch"), "{tokens}");
            assert!(args.ttl.is_some(), "{tokens}");
        }
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
