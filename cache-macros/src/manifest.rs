//! Whether the crate being compiled depends on `cache-runtime` under
//! another name, read from its `Cargo.toml` by `proc-macro-crate`.
//!
//! Generated code reaches the runtime as `::cache_runtime` unless the
//! attribute says `crate = "..."`. With the dependency renamed in
//! `Cargo.toml` (`cache = { package = "cache-runtime", .. }`), that path does
//! not resolve, and rustc reports "cannot find `cache_runtime`" at every
//! use, with nothing saying why. Knowing the rename lets the macro report
//! it once, on the attribute, with the `crate = "..."` to write.
//!
//! Best effort, never an obstacle: a manifest that can't be read means "no
//! rename found", and the build goes on as before.

use proc_macro_crate::{FoundCrate, crate_name};

/// The runtime's crate name (its package is `cache-runtime`), which
/// generated code uses.
const RUNTIME_CRATE: &str = "cache_runtime";

/// The name under which the crate being compiled depends on
/// `cache-runtime`, when that is not `cache_runtime`.
pub(crate) fn renamed_runtime() -> Option<String> {
    match crate_name("cache-runtime") {
        Ok(FoundCrate::Name(name)) if name != RUNTIME_CRATE => Some(name),
        // The runtime itself (its doc tests name it `cache_runtime`), the
        // usual name, or a manifest that could not be read.
        _ => None,
    }
}
