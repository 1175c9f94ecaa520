//! The value type's fingerprint, written in every entry's header
//! (`codec.rs`) so that an entry is only ever decoded as the type it was
//! written as.
//!
//! During a rolling deploy two releases share Redis, and the value type
//! behind a key may differ between them. bincode does not describe what it
//! writes, so without the fingerprint one release would decode the other's
//! bytes into its own shape without an error: a `u64` read as an `i64`, two
//! `String` fields swapped, a variant index that now names another variant.
//!
//! The fingerprint is a digest of the type's serde structure, traced by
//! `serde-reflection` from its `Deserialize` impl as a non-human-readable
//! format (as bincode is): for the type and every type it reaches, field
//! names and their order, every variant of every enum with its name,
//! position and contents (the tracer runs once per variant, see `explore`),
//! primitive kinds (`u64` is not `i64`), `Option`, sequences, maps, tuples
//! and their lengths, and unit, newtype and tuple structs. It is SHA-1 over
//! a canonical, length-prefixed rendering of that structure, so every
//! process and build computes the same one.
//!
//! The names of the types themselves are left out on purpose: bincode never
//! writes them, so a type renamed or moved to another module keeps reading
//! its entries as long as its structure is unchanged (two types of the same
//! structure under one key share entries), while any structural change
//! gives another fingerprint. The digest is conservative the other way
//! round: a change bincode would still read (a field wrapped in a newtype)
//! costs one miss per key.
//!
//! What it cannot see:
//!
//! - A change of meaning without a change of structure: an integer field now
//!   in milliseconds instead of seconds, a field reused for something else.
//! - What hand-written `Serialize`/`Deserialize` impls and
//!   `#[serde(with = ...)]` do with a value: the tracer sees what they call
//!   (a string, a `u64`), not what that means, so a changed conversion
//!   inside them keeps the fingerprint.
//! - Types it cannot trace: those that need `deserialize_any`
//!   (`serde_json::Value`, `#[serde(untagged)]`, `flatten`, internally
//!   tagged enums: bincode cannot decode them either), `Deserialize` impls
//!   that reject the tracer's made-up values (`NonZeroU64`, types parsed
//!   from a string such as timestamps or URLs), two different types of one
//!   name inside one value type (a generic type with two parameters,
//!   same-named types from two modules: the tracer keys types by name), and
//!   values nested more than 64 deep or recursing without end. For these
//!   the fingerprint falls back to a digest of the Rust type name, size and
//!   alignment (marked as such, so it never equals a traced one), which
//!   misses field-level changes that keep the layout; a warning says so
//!   once per type. Put a version in the key template
//!   (`key = "v2:user:<id>"`) whenever such a type changes.
//!
//! Tracing costs microseconds, so the fingerprint is computed once per type
//! and process; later calls read it from a map without taking a lock.
//!

mod explore;

use std::any::TypeId;
use std::collections::HashMap;
use std::panic::catch_unwind;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use serde::de::DeserializeOwned;
use serde_reflection::{ContainerFormat, Format, FormatHolder, Named, Registry, VariantFormat};

/// Fingerprint of a value type: the digest of its serde structure, or of its
/// Rust layout when the structure cannot be traced (see the module doc).
/// Computed once per type and process.
pub(crate) fn fingerprint<T: DeserializeOwned + 'static>() -> u64 {
    let type_id = TypeId::of::<T>();
    let known = FINGERPRINTS
        .load()
        .as_deref()
        .and_then(|known| known.get(&type_id).copied());
    known.unwrap_or_else(|| remember(type_id, compute_fingerprint::<T>))
}

type Fingerprints = HashMap<TypeId, u64, foldhash::fast::FixedState>;

/// The fingerprints computed so far. Read on every encode and decode and
/// written once per type, so readers take no lock (an `arc-swap` load) and
/// the rare writer copies the map.
static FINGERPRINTS: ArcSwapOption<Fingerprints> = ArcSwapOption::const_empty();

/// Held while a fingerprint is computed and stored: each type is traced,
/// and its fallback warned about, once.
static COMPUTING: Mutex<()> = Mutex::new(());

#[cold]
fn remember(type_id: TypeId, compute: fn() -> u64) -> u64 {
    let _one_at_a_time = COMPUTING.lock().unwrap_or_else(PoisonError::into_inner);
    let known = FINGERPRINTS.load_full();
    if let Some(&fingerprint) = known.as_deref().and_then(|known| known.get(&type_id)) {
        return fingerprint; // Computed by another thread while this one waited.
    }
    let fingerprint = compute();
    let mut updated = known.as_deref().cloned().unwrap_or_default();
    updated.insert(type_id, fingerprint);
    FINGERPRINTS.store(Some(Arc::new(updated)));
    fingerprint
}

/// What the two kinds of fingerprint digest first, so that a traced type
/// and an untraced one never share a fingerprint.
const STRUCTURE_DOMAIN: &str = "cache-runtime: serde structure, v1";
const LAYOUT_DOMAIN: &str = "cache-runtime: Rust type name and layout, v1";

/// `T`'s structure fingerprint, or its layout fingerprint and one warning
/// when the structure cannot be traced.
fn compute_fingerprint<T: DeserializeOwned + 'static>() -> u64 {
    // The tracer runs the type's own `Deserialize` on made-up values; a
    // hand-written one may panic on them, which must not reach the caller.
    let traced = catch_unwind(structure_fingerprint::<T>)
        .unwrap_or_else(|_| Err("its Deserialize impl panicked while traced".to_owned()));
    traced.unwrap_or_else(|reason| {
        tracing::warn!(
            value_type = std::any::type_name::<T>(),
            %reason,
            "cannot trace the serde structure of a cached value type: its entries in Redis are told \
             apart from other types' by type name and size only, so after a change to its fields or \
             variants two releases may misread each other's entries; put a version in the key \
             template (key = \"v2:...\") whenever this type changes"
        );
        layout_fingerprint::<T>()
    })
}

/// The digest of `T`'s serde structure, or why it cannot be traced.
fn structure_fingerprint<T: DeserializeOwned>() -> Result<u64, String> {
    let (mut root, registry) = explore::trace::<T>()?;
    root.normalize().map_err(|error| error.to_string())?;
    let mut rendering = Rendering {
        registry: &registry,
        reached: Vec::new(),
        digest: Digest::new(STRUCTURE_DOMAIN),
    };
    rendering.format(&root)?;
    Ok(rendering.digest.finish())
}

/// The fallback: the Rust type's name (with its module path; its exact
/// text may change with the compiler), size and alignment.
fn layout_fingerprint<T: 'static>() -> u64 {
    let mut digest = Digest::new(LAYOUT_DOMAIN);
    digest.text(std::any::type_name::<T>());
    digest.number(std::mem::size_of::<T>() as u64);
    digest.number(std::mem::align_of::<T>() as u64);
    digest.finish()
}

/// SHA-1 over length-prefixed texts and fixed-width numbers; the
/// fingerprint is its first 8 bytes.
struct Digest(sha1_smol::Sha1);

impl Digest {
    fn new(domain: &str) -> Digest {
        let mut digest = Digest(sha1_smol::Sha1::new());
        digest.text(domain);
        digest
    }

    fn text(&mut self, text: &str) {
        self.number(text.len() as u64);
        self.0.update(text.as_bytes());
    }

    fn number(&mut self, number: u64) {
        self.0.update(&number.to_be_bytes());
    }

    fn finish(self) -> u64 {
        let bytes = self.0.digest().bytes();
        u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
    }
}

/// Feeds a canonical rendering of a traced structure to a digest. Every
/// node starts with its kind, every text is length-prefixed and every list
/// count-prefixed, so two structures render alike only when they are
/// alike. Structs and enums are numbered in the order first reached rather
/// than named (names are left out, see the module doc); a type reached
/// again renders as its number, which also ends recursive types.
struct Rendering<'a> {
    registry: &'a Registry,
    /// Names of the structs and enums rendered so far, in that order.
    reached: Vec<&'a str>,
    digest: Digest,
}

/// `serde-reflection` resolves every placeholder of a complete trace.
const UNRESOLVED: &str = "the trace left a format unresolved";

impl<'a> Rendering<'a> {
    fn format(&mut self, format: &'a Format) -> Result<(), String> {
        match format {
            Format::Variable(_) => return Err(UNRESOLVED.to_owned()),
            Format::TypeName(name) => self.named_type(name)?,
            Format::Option(inner) => {
                self.digest.text("option");
                self.format(inner)?;
            }
            Format::Seq(item) => {
                self.digest.text("seq");
                self.format(item)?;
            }
            Format::Map { key, value } => {
                self.digest.text("map");
                self.format(key)?;
                self.format(value)?;
            }
            Format::Tuple(items) => {
                self.digest.text("tuple");
                self.formats(items)?;
            }
            Format::TupleArray { content, size } => {
                self.digest.text("array");
                self.digest.number(*size as u64);
                self.format(content)?;
            }
            Format::Unit => self.digest.text("unit"),
            Format::Bool => self.digest.text("bool"),
            Format::I8 => self.digest.text("i8"),
            Format::I16 => self.digest.text("i16"),
            Format::I32 => self.digest.text("i32"),
            Format::I64 => self.digest.text("i64"),
            Format::I128 => self.digest.text("i128"),
            Format::U8 => self.digest.text("u8"),
            Format::U16 => self.digest.text("u16"),
            Format::U32 => self.digest.text("u32"),
            Format::U64 => self.digest.text("u64"),
            Format::U128 => self.digest.text("u128"),
            Format::F32 => self.digest.text("f32"),
            Format::F64 => self.digest.text("f64"),
            Format::Char => self.digest.text("char"),
            Format::Str => self.digest.text("str"),
            Format::Bytes => self.digest.text("bytes"),
        }
        Ok(())
    }

    /// A struct or enum: its definition where first reached, its number
    /// after that.
    fn named_type(&mut self, name: &'a str) -> Result<(), String> {
        if let Some(number) = self.reached.iter().position(|reached| *reached == name) {
            self.digest.text("type");
            self.digest.number(number as u64);
            return Ok(());
        }
        let container = self
            .registry
            .get(name)
            .ok_or_else(|| format!("`{name}` was reached but not traced"))?;
        self.reached.push(name);
        match container {
            ContainerFormat::UnitStruct => self.digest.text("unit struct"),
            ContainerFormat::NewTypeStruct(inner) => {
                self.digest.text("newtype struct");
                self.format(inner)?;
            }
            ContainerFormat::TupleStruct(items) => {
                self.digest.text("tuple struct");
                self.formats(items)?;
            }
            ContainerFormat::Struct(fields) => {
                self.digest.text("struct");
                self.fields(fields)?;
            }
            ContainerFormat::Enum(variants) => {
                self.digest.text("enum");
                self.digest.number(variants.len() as u64);
                for (index, variant) in variants {
                    self.digest.number(u64::from(*index));
                    self.digest.text(&variant.name);
                    self.variant(&variant.value)?;
                }
            }
        }
        Ok(())
    }

    fn variant(&mut self, variant: &'a VariantFormat) -> Result<(), String> {
        match variant {
            VariantFormat::Variable(_) => return Err(UNRESOLVED.to_owned()),
            VariantFormat::Unit => self.digest.text("unit"),
            VariantFormat::NewType(inner) => {
                self.digest.text("newtype");
                self.format(inner)?;
            }
            VariantFormat::Tuple(items) => {
                self.digest.text("tuple");
                self.formats(items)?;
            }
            VariantFormat::Struct(fields) => {
                self.digest.text("struct");
                self.fields(fields)?;
            }
        }
        Ok(())
    }

    fn formats(&mut self, formats: &'a [Format]) -> Result<(), String> {
        self.digest.number(formats.len() as u64);
        formats.iter().try_for_each(|format| self.format(format))
    }

    fn fields(&mut self, fields: &'a [Named<Format>]) -> Result<(), String> {
        self.digest.number(fields.len() as u64);
        fields.iter().try_for_each(|field| {
            self.digest.text(&field.name);
            self.format(&field.value)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
    }

    /// The old and the new shape of a type, as two releases would define
    /// them: same names, one structural change each. Only ever traced, so
    /// their fields are never read.
    #[allow(dead_code)]
    mod before {
        use serde::Deserialize;

        #[derive(Deserialize)]
        pub enum Plan {
            Free,
            Pro,
        }

        #[derive(Deserialize)]
        pub enum Ordered {
            First,
            Second,
        }

        #[derive(Deserialize)]
        pub struct Name {
            pub first: String,
            pub last: String,
        }

        #[derive(Deserialize)]
        pub struct Score {
            pub points: u64,
        }

        #[derive(Deserialize)]
        pub struct Renamed {
            pub points: u64,
        }

        #[derive(Deserialize)]
        pub struct Nickname {
            pub nickname: String,
        }

        #[derive(Deserialize)]
        pub struct Roles {
            pub roles: Vec<Plan>,
            pub by_team: std::collections::BTreeMap<String, Option<Plan>>,
        }

        /// `Ordered` is reached only through a variant of another enum.
        #[derive(Deserialize)]
        pub enum Event {
            Started,
            Moved(Option<Box<Event>>, Ordered),
        }
    }

    #[allow(dead_code)]
    mod after {
        use serde::Deserialize;

        #[derive(Deserialize)]
        pub enum Plan {
            Free,
            Team,
            Pro,
        }

        #[derive(Deserialize)]
        pub enum Ordered {
            Second,
            First,
        }

        #[derive(Deserialize)]
        pub struct Name {
            pub last: String,
            pub first: String,
        }

        #[derive(Deserialize)]
        pub struct Score {
            pub points: i64,
        }

        #[derive(Deserialize)]
        pub struct Renamed {
            pub score: u64,
        }

        #[derive(Deserialize)]
        pub struct Nickname {
            pub nickname: Option<String>,
        }

        #[derive(Deserialize)]
        pub struct Roles {
            pub roles: Vec<Plan>,
            pub by_team: std::collections::BTreeMap<String, Option<Plan>>,
        }

        #[derive(Deserialize)]
        pub enum Event {
            Started,
            Moved(Option<Box<Event>>, Ordered),
        }
    }

    fn traced<T: DeserializeOwned>() -> u64 {
        structure_fingerprint::<T>().expect("traceable")
    }

    #[test]
    fn structural_changes_change_the_fingerprint() {
        let changes = [
            (
                "inserted variant",
                traced::<before::Plan>(),
                traced::<after::Plan>(),
            ),
            (
                "reordered variants",
                traced::<before::Ordered>(),
                traced::<after::Ordered>(),
            ),
            (
                "swapped fields",
                traced::<before::Name>(),
                traced::<after::Name>(),
            ),
            (
                "u64 to i64",
                traced::<before::Score>(),
                traced::<after::Score>(),
            ),
            (
                "renamed field",
                traced::<before::Renamed>(),
                traced::<after::Renamed>(),
            ),
            (
                "T to Option<T>",
                traced::<before::Nickname>(),
                traced::<after::Nickname>(),
            ),
            (
                "variant inserted in an enum inside a Vec and a map",
                traced::<before::Roles>(),
                traced::<after::Roles>(),
            ),
            (
                "variants reordered in an enum inside a variant",
                traced::<before::Event>(),
                traced::<after::Event>(),
            ),
            (
                "T to Option<T> at the top",
                traced::<u64>(),
                traced::<Option<u64>>(),
            ),
            (
                "Vec<T> to Vec<Vec<T>>",
                traced::<Vec<u8>>(),
                traced::<Vec<Vec<u8>>>(),
            ),
            (
                "tuple length",
                traced::<(u8, u8)>(),
                traced::<(u8, u8, u8)>(),
            ),
        ];
        for (change, old, new) in changes {
            assert_ne!(old, new, "{change} kept the fingerprint");
        }
    }

    #[test]
    fn the_same_structure_has_one_fingerprint() {
        assert_eq!(traced::<User>(), traced::<User>());
        assert_eq!(fingerprint::<User>(), traced::<User>());
        assert_eq!(fingerprint::<User>(), fingerprint::<User>());
        // Renaming or moving a type keeps its entries: bincode never writes
        // the type's name.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Account {
            id: u64,
            name: String,
            tags: Vec<String>,
        }
        assert_eq!(traced::<Account>(), traced::<User>());
    }

    /// Every process and build must compute the same fingerprint. A change
    /// here changes every type's: after deploying it, all entries read as
    /// another type's (misses, left in place until they expire).
    #[test]
    fn the_fingerprint_is_pinned() {
        assert_eq!(fingerprint::<User>(), 0xd745_e391_4942_57e6);
        assert_eq!(fingerprint::<String>(), 0xdde8_be53_9cd3_477a);
    }

    #[test]
    fn recursive_types_are_traced() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Tree {
            value: u8,
            children: Vec<Tree>,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum List {
            Empty,
            Cons(u8, Box<List>),
        }
        /// The recursive variants first.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum Expr {
            Add(Box<Expr>, Box<Expr>),
            Not(Box<Expr>),
            Literal(i64),
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum Ping {
            Pong(Box<Pong>),
            Stop,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum Pong {
            Ping(Box<Ping>),
            Stop,
        }
        let fingerprints = [
            traced::<Tree>(),
            traced::<List>(),
            traced::<Expr>(),
            traced::<Ping>(),
        ];
        for (index, fingerprint) in fingerprints.iter().enumerate() {
            assert!(!fingerprints[..index].contains(fingerprint));
        }
    }

    /// Untraceable types fall back to the layout fingerprint, without a
    /// panic (and, for types that recurse without end, without a stack
    /// overflow within the 2 MiB stack of a Tokio worker).
    #[test]
    fn untraceable_types_fall_back_to_their_layout() {
        #[derive(Deserialize)]
        #[serde(untagged)]
        #[allow(dead_code)]
        enum Untagged {
            Number(u64),
            Text(String),
        }
        /// No finite value: tracing it would recurse without end.
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct Endless {
            next: Box<Endless>,
        }
        #[derive(Deserialize)]
        #[allow(dead_code)]
        enum Cycle {
            Left(Box<Cycle>),
            Right(Box<Cycle>),
        }
        struct Panics;
        impl<'de> Deserialize<'de> for Panics {
            fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
                panic!("rejects every value (expected by this test)")
            }
        }
        fn falls_back<T: DeserializeOwned + 'static>() {
            let name = std::any::type_name::<T>();
            assert_eq!(fingerprint::<T>(), layout_fingerprint::<T>(), "{name}");
        }
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                falls_back::<serde_json::Value>();
                falls_back::<Untagged>();
                falls_back::<std::num::NonZeroU64>();
                falls_back::<Endless>();
                falls_back::<Cycle>();
                falls_back::<Panics>();
            })
            .unwrap()
            .join()
            .unwrap();
        assert_ne!(layout_fingerprint::<User>(), traced::<User>());
    }
}
