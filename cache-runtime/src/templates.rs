//! The key and tag templates seen in this process, and which pairs of them
//! could render the same key. Basics: no crate imports but `site`.
//!
//! One template renders one key only for one tuple of values (see `keys`),
//! but two different templates can render the same key: `user:<id>` with
//! `id = "me"` renders `user:me`, which is also what `user:me` renders, and
//! the two functions would then read each other's entries. The macro sees
//! one function at a time, so this is checked here, the first time each
//! `#[cached]` or `#[write_through]` site runs ([`TemplateCheck`]): its key
//! template is compared with every key template seen before, its tag
//! templates with every tag template, and each pair that could collide is
//! logged once, at error level, naming both templates and functions.
//!
//! # When two templates could collide
//!
//! A rendered value is made of letters, digits and `%` (every other byte is
//! escaped), and the macro only lets a placeholder touch a literal
//! character that is none of those, or an end of the template. So the
//! separators of a rendered key (its bytes other than letters, digits and
//! `%`) are exactly the template's literal separators, and splitting a
//! template at them gives *segments* that are each either literal letters
//! and digits (possibly none, as between `::`) or exactly one placeholder.
//! A literal segment renders as itself; a placeholder segment renders any
//! string of letters, digits and `%XX`, the empty string included (a value
//! whose `Display` is empty), hence also any literal segment. Two templates
//! therefore render a common key exactly when
//!
//! 1. they have the same separators in the same order, and
//! 2. wherever both have a literal segment at the same position, the two
//!    are equal.
//!
//! When, besides, they have a placeholder at the same positions (names
//! aside: `user:<id>` and `user:<user.id>`) they render the same set of
//! keys: that is the same key written twice (a `#[cached]` reader and its
//! `#[write_through]`), as intended, and is not reported. Every other pair
//! that satisfies 1 and 2 is reported: a placeholder of one faces literal
//! text of the other, and the value equal to that text renders the other's
//! key.
//!
//! The check sees only the sites that ran in this process, compares
//! templates regardless of the cache they use (two caches with different
//! namespaces never share keys, but are still compared), and costs one
//! relaxed atomic load per call after a site's first.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::site::Site;

/// Run by generated code on every call of a `#[cached]` or
/// `#[write_through]` function, from a `static` beside its [`Site`]: the
/// first call registers the site's templates and logs any overlap.
#[derive(Debug)]
pub struct TemplateCheck {
    done: AtomicBool,
}

impl TemplateCheck {
    /// Not yet run.
    pub const fn new() -> Self {
        TemplateCheck {
            done: AtomicBool::new(false),
        }
    }

    /// Registers `site`'s templates on its first call; after that, one
    /// relaxed load.
    #[inline]
    pub fn run(&self, site: &'static Site) {
        if !self.done.load(Ordering::Relaxed) {
            self.first_run(site);
        }
    }

    #[cold]
    fn first_run(&self, site: &'static Site) {
        if self.done.swap(true, Ordering::Relaxed) {
            return;
        }
        KEYS.register(Kind::Key, site.template, site.function);
        for tag in site.tag_templates {
            TAGS.register(Kind::Tag, tag, site.function);
        }
    }
}

impl Default for TemplateCheck {
    fn default() -> Self {
        Self::new()
    }
}

static KEYS: Registry = Registry::new();
static TAGS: Registry = Registry::new();

#[derive(Clone, Copy)]
enum Kind {
    Key,
    Tag,
}

/// The templates of one kind seen so far, each once.
struct Registry {
    seen: Mutex<Vec<Seen>>,
}

struct Seen {
    template: &'static str,
    function: &'static str,
    layout: Layout,
}

impl Registry {
    const fn new() -> Self {
        Registry {
            seen: Mutex::new(Vec::new()),
        }
    }

    /// Adds `template` unless it was seen, logging each earlier template it
    /// could collide with (returned, for tests).
    fn register(
        &self,
        kind: Kind,
        template: &'static str,
        function: &'static str,
    ) -> Vec<&'static str> {
        let layout = Layout::of(template);
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.iter().any(|seen| seen.template == template) {
            return Vec::new();
        }
        let mut reported = Vec::new();
        for other in seen.iter() {
            if let Some(example) = layout.collision_with(&other.layout) {
                report(kind, other, template, function, &example);
                reported.push(other.template);
            }
        }
        seen.push(Seen {
            template,
            function,
            layout,
        });
        reported
    }
}

fn report(kind: Kind, first: &Seen, template: &str, function: &str, example: &str) {
    match kind {
        Kind::Key => tracing::error!(
            template,
            function,
            other_template = first.template,
            other_function = first.function,
            "key templates `{}` (fn {}) and `{template}` (fn {function}) can render the same key (`{example}`), so one function could read the other's entries; make their literal text tell them apart (for example a different first segment)",
            first.template,
            first.function,
        ),
        Kind::Tag => tracing::error!(
            template,
            function,
            other_template = first.template,
            other_function = first.function,
            "tag templates `{}` (fn {}) and `{template}` (fn {function}) can render the same tag (`{example}`), so invalidating one drops entries tagged with the other; make their literal text tell them apart",
            first.template,
            first.function,
        ),
    }
}

/// A template split at its literal separators.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    /// One more than `separators`.
    segments: Vec<Segment>,
    separators: Vec<char>,
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    /// Literal letters and digits (possibly none).
    Text(String),
    /// A placeholder: any letters, digits and `%XX` escapes, or nothing.
    Value,
}

impl Layout {
    /// Splits a template the macro accepted. A segment holding a
    /// placeholder and text (which the macro refuses) counts as a
    /// placeholder, which can only report more pairs, never fewer.
    fn of(template: &str) -> Layout {
        let mut segments = Vec::new();
        let mut separators = Vec::new();
        let mut current = Segment::Text(String::new());
        let mut chars = template.chars();
        while let Some(c) = chars.next() {
            if c == '<' {
                for c in chars.by_ref() {
                    if c == '>' {
                        break;
                    }
                }
                current = Segment::Value;
            } else if c.is_ascii_alphanumeric() || c == '%' {
                if let Segment::Text(text) = &mut current {
                    text.push(c);
                }
            } else {
                segments.push(std::mem::replace(
                    &mut current,
                    Segment::Text(String::new()),
                ));
                separators.push(c);
            }
        }
        segments.push(current);
        Layout {
            segments,
            separators,
        }
    }

    /// Whether some rendering of `self` equals some rendering of `other`.
    fn overlaps(&self, other: &Layout) -> bool {
        self.separators == other.separators
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Text(a), Segment::Text(b)) => a == b,
                    _ => true,
                })
    }

    /// A key both render, when they overlap without being the same
    /// template written twice (placeholders at the same positions).
    fn collision_with(&self, other: &Layout) -> Option<String> {
        if self == other || !self.overlaps(other) {
            return None;
        }
        let mut example = String::new();
        for (index, pair) in self.segments.iter().zip(&other.segments).enumerate() {
            if index > 0 {
                example.push(self.separators[index - 1]);
            }
            match pair {
                (Segment::Text(text), _) | (_, Segment::Text(text)) => example.push_str(text),
                (Segment::Value, Segment::Value) => example.push('1'),
            }
        }
        Some(example)
    }
}

/// The overlap rule, for the property test of `keys`.
#[cfg(test)]
pub(crate) fn could_collide(a: &str, b: &str) -> Option<String> {
    Layout::of(a).collision_with(&Layout::of(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::SiteIndex;

    fn collide(a: &str, b: &str) -> Option<String> {
        let there = could_collide(a, b);
        assert_eq!(there, could_collide(b, a), "symmetric: {a} / {b}");
        there
    }

    #[test]
    fn splits_at_literal_separators() {
        assert_eq!(
            Layout::of("org:<org>:user:<user.id>.v2"),
            Layout {
                segments: vec![
                    Segment::Text("org".into()),
                    Segment::Value,
                    Segment::Text("user".into()),
                    Segment::Value,
                    Segment::Text("v2".into()),
                ],
                separators: vec![':', ':', ':', '.'],
            }
        );
        assert_eq!(
            Layout::of("::<a>"),
            Layout {
                segments: vec![
                    Segment::Text(String::new()),
                    Segment::Text(String::new()),
                    Segment::Value
                ],
                separators: vec![':', ':'],
            }
        );
    }

    #[test]
    fn a_placeholder_facing_literal_text_collides() {
        assert_eq!(collide("user:<id>", "user:me").as_deref(), Some("user:me"));
        assert_eq!(
            collide("org:<org>:user:<id>", "org:7:user:<id>").as_deref(),
            Some("org:7:user:1")
        );
        assert_eq!(
            collide("<a>:x", "y:<b>").as_deref(),
            Some("y:x"),
            "each faces the other's text"
        );
        // A value may render nothing: `user:` is `user:<id>` with id = "".
        assert_eq!(collide("user:<id>", "user:").as_deref(), Some("user:"));
        assert_eq!(collide("<a>", "me").as_deref(), Some("me"));
    }

    #[test]
    fn the_same_layout_is_the_same_key_written_twice() {
        assert_eq!(collide("user:<id>", "user:<id>"), None);
        assert_eq!(collide("user:<id>", "user:<user.id>"), None);
        assert_eq!(collide("hot", "hot"), None);
    }

    #[test]
    fn different_separators_or_texts_never_collide() {
        for (a, b) in [
            // The old collision: `.` is escaped in values now.
            ("avatar:<user>", "avatar:<user>.thumb"),
            ("user:<id>", "user:<id>:posts"),
            ("user:<id>", "users:<id>"),
            ("user:<id>", "user-<id>"),
            ("user:<id>", "<id>"),
            ("hot", "hot:<id>"),
            ("name:<name>", "name:<first>:<second>"),
            ("org:<org>:user:<id>", "team:<team>:user:<id>"),
            ("v1:user:<id>", "v2:user:<id>"),
            ("a.<x>", "a:<x>"),
        ] {
            assert_eq!(collide(a, b), None, "{a} / {b}");
        }
    }

    #[test]
    fn the_first_run_registers_once_and_later_runs_do_nothing() {
        static SITE: Site = Site {
            function: "registers_once",
            template: "templates-test:registers-once:<id>",
            ttl: std::time::Duration::from_secs(1),
            jitter: None,
            negative: None,
            l1: true,
            lock: false,
            early: None,
            stale: None,
            tag_templates: &["templates-test-tag:<id>"],
            index: SiteIndex::new(),
        };
        static CHECK: TemplateCheck = TemplateCheck::new();
        let count = |registry: &Registry, template: &str| {
            let seen = registry.seen.lock().unwrap();
            seen.iter().filter(|seen| seen.template == template).count()
        };
        for _ in 0..3 {
            CHECK.run(&SITE);
        }
        assert_eq!(count(&KEYS, SITE.template), 1);
        assert_eq!(count(&TAGS, SITE.tag_templates[0]), 1);
        // Another site with the same template is not registered twice.
        TAGS.register(Kind::Tag, "templates-test-tag:<id>", "other");
        assert_eq!(count(&TAGS, SITE.tag_templates[0]), 1);
    }

    #[test]
    fn each_colliding_pair_is_reported_once_when_the_second_registers() {
        let registry = Registry::new();
        let register = |template, function| registry.register(Kind::Key, template, function);
        assert!(register("user:<id>", "get_user").is_empty());
        assert!(register("user:<user.id>", "save_user").is_empty());
        assert!(register("user:<id>:posts", "posts").is_empty());
        assert_eq!(
            register("user:me", "get_me"),
            ["user:<id>", "user:<user.id>"]
        );
        // Seen already: nothing new to report.
        assert!(register("user:me", "get_me_again").is_empty());
        assert!(register("user:<id>", "get_user_again").is_empty());
        assert_eq!(register("user:7:posts", "posts_of_7"), ["user:<id>:posts"]);
    }
}
