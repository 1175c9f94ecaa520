//! Parses a key template such as `"org:<org>:user:<user.id>"` into literal
//! text and placeholders, and checks the rules that make rendering
//! injective.
//!
//! The runtime escapes every byte of a placeholder value outside
//! `[A-Za-z0-9]` as `%XX`, so a rendered value is made of letters, digits and
//! `%` only. Literal text is printable ASCII without whitespace, `%` (which
//! only escapes produce) or `{ } * ? [ ]` (Redis hash-tag and pattern
//! characters, which the runtime's own keys rely on templates never
//! holding). A placeholder may touch only a literal character that is not a
//! letter or digit, or the start or end of the template: `"pair:<a><b>"` and
//! `"user:<id>x"` are refused. Together these make the literal separators of
//! a rendered key exactly the template's, so values can never run into each
//! other or into literal text, and two renderings of one template are equal
//! only when their values are.

use std::ops::Range;

use proc_macro2::{Ident, Span};
use syn::ext::IdentExt;
use syn::{Index, LitStr, Member};

use crate::errors::Errors;
use crate::plan::Source;

/// Characters that may not appear in a template's literal text, besides
/// whitespace.
const FORBIDDEN_IN_TEXT: &[char] = &['{', '}', '*', '?', '[', ']'];

/// What a template renders: the entry's key, or a tag carried by entries
/// (`#[cached(tags = [..])]`, `#[invalidates(tag = "..")]`). Both follow the
/// same rules; only the wording of errors differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TemplateKind {
    Key,
    Tag,
}

impl TemplateKind {
    /// `key` or `tag`, as the messages name it.
    pub(crate) fn noun(self) -> &'static str {
        match self {
            TemplateKind::Key => "key",
            TemplateKind::Tag => "tag",
        }
    }

    fn example(self) -> &'static str {
        match self {
            TemplateKind::Key => "\"user:<id>\"",
            TemplateKind::Tag => "\"org:<org>\"",
        }
    }
}

/// A parsed key (or tag) template, in order.
pub(crate) struct KeyTemplate {
    /// The template as written (the string's value), for logs.
    pub(crate) written: String,
    pub(crate) kind: TemplateKind,
    pub(crate) parts: Vec<KeyPart>,
    /// Whether the template parsed without errors (the parts that did parse
    /// are kept either way).
    pub(crate) well_formed: bool,
}

pub(crate) enum KeyPart {
    /// Text copied into the key as is.
    Text(String),
    /// A value rendered with `Display` (and escaped by the runtime).
    Placeholder(Placeholder),
}

/// `<root.field.field>`.
pub(crate) struct Placeholder {
    /// As written, angle brackets included, for error messages.
    pub(crate) written: String,
    /// The parameter the value comes from (`self` is parsed so the validator
    /// can explain why it is refused).
    pub(crate) root: Ident,
    pub(crate) fields: Vec<Member>,
    /// The placeholder inside the key string where the compiler can point
    /// there, otherwise the whole string.
    pub(crate) span: Span,
    /// What `root` names in the signature: set by validation, which reports
    /// a placeholder that names nothing (the expansion only sees resolved
    /// templates).
    pub(crate) source: Option<Source>,
}

impl KeyTemplate {
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|part| match part {
            KeyPart::Placeholder(placeholder) => Some(placeholder),
            KeyPart::Text(_) => None,
        })
    }

    pub(crate) fn placeholders_mut(&mut self) -> impl Iterator<Item = &mut Placeholder> {
        self.parts.iter_mut().filter_map(|part| match part {
            KeyPart::Placeholder(placeholder) => Some(placeholder),
            KeyPart::Text(_) => None,
        })
    }

    /// Whether a placeholder's root is `name` (written without `r#`).
    pub(crate) fn uses(&self, name: &str) -> bool {
        self.placeholders()
            .any(|placeholder| placeholder.root.unraw() == name)
    }
}

/// Parses `key` (a key or a tag template, as `kind` says), pushing every
/// malformed part to `errors`. The returned template holds the parts that
/// did parse, and says whether there were any errors.
pub(crate) fn parse_template(key: &LitStr, kind: TemplateKind, errors: &mut Errors) -> KeyTemplate {
    let mut template_errors = Errors::new();
    let parts = parse_parts(key, kind, &mut template_errors);
    let well_formed = template_errors.is_empty();
    errors.append(template_errors);
    KeyTemplate {
        written: key.value(),
        kind,
        parts,
        well_formed,
    }
}

fn parse_parts(key: &LitStr, kind: TemplateKind, errors: &mut Errors) -> Vec<KeyPart> {
    let template = key.value();
    let noun = kind.noun();
    let spans = SpanFinder::new(key);
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut reported_chars = Vec::new();
    // Where each placeholder that parsed is, for the separation rule.
    let mut placeholders = Vec::new();

    if template.is_empty() {
        errors.at(
            key.span(),
            format!(
                "the {noun} template is empty; write one such as `{}`",
                kind.example()
            ),
        );
    }

    let mut position = 0;
    while let Some(c) = template[position..].chars().next() {
        match c {
            '<' => {
                if !text.is_empty() {
                    parts.push(KeyPart::Text(std::mem::take(&mut text)));
                }
                let inner_start = position + 1;
                match template[inner_start..]
                    .find(['<', '>'])
                    .map(|found| inner_start + found)
                {
                    Some(end) if template[end..].starts_with('>') => {
                        let range = position..end + 1;
                        let inner = &template[inner_start..end];
                        match parse_placeholder(inner, kind, spans.span(range.clone())) {
                            Ok(placeholder) => {
                                placeholders.push(range);
                                parts.push(KeyPart::Placeholder(placeholder));
                            }
                            Err(error) => errors.push(error),
                        }
                        position = end + 1;
                    }
                    // Another `<` before any `>`, or the end of the string:
                    // report this one and go on scanning from there.
                    next => {
                        let end = next.unwrap_or(template.len());
                        errors.at(
                            spans.span(position..end),
                            format!(
                                "unclosed placeholder `{}` in the {noun}; add `>`",
                                &template[position..end]
                            ),
                        );
                        position = end;
                    }
                }
                continue;
            }
            '>' => errors.at(
                spans.span(position..position + 1),
                format!("`>` without a matching `<` in the {noun}"),
            ),
            c => match forbidden_char_message(c, kind) {
                // One error per distinct character is enough to fix them all.
                Some(message) if !reported_chars.contains(&c) => {
                    reported_chars.push(c);
                    errors.at(spans.span(position..position + c.len_utf8()), message);
                }
                Some(_) => {}
                None => text.push(c),
            },
        }
        position += c.len_utf8();
    }
    if !text.is_empty() {
        parts.push(KeyPart::Text(text));
    }
    check_separation(&template, &placeholders, kind, &spans, errors);
    parts
}

/// Why `c` may not appear in a template's literal text, if it may not:
/// literal text is printable ASCII without whitespace, `%` or `{ } * ? [ ]`.
fn forbidden_char_message(c: char, kind: TemplateKind) -> Option<String> {
    let noun = kind.noun();
    Some(if c.is_whitespace() {
        format!(
            "the {noun} can't contain whitespace (found {c:?}); {noun}s are shown and matched by tools that split on it"
        )
    } else if FORBIDDEN_IN_TEXT.contains(&c) {
        format!(
            "the {noun} can't contain `{c}`: `{{ }} * ? [ ]` are Redis hash-tag and pattern characters"
        )
    } else if c == '%' {
        format!(
            "the {noun} can't contain `%`: it is reserved for the escapes of placeholder values (a `:` in a value renders `%3A`)"
        )
    } else if !c.is_ascii() || c.is_ascii_control() {
        format!(
            "the {noun} can't contain {c:?} (U+{:04X}): its literal text is printable ASCII; text with other characters belongs in a placeholder value, which is escaped",
            u32::from(c)
        )
    } else {
        return None;
    })
}

/// Reports each placeholder that touches another placeholder or a letter or
/// digit of the literal text. Rendered values are made of letters, digits
/// and `%`, so only a separator (any other literal character) or the
/// template's start or end shows where a value ends: with `"pair:<a><b>"`,
/// `(1, 23)` and `(12, 3)` would render the same key, and with
/// `"user:<id>x"`, `id = 1` would render what `"user:<id>"` renders for
/// `id = "1x"`.
///
/// Each message shows the template with a `:` added at every such junction.
fn check_separation(
    template: &str,
    placeholders: &[Range<usize>],
    kind: TemplateKind,
    spans: &SpanFinder<'_>,
    errors: &mut Errors,
) {
    /// What a placeholder touches: the next placeholder, or text before or
    /// after it.
    enum Touching<'t> {
        Placeholder(&'t str),
        TextBefore(&'t str),
        TextAfter(&'t str),
    }
    // (where a separator belongs, the span to report, the two sides)
    let mut junctions: Vec<(usize, Range<usize>, &str, Touching<'_>)> = Vec::new();
    for (index, range) in placeholders.iter().enumerate() {
        let written = &template[range.clone()];
        let before = &template[..range.start];
        let text_before = before.len() - before.trim_end_matches(is_word_char).len();
        if text_before > 0 {
            let text = &before[before.len() - text_before..];
            junctions.push((
                range.start,
                range.start - text_before..range.end,
                written,
                Touching::TextBefore(text),
            ));
        }
        if let Some(next) = placeholders.get(index + 1)
            && next.start == range.end
        {
            let next_written = &template[next.clone()];
            junctions.push((
                range.end,
                range.start..next.end,
                written,
                Touching::Placeholder(next_written),
            ));
        }
        let after = &template[range.end..];
        let text_after = after.len() - after.trim_start_matches(is_word_char).len();
        if text_after > 0 {
            let text = &after[..text_after];
            junctions.push((
                range.end,
                range.start..range.end + text_after,
                written,
                Touching::TextAfter(text),
            ));
        }
    }
    if junctions.is_empty() {
        return;
    }
    let mut fixed = template.to_owned();
    for &(at, ..) in junctions.iter().rev() {
        fixed.insert(at, ':');
    }
    let noun = kind.noun();
    for (_, span, placeholder, touching) in junctions {
        let message = match touching {
            Touching::Placeholder(next) => format!(
                "placeholders `{placeholder}` and `{next}` touch, so values such as (1, 23) and (12, 3) would render the same {noun}; put a separator such as `:` between `{placeholder}` and `{next}`: `\"{fixed}\"`"
            ),
            Touching::TextBefore(text) => format!(
                "placeholder `{placeholder}` touches the text `{text}`, so a value's letters and digits would run into it; put a separator such as `:` between `{text}` and `{placeholder}`: `\"{fixed}\"`"
            ),
            Touching::TextAfter(text) => format!(
                "placeholder `{placeholder}` touches the text `{text}`, so a value's letters and digits would run into it; put a separator such as `:` between `{placeholder}` and `{text}`: `\"{fixed}\"`"
            ),
        };
        errors.at(spans.span(span), message);
    }
}

/// A literal character a rendered value could run into: a letter or digit
/// (values are letters, digits and `%`, which literal text never holds).
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// Parses the inside of `<...>`: a parameter name, then `.field` segments
/// (named, or tuple indices like `.0`).
fn parse_placeholder(inner: &str, kind: TemplateKind, span: Span) -> syn::Result<Placeholder> {
    let written = format!("<{inner}>");
    if inner.is_empty() {
        return Err(syn::Error::new(
            span,
            format!(
                "empty placeholder `<>` in the {}; name a parameter, like `<id>`",
                kind.noun()
            ),
        ));
    }
    let mut segments = inner.split('.');
    let root_name = segments.next().unwrap_or_default();
    let root = match root_name {
        "self" => Ident::new("self", span),
        _ => parse_ident(root_name, span).ok_or_else(|| {
            syn::Error::new(
                span,
                format!("placeholder `{written}` must start with a parameter name"),
            )
        })?,
    };
    let fields = segments
        .map(|field| {
            if field.is_empty() {
                return Err(syn::Error::new(
                    span,
                    format!("placeholder `{written}` has an empty field name"),
                ));
            }
            parse_member(field, span).ok_or_else(|| {
                syn::Error::new(
                    span,
                    format!("placeholder `{written}`: `{field}` is not a field name"),
                )
            })
        })
        .collect::<syn::Result<Vec<_>>>()?;
    Ok(Placeholder {
        written,
        root,
        fields,
        span,
        source: None,
    })
}

/// A non-keyword identifier (raw identifiers such as `r#type` included).
fn parse_ident(name: &str, span: Span) -> Option<Ident> {
    let mut ident: Ident = syn::parse_str(name).ok()?;
    // The tokenizer would also accept `" id "` or `"id // note"`.
    if ident != name {
        return None;
    }
    ident.set_span(span);
    Some(ident)
}

/// A named field, or a tuple index written in decimal without leading zeros.
fn parse_member(name: &str, span: Span) -> Option<Member> {
    if name.bytes().all(|byte| byte.is_ascii_digit()) {
        let index: u32 = name.parse().ok()?;
        (index.to_string() == name).then_some(Member::Unnamed(Index { index, span }))
    } else {
        parse_ident(name, span).map(Member::Named)
    }
}

/// Maps a byte range of the template's value to a span inside the string
/// literal. `Literal::subspan` only works on nightly compilers; elsewhere (and
/// when escapes make source and value differ) it falls back to the whole
/// literal, which is why every message names the offending part.
struct SpanFinder<'a> {
    key: &'a LitStr,
    /// Where the value starts in the literal's source text, when the value is
    /// a verbatim copy of the source (no escapes).
    value_offset: Option<usize>,
}

impl<'a> SpanFinder<'a> {
    fn new(key: &'a LitStr) -> Self {
        let source = key.token().to_string();
        let value = key.value();
        // `"...` or `r#"...`: the value starts after the first quote.
        let value_offset = source
            .find('"')
            .map(|quote| quote + 1)
            .filter(|&start| source.get(start..start + value.len()) == Some(value.as_str()));
        SpanFinder { key, value_offset }
    }

    fn span(&self, range: Range<usize>) -> Span {
        self.value_offset
            .and_then(|offset| {
                self.key
                    .token()
                    .subspan(offset + range.start..offset + range.end)
            })
            .unwrap_or_else(|| self.key.span())
    }
}

#[cfg(test)]
mod tests {
    use quote::{ToTokens, quote};

    use super::*;

    fn parse(template: &str) -> (Vec<String>, Vec<String>) {
        parse_as(template, TemplateKind::Key)
    }

    fn parse_as(template: &str, kind: TemplateKind) -> (Vec<String>, Vec<String>) {
        let mut errors = Errors::new();
        let key = LitStr::new(template, Span::call_site());
        let parsed = parse_template(&key, kind, &mut errors);
        assert_eq!(parsed.written, template);
        assert_eq!(parsed.kind, kind);
        assert_eq!(parsed.well_formed, errors.is_empty());
        let parts = parsed
            .parts
            .iter()
            .map(|part| match part {
                KeyPart::Text(text) => format!("text {text}"),
                KeyPart::Placeholder(placeholder) => {
                    let (root, fields) = (&placeholder.root, &placeholder.fields);
                    format!("value {}", quote!(#root #(.#fields)*).to_token_stream())
                }
            })
            .collect();
        (parts, errors.messages())
    }

    #[test]
    fn splits_text_and_placeholders() {
        let (parts, errors) = parse("org:<org>:user:<id>");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parts, ["text org:", "value org", "text :user:", "value id"]);
    }

    #[test]
    fn placeholders_may_reach_into_fields_and_tuple_indices() {
        let (parts, errors) = parse("v2:<user.address.city>/<pair.0>-<a>.<b>");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            parts,
            [
                "text v2:",
                "value user . address . city",
                "text /",
                "value pair . 0",
                "text -",
                "value a",
                "text .",
                "value b",
            ]
        );
    }

    #[test]
    fn placeholders_may_not_touch_each_other() {
        let (parts, errors) = parse("pair:<a><b>");
        assert_eq!(
            errors,
            [
                "placeholders `<a>` and `<b>` touch, so values such as (1, 23) and (12, 3) would render the same key; put a separator such as `:` between `<a>` and `<b>`: `\"pair:<a>:<b>\"`"
            ]
        );
        // The parts are kept, so the other checks still run.
        assert_eq!(parts, ["text pair:", "value a", "value b"]);
        let (_, errors) = parse("<a><b><c>");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("`<a>` and `<b>`"), "{errors:?}");
        assert!(errors[1].contains("`<b>` and `<c>`"), "{errors:?}");
        assert!(errors[1].ends_with("`\"<a>:<b>:<c>\"`"), "{errors:?}");
    }

    #[test]
    fn placeholders_may_not_touch_letters_or_digits() {
        let cases = [
            (
                "user:<id>x",
                "placeholder `<id>` touches the text `x`, so a value's letters and digits would run into it; put a separator such as `:` between `<id>` and `x`: `\"user:<id>:x\"`",
            ),
            (
                "user<id>",
                "placeholder `<id>` touches the text `user`, so a value's letters and digits would run into it; put a separator such as `:` between `user` and `<id>`: `\"user:<id>\"`",
            ),
            (
                "v2:<id>0:x",
                "placeholder `<id>` touches the text `0`, so a value's letters and digits would run into it; put a separator such as `:` between `<id>` and `0`: `\"v2:<id>:0:x\"`",
            ),
        ];
        for (template, expected) in cases {
            let (_, errors) = parse(template);
            assert_eq!(errors, [expected], "for {template}");
        }
        let (_, errors) = parse("a<b>c");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[1].ends_with("`\"a:<b>:c\"`"), "{errors:?}");
    }

    #[test]
    fn placeholders_may_touch_any_other_literal_character_and_the_ends() {
        for template in [
            "<id>",
            "<a>:<b>",
            "avatar:<user>.thumb",
            "<a>-<b>_<c>~<d>/<e>#<f>@<g>!<h>",
            "x=<a>,y=<b>;",
            "(<a>)",
        ] {
            let (_, errors) = parse(template);
            assert!(errors.is_empty(), "{template}: {errors:?}");
        }
    }

    #[test]
    fn a_malformed_placeholder_is_not_also_reported_as_touching() {
        // `<1x>` did not parse: only that is reported.
        let (_, errors) = parse("<a><1x>");
        assert_eq!(
            errors,
            ["placeholder `<1x>` must start with a parameter name"]
        );
        // A forbidden character is a separator as far as touching goes.
        let (_, errors) = parse("<a>*<b>");
        assert_eq!(errors.len(), 1, "{errors:?}");
    }

    #[test]
    fn literal_text_is_printable_ascii_without_percent() {
        let (_, errors) = parse("user%:<id>");
        assert_eq!(
            errors,
            [
                "the key can't contain `%`: it is reserved for the escapes of placeholder values (a `:` in a value renders `%3A`)"
            ]
        );
        let (_, errors) = parse("usér:<id>");
        assert_eq!(
            errors,
            [
                "the key can't contain 'é' (U+00E9): its literal text is printable ASCII; text with other characters belongs in a placeholder value, which is escaped"
            ]
        );
        for control in ['\0', '\x07', '\x7f', '\u{200b}'] {
            let (_, errors) = parse(&format!("user{control}:<id>"));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("its literal text is printable ASCII"),
                "{errors:?}"
            );
        }
        // A non-ASCII space is reported as whitespace.
        let (_, errors) = parse("user\u{a0}:<id>");
        assert!(errors[0].contains("whitespace"), "{errors:?}");
        // Every printable ASCII character but those is accepted.
        let accepted: String = ('!'..='~').filter(|c| !"%{}*?[]<>".contains(*c)).collect();
        let (_, errors) = parse(&accepted);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn self_is_parsed_so_the_validator_can_refuse_it() {
        let (parts, errors) = parse("<self.id>");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parts, ["value self . id"]);
    }

    #[test]
    fn literal_text_refuses_whitespace_and_redis_special_characters() {
        for c in ['{', '}', '*', '?', '[', ']'] {
            let (_, errors) = parse(&format!("user{c}:<id>"));
            assert_eq!(
                errors,
                [format!(
                    "the key can't contain `{c}`: `{{ }} * ? [ ]` are Redis hash-tag and pattern characters"
                )]
            );
        }
        let (_, errors) = parse("user <id>\t");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("whitespace (found ' ')"), "{errors:?}");
        assert!(errors[1].contains("whitespace (found '\\t')"), "{errors:?}");
    }

    #[test]
    fn malformed_placeholders() {
        let cases = [
            (
                "user:<>",
                "empty placeholder `<>` in the key; name a parameter, like `<id>`",
            ),
            ("user:<id", "unclosed placeholder `<id` in the key; add `>`"),
            ("user:id>", "`>` without a matching `<` in the key"),
            (
                "user:<1x>",
                "placeholder `<1x>` must start with a parameter name",
            ),
            (
                "user:<.id>",
                "placeholder `<.id>` must start with a parameter name",
            ),
            (
                "user:<type>",
                "placeholder `<type>` must start with a parameter name",
            ),
            (
                "user:<a..b>",
                "placeholder `<a..b>` has an empty field name",
            ),
            ("user:<a.>", "placeholder `<a.>` has an empty field name"),
            (
                "user:<a.b-c>",
                "placeholder `<a.b-c>`: `b-c` is not a field name",
            ),
            (
                "user:<a.01>",
                "placeholder `<a.01>`: `01` is not a field name",
            ),
            (
                "user:< id >",
                "placeholder `< id >` must start with a parameter name",
            ),
        ];
        for (template, expected) in cases {
            let (_, errors) = parse(template);
            assert_eq!(errors, [expected], "for {template}");
        }
    }

    #[test]
    fn an_unclosed_placeholder_does_not_swallow_the_next_one() {
        let (parts, errors) = parse("org:<org:user:<id>");
        assert_eq!(
            errors,
            ["unclosed placeholder `<org:user:` in the key; add `>`"]
        );
        assert_eq!(parts, ["text org:", "value id"]);
    }

    #[test]
    fn every_mistake_is_reported_once() {
        // A repeated bad character is one mistake.
        for (template, count) in [("a b:<>:<x:*", 3), ("a*b*c*<id>", 1)] {
            let (_, errors) = parse(template);
            assert_eq!(errors.len(), count, "{template}: {errors:?}");
        }
    }

    #[test]
    fn empty_template() {
        let (_, errors) = parse("");
        assert_eq!(
            errors,
            ["the key template is empty; write one such as `\"user:<id>\"`"]
        );
    }

    #[test]
    fn tag_templates_follow_the_same_rules_and_say_tag() {
        let (parts, errors) = parse_as("org:<org>", TemplateKind::Tag);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parts, ["text org:", "value org"]);
        let cases = [
            (
                "org:*",
                "the tag can't contain `*`: `{ } * ? [ ]` are Redis hash-tag and pattern characters",
            ),
            (
                "org <org>",
                "the tag can't contain whitespace (found ' '); tags are shown and matched by tools that split on it",
            ),
            (
                "org:<org",
                "unclosed placeholder `<org` in the tag; add `>`",
            ),
            ("org>", "`>` without a matching `<` in the tag"),
            (
                "org<org>",
                "placeholder `<org>` touches the text `org`, so a value's letters and digits would run into it; put a separator such as `:` between `org` and `<org>`: `\"org:<org>\"`",
            ),
            (
                "org:<org><team>",
                "placeholders `<org>` and `<team>` touch, so values such as (1, 23) and (12, 3) would render the same tag; put a separator such as `:` between `<org>` and `<team>`: `\"org:<org>:<team>\"`",
            ),
            (
                "org:100%",
                "the tag can't contain `%`: it is reserved for the escapes of placeholder values (a `:` in a value renders `%3A`)",
            ),
            (
                "org:<>",
                "empty placeholder `<>` in the tag; name a parameter, like `<id>`",
            ),
            (
                "",
                "the tag template is empty; write one such as `\"org:<org>\"`",
            ),
        ];
        for (template, expected) in cases {
            let (_, errors) = parse_as(template, TemplateKind::Tag);
            assert_eq!(errors, [expected], "for {template}");
        }
    }

    #[test]
    fn finds_where_the_value_starts_in_the_source() {
        let plain: LitStr = syn::parse_quote!("user:<id>");
        assert_eq!(SpanFinder::new(&plain).value_offset, Some(1));
        let raw: LitStr = syn::parse_quote!(r#"user:<id>"#);
        assert_eq!(SpanFinder::new(&raw).value_offset, Some(3));
        let escaped: LitStr = syn::parse_quote!("user\x3a<id>");
        assert_eq!(SpanFinder::new(&escaped).value_offset, None);
    }
}
