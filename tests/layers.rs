//! The runtime's layers (the map at the top of `cache-runtime/src/lib.rs`):
//! every `crate::<module>` a runtime module names, its unit tests included,
//! is in its own layer or a lower one, and no modules name each other in a
//! circle. Read from the source text, so a new import that points up fails
//! here, with the module and the line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, lowest first, as in lib.rs's map.
const LAYERS: &[&[&str]] = &[
    // basics: no crate imports (`templates` uses `site`)
    &[
        "clock",
        "value",
        "site",
        "epochs",
        "consistency",
        "shape",
        "error",
        "logging",
        "keys",
        "templates",
        "fingerprint",
    ],
    // parts
    &[
        "metrics",
        "stats",
        "background",
        "codec",
        "l1",
        "breaker",
        "nodes",
        "topology",
        "l2",
        "config",
    ],
    // shared state
    &["store", "tags", "flight"],
    // features
    &["invalidation", "lock", "refresh", "recovery", "queue"],
    // composition: the handle type and its engine
    &["engine"],
    // over the engine
    &["write", "prefix", "subscription", "load"],
    // batch loads (over `load`'s steps)
    &["batch"],
    // the engine without the attribute (over `load` and `write`), and
    // write-behind: queueing a write (over `write`), then the worker
    &["direct", "write_behind"],
    &["worker"],
    // the handle's public API
    &["cache"],
    // optional, over the public API
    &["http"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The `crate::<module>` names in a file's code (comments left out), with
/// the line each first appears on.
fn imports(source: &str) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    for (number, line) in source.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let rest = &line[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `crate::Cache` and the like are re-exports at the root.
            if !name.is_empty() && !name.starts_with("__") {
                found.entry(name).or_insert(number + 1);
            }
        }
    }
    found
}

#[test]
fn runtime_imports_point_down_the_layers_and_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("cache-runtime/src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let module = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if module == "lib" {
            continue; // The root declares and re-exports every module.
        }
        let Some(own) = layer_of(&module) else {
            problems.push(format!(
                "{module}.rs is in no layer: add it to lib.rs's map and to LAYERS here"
            ));
            continue;
        };
        let source = std::fs::read_to_string(&path).unwrap();
        for (import, line) in imports(&source) {
            match layer_of(&import) {
                None => problems.push(format!(
                    "{module}.rs:{line} names crate::{import}, in no layer"
                )),
                Some(theirs) if theirs > own => problems.push(format!(
                    "{module}.rs:{line} names crate::{import}, a higher layer ({theirs} > {own})"
                )),
                Some(_) => {}
            }
            if import != module {
                graph.entry(module.clone()).or_default().insert(import);
            }
        }
    }
    // Circles: a depth-first search that meets a module still on its path.
    fn visit(
        module: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| m == module) {
            circles.push(format!("{} -> {module}", path[at..].join(" -> ")));
            return;
        }
        path.push(module.to_owned());
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done, circles);
        }
        path.pop();
        done.insert(module.to_owned());
    }
    let mut done = BTreeSet::new();
    let mut circles = Vec::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    problems.extend(
        circles
            .into_iter()
            .map(|circle| format!("import circle: {circle}")),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_sees_imports_tests_included_and_skips_comments() {
    let source = "use crate::store::Store;\n// crate::cache in a comment\n\
                  fn f() { crate::stats::bump(x); crate::Cache::global(); }\n\
                  #[cfg(test)]\nmod tests { use crate::load; }\n";
    let found = imports(source);
    assert_eq!(
        found.keys().map(String::as_str).collect::<Vec<_>>(),
        ["load", "stats", "store"]
    );
}
