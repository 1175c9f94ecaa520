//! Rules that span the attribute's options and the function they decorate,
//! turning [`Args`](crate::args::Args) plus the function into a plan (see
//! `plan.rs`) that `expand.rs` only has to write out.
//!
//! One front for what the attributes share, one back end per attribute:
//!
//! - `front.rs` checks the function (`async`, the receiver) and the shared
//!   options (`key`, `tags` / `tag`, `ttl`, `jitter`, `stale`, `cache`,
//!   `crate`), whichever the attribute accepts;
//! - `cached.rs`, `invalidates.rs`, `write_through.rs` and
//!   `write_behind.rs` check the return type and their own options, and
//!   build their plan (`batch.rs` checks `#[cached]`'s `batch(id in ids)`);
//! - `parameters.rs` and `types.rs` read the signature for both.
//!
//! Every mistake is reported in one build, in a fixed order ([`Stage`]), so
//! each check can run where its inputs are ready.

mod batch;
mod cached;
mod front;
mod invalidates;
mod parameters;
mod types;
mod write_behind;
mod write_through;

use std::collections::BTreeMap;

use syn::ItemFn;

use crate::args::{Args, MacroKind};
use crate::errors::Errors;
use crate::plan::Plan;
use front::Front;

/// Checks every rule of the attribute `kind`, reporting all violations
/// (after `errors`, which holds the parse errors). Returns the plan only
/// when there are no errors at all.
pub(crate) fn validate(
    kind: MacroKind,
    args: Args,
    function: &ItemFn,
    errors: Errors,
) -> syn::Result<Plan> {
    let mut report = Report::new(errors);
    let front = Front::check(kind, &args, &function.attrs, &function.sig, &mut report);
    let plan = match kind {
        MacroKind::Cached => cached::plan(&args, front, &mut report).map(Plan::Cached),
        MacroKind::Invalidates => Some(Plan::Invalidates(invalidates::plan(front))),
        MacroKind::WriteThrough => {
            write_through::plan(&args, front, &mut report).map(Plan::WriteThrough)
        }
        MacroKind::WriteBehind => {
            write_behind::plan(&args, &function.attrs, front, &mut report).map(Plan::WriteBehind)
        }
    };
    report.finish(plan)
}

/// The order in which an attribute's mistakes are reported: how it was
/// written, then the function, then the key and the options as the docs
/// list them, then which parameters the key uses, then the tags. A check
/// pushes its errors under its stage, wherever it runs; within a stage they
/// keep the order they were found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Errors found while parsing the attribute's arguments.
    Syntax,
    /// `async`, the receiver.
    Signature,
    Return,
    /// Each key template (and whether one is given).
    Key,
    Ttl,
    Jitter,
    Negative,
    Early,
    Stale,
    /// `#[cached]`'s `batch(id in ids)`: its parameter, its element's name,
    /// and the options it can't be combined with.
    Batch,
    /// `#[write_behind]`'s `value` and `queue`.
    Value,
    /// What running the body in the background needs of the parameters.
    Background,
    /// Which parameters the key uses: its placeholders, `skip`, every
    /// parameter keyed.
    Parameters,
    /// Each tag template.
    Tags,
}

/// Every mistake found in one attribute, by stage.
struct Report {
    stages: BTreeMap<Stage, Errors>,
}

impl Report {
    /// A report holding the errors already found while parsing the arguments.
    fn new(syntax: Errors) -> Self {
        Report {
            stages: BTreeMap::from([(Stage::Syntax, syntax)]),
        }
    }

    /// Where the checks of `stage` push their errors.
    fn stage(&mut self, stage: Stage) -> &mut Errors {
        self.stages.entry(stage).or_default()
    }

    /// Every error, in stage order; or, when there is none, the plan. A part
    /// of the plan can only be missing because of a mistake reported here.
    fn finish(self, plan: Option<Plan>) -> syn::Result<Plan> {
        let mut errors = Errors::new();
        for stage in self.stages.into_values() {
            errors.append(stage);
        }
        errors.into_result()?;
        Ok(plan.expect("a missing part is always reported"))
    }
}

/// Runs each attribute's parsing and validation on tokens, returning the
/// plan or the messages in the order they are reported.
#[cfg(test)]
mod testing {
    use std::fmt::Display;

    use proc_macro2::TokenStream;
    use syn::ItemFn;

    use crate::args::{MacroKind, parse_args};
    use crate::errors::Errors;
    use crate::key::KeyTemplate;
    use crate::plan::{CachedPlan, InvalidatesPlan, Plan, WriteBehindPlan, WriteThroughPlan};

    pub(super) type Outcome<T> = Result<T, Vec<String>>;

    fn run(kind: MacroKind, args: TokenStream, function: TokenStream) -> Outcome<Plan> {
        let mut errors = Errors::new();
        let args = parse_args(kind, args, &mut errors);
        let function: ItemFn = syn::parse2(function).expect("test function parses");
        super::validate(kind, args, &function, errors)
            .map_err(|error| error.into_iter().map(|error| error.to_string()).collect())
    }

    /// `cached(args, function)`, `invalidates(..)`, `write_through(..)`,
    /// `write_behind(..)`: the plan of one attribute, or its messages.
    macro_rules! attribute {
        ($name:ident, $kind:ident, $plan:ty) => {
            pub(in crate::validate) fn $name(
                args: TokenStream,
                function: TokenStream,
            ) -> Outcome<$plan> {
                run(MacroKind::$kind, args, function).map(|plan| match plan {
                    Plan::$kind(plan) => plan,
                    _ => unreachable!("`validate` plans the attribute it is given"),
                })
            }
        };
    }
    attribute!(cached, Cached, CachedPlan);
    attribute!(invalidates, Invalidates, InvalidatesPlan);
    attribute!(write_through, WriteThrough, WriteThroughPlan);
    attribute!(write_behind, WriteBehind, WriteBehindPlan);

    /// The plan, or a panic listing the errors.
    pub(super) fn planned<T>(outcome: Outcome<T>) -> T {
        outcome.unwrap_or_else(|errors| panic!("{errors:?}"))
    }

    /// The messages; none when the attribute is valid.
    pub(super) fn errors_in<T>(outcome: Outcome<T>) -> Vec<String> {
        outcome.err().unwrap_or_default()
    }

    /// `#[cached]`'s messages.
    pub(super) fn errors_of(args: TokenStream, function: TokenStream) -> Vec<String> {
        errors_in(cached(args, function))
    }

    /// Asserts that `errors` is one message, starting with `start`.
    pub(super) fn assert_one(errors: &[String], start: &str, case: impl Display) {
        let [error] = errors else {
            panic!("{case}: one error expected, got {errors:#?}");
        };
        assert!(error.starts_with(start), "{case}: {error}");
    }

    pub(super) fn written(templates: &[KeyTemplate]) -> Vec<&str> {
        templates
            .iter()
            .map(|template| template.written.as_str())
            .collect()
    }
}
