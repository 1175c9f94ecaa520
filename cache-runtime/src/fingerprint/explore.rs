//! Traces a type with `serde-reflection`, one pass per enum variant to
//! explore.
//!
//! `serde-reflection` explores one variant of an enum per pass. Its own
//! loop repeats passes only for an enum at the top; an enum further down (a
//! field, a `Vec` item) keeps the one variant it was traced with, and later
//! passes of the same tracer cut `Option`s, sequences and maps whose format
//! is known short, so they never reach the enums inside. Here every pass
//! runs a fresh tracer over the whole type and steers each enum it reaches:
//! the enum's visitor is told the variant to explore, whichever the tracer
//! picked, and the tracer records what follows as its own pick, the only
//! variant of that enum it records in the pass. [`Exploration`] chooses:
//! the lowest variant not explored yet, or one that leads to an enum with
//! such variants. A later reach of an enum in the same pass (recursion) is
//! steered to a variant not being built already, so recursive enums end.
//!
//! Every deserializer, visitor, seed and access the tracer hands the traced
//! type's impls is wrapped ([`Tracked`]) so that these choices can be made,
//! and so that a pass gives up past [`MAX_TRACE_DEPTH`] nested values:
//! a type that recurses without end would otherwise overflow the stack,
//! which aborts the process.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, Error as _, MapAccess,
    SeqAccess, Visitor,
};
use serde_reflection::{
    ContainerFormat, Format, FormatHolder, Named, Registry, Samples, Tracer, TracerConfig,
    VariantFormat,
};

/// How many values deep a pass goes before it gives up. Real value
/// types nest far less; the limit keeps the tracer's recursion well
/// within a 2 MiB thread stack (a Tokio worker's).
const MAX_TRACE_DEPTH: usize = 64;

/// How many passes a type may take: one per variant of its enums, and
/// a few more to reach variants inside others.
const MAX_PASSES: usize = 1024;

/// `T`'s format and the formats of the structs and enums it reaches,
/// every variant of every enum included.
pub(super) fn trace<T: DeserializeOwned>() -> Result<(Format, Registry), String> {
    let exploration = RefCell::new(Exploration::default());
    let samples = Samples::new();
    let mut root = None;
    for _ in 0..MAX_PASSES {
        // bincode is not human-readable: trace what `Deserialize` does
        // for it.
        let mut tracer = Tracer::new(TracerConfig::default().is_human_readable(false));
        let level = Level {
            depth: 0,
            exploration: &exploration,
        };
        let (format, _value) = tracer
            .trace_type_once_with_seed(&samples, level.wrap(PhantomData::<T>))
            .map_err(|error| error.to_string())?;
        let root = root.get_or_insert(format);
        let mut found = exploration.borrow_mut();
        let explored_before = found.explored;
        found.end_pass(tracer.registry_unchecked())?;
        if found.is_complete() {
            let registry = std::mem::take(&mut *found).into_registry();
            return Ok((root.clone(), registry));
        }
        if found.explored == explored_before {
            return Err("some enum variants cannot be reached".to_owned());
        }
    }
    Err(format!(
        "its enums have more variants than {MAX_PASSES} passes explore"
    ))
}

/// What the passes found so far, and the choices of the current one.
#[derive(Default)]
struct Exploration {
    /// Every enum reached, by name.
    enums: BTreeMap<&'static str, Variants>,
    /// Every other named type reached (structs), as traced.
    others: Registry,
    /// The enums reached in this pass, and the variant each was first
    /// steered to: the one the tracer records.
    first_reached: BTreeMap<&'static str, usize>,
    /// The variants being built now, innermost last.
    in_progress: Vec<(&'static str, usize)>,
    /// How many variants have been explored, all enums together.
    explored: usize,
}

/// An enum's variants, as its `Deserialize` names them (in declaration
/// order), and the format of each explored one.
struct Variants {
    names: &'static [&'static str],
    formats: Vec<Option<VariantFormat>>,
}

impl Exploration {
    /// Chooses the variant of enum `name` that a reach of it builds,
    /// and marks it in progress until [`leave`](Self::leave).
    fn enter(
        &mut self,
        name: &'static str,
        names: &'static [&'static str],
    ) -> Result<&'static str, String> {
        if names.is_empty() {
            return Err(format!("enum `{name}` has no variant to deserialize"));
        }
        let variants = self.enums.entry(name).or_insert_with(|| Variants {
            names,
            formats: vec![None; names.len()],
        });
        if variants.names != names {
            return Err(format!("two different enums are named `{name}`"));
        }
        let chosen = if self.first_reached.contains_key(name) {
            self.base_case(name)
        } else {
            let chosen = self.enums[name]
                .formats
                .iter()
                .position(Option::is_none)
                .or_else(|| self.route(name))
                .unwrap_or(0);
            self.first_reached.insert(name, chosen);
            chosen
        };
        self.in_progress.push((name, chosen));
        Ok(names[chosen])
    }

    fn leave(&mut self) {
        self.in_progress.pop();
    }

    /// For a reach inside a variant of the same enum: the lowest
    /// variant known to hold no named type (so it ends), else the
    /// lowest not being built already.
    fn base_case(&self, name: &str) -> usize {
        let formats = &self.enums[name].formats;
        let in_progress = |index: usize| self.in_progress.contains(&(name, index));
        let holds_no_named_type = |index: usize| {
            formats[index]
                .as_ref()
                .is_some_and(|format| named_types(format).is_empty())
        };
        (0..formats.len())
            .filter(|&index| !in_progress(index))
            .min_by_key(|&index| (!holds_no_named_type(index), index))
            .unwrap_or(0)
    }

    /// The lowest explored variant of enum `name` that leads to an
    /// enum with a variant not explored yet.
    fn route(&self, name: &str) -> Option<usize> {
        self.enums[name].formats.iter().position(|format| {
            format
                .as_ref()
                .is_some_and(|format| self.leads_to_unexplored(format))
        })
    }

    fn leads_to_unexplored(&self, start: &VariantFormat) -> bool {
        let mut queue = named_types(start);
        let mut visited = Vec::new();
        while let Some(name) = queue.pop() {
            if visited.contains(&name) {
                continue;
            }
            if let Some(variants) = self.enums.get(name.as_str()) {
                if variants.formats.iter().any(Option::is_none) {
                    return true;
                }
                queue.extend(variants.formats.iter().flatten().flat_map(named_types));
            } else if let Some(container) = self.others.get(&name) {
                queue.extend(named_types(container));
            }
            visited.push(name);
        }
        false
    }

    /// Takes what the tracer recorded in a pass.
    fn end_pass(&mut self, registry: Registry) -> Result<(), String> {
        for (name, chosen) in std::mem::take(&mut self.first_reached) {
            let recorded = match registry.get(name) {
                Some(ContainerFormat::Enum(recorded)) if recorded.len() == 1 => recorded,
                _ => return Err(format!("enum `{name}` was not traced as expected")),
            };
            let format = &mut self.enums.get_mut(name).expect("entered").formats[chosen];
            if format.is_none() {
                *format = recorded.values().next().map(|named| named.value.clone());
                self.explored += 1;
            }
        }
        for (name, container) in registry {
            if !self.enums.contains_key(name.as_str()) {
                self.others.entry(name).or_insert(container);
            }
        }
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.enums
            .values()
            .all(|variants| variants.formats.iter().all(Option::is_some))
    }

    /// Every type reached, each enum with all its variants, numbered in
    /// declaration order.
    fn into_registry(self) -> Registry {
        let mut registry = self.others;
        for (name, variants) in self.enums {
            let numbered = variants.names.iter().zip(variants.formats).zip(0u32..).map(
                |((name, format), index)| {
                    let value = format.expect("complete");
                    let name = (*name).to_owned();
                    (index, Named { name, value })
                },
            );
            registry.insert(name.to_owned(), ContainerFormat::Enum(numbered.collect()));
        }
        registry
    }
}

/// The names of the structs and enums `holder` refers to.
fn named_types(holder: &impl FormatHolder) -> Vec<String> {
    let mut names = Vec::new();
    // An unresolved format refers to nothing known: ignored.
    let _ = holder.visit(&mut |format| {
        if let Format::TypeName(name) = format {
            names.push(name.clone());
        }
        Ok(())
    });
    names
}

/// Where a wrapped deserializer, visitor, seed or access is: how many
/// values down, in which exploration.
#[derive(Clone, Copy)]
struct Level<'a> {
    depth: usize,
    exploration: &'a RefCell<Exploration>,
}

impl<'a> Level<'a> {
    fn wrap<T>(self, inner: T) -> Tracked<'a, T> {
        Tracked { inner, level: self }
    }

    fn deeper(self) -> Level<'a> {
        Level {
            depth: self.depth + 1,
            ..self
        }
    }
}

/// A deserializer, visitor, seed or access the tracer hands the traced
/// type's impls, or they hand the tracer.
struct Tracked<'a, T> {
    inner: T,
    level: Level<'a>,
}

/// An enum's visitor, then its access: the visitor is told `variant`,
/// whichever variant the tracer picked.
struct Steered<'a, T> {
    inner: T,
    level: Level<'a>,
    variant: &'static str,
}

/// The seed of an enum's variant name, given `variant` instead of the
/// tracer's pick.
struct Renamed<S> {
    seed: S,
    variant: &'static str,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Tracked<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner
            .deserialize(self.level.deeper().wrap(deserializer))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Renamed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, _picked: D) -> Result<S::Value, D::Error> {
        self.seed
            .deserialize(BorrowedStrDeserializer::new(self.variant))
    }
}

impl<'de, D: Deserializer<'de>> Tracked<'_, D> {
    fn check_depth(&self) -> Result<(), D::Error> {
        if self.level.depth > MAX_TRACE_DEPTH {
            return Err(D::Error::custom(format_args!(
                "values nest more than {MAX_TRACE_DEPTH} deep (a type that recurses without end?)"
            )));
        }
        Ok(())
    }
}

macro_rules! forward_deserialize {
    ($($method:ident($($arg:ident: $type:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $type,)* visitor: V) -> Result<V::Value, D::Error> {
            self.check_depth()?;
            self.inner.$method($($arg,)* self.level.wrap(visitor))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Tracked<'_, D> {
    type Error = D::Error;

    forward_deserialize! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.check_depth()?;
        let level = self.level;
        let variant = level
            .exploration
            .borrow_mut()
            .enter(name, variants)
            .map_err(D::Error::custom)?;
        let steered = Steered {
            inner: visitor,
            level,
            variant,
        };
        let built = self.inner.deserialize_enum(name, variants, steered);
        level.exploration.borrow_mut().leave();
        built
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($type:ty);)*) => {$(
        fn $method<E: de::Error>(self, value: $type) -> Result<V::Value, E> {
            self.inner.$method(value)
        }
    )*};
}

/// `visit_enum` is not forwarded: the tracer calls it only from
/// `deserialize_enum`, whose visitor is [`Steered`].
impl<'de, V: Visitor<'de>> Visitor<'de> for Tracked<'_, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    forward_visit! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_some(self.level.deeper().wrap(deserializer))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(self.level.deeper().wrap(deserializer))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(self.level.wrap(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(self.level.wrap(map))
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Steered<'_, V> {
    type Value = V::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(formatter)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Steered {
            inner: data,
            level: self.level,
            variant: self.variant,
        })
    }
}

impl<'a, 'de, A: EnumAccess<'de>> EnumAccess<'de> for Steered<'a, A> {
    type Error = A::Error;
    type Variant = Tracked<'a, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let renamed = Renamed {
            seed,
            variant: self.variant,
        };
        let (value, variant) = self.inner.variant_seed(renamed)?;
        Ok((value, self.level.wrap(variant)))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Tracked<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.inner.next_element_seed(self.level.wrap(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Tracked<'_, A> {
    type Error = A::Error;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        self.inner.next_key_seed(self.level.wrap(seed))
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(self.level.wrap(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Tracked<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.newtype_variant_seed(self.level.wrap(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(len, self.level.wrap(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(fields, self.level.wrap(visitor))
    }
}
