//! What the benches share (each bench is a binary of this package, listed
//! in `Cargo.toml`): quick mode, reading criterion's medians back,
//! percentiles, the many-task throughput runner, a counting global
//! allocator, every contender's function ([`contenders`]) and the key
//! patterns `hits` and `throughput` read ([`keys`]). The cached
//! value, [`User`], and the `redis-server` the benches start come from
//! `cache-test-support`, shared with the integration tests.

pub mod contenders;
pub mod keys;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use cache_test_support::{User, user};

/// `BENCH_QUICK=1` (any value but empty or `0`): very short measurements,
/// to smoke-test a full pass; the numbers are then not worth reading.
pub fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some_and(|value| !value.is_empty() && value != "0")
}

/// Whether the bench runs as a test rather than to measure: criterion's own
/// rule (test mode unless cargo passed `--bench`, or `--test` was passed
/// too), so `cargo test --benches` (`./scripts/test`, a debug build that
/// checks every path runs) gets `true` for the benches without criterion
/// as well.
pub fn test_mode() -> bool {
    let flag = |wanted: &str| std::env::args().skip(1).any(|arg| arg == wanted);
    !flag("--bench") || flag("--test")
}

/// Criterion's base settings: in quick mode, no plots (drawing them takes
/// longer than the measurements).
pub fn criterion() -> criterion::Criterion {
    let criterion = criterion::Criterion::default();
    if quick() {
        criterion.without_plots()
    } else {
        criterion
    }
}

/// Warm-up, measurement time and sample count for a group: `normal` in a
/// real run, a fraction of a second in quick mode (`hits` has over
/// forty benchmarks, and its quick pass is half of `scripts/bench-check`'s
/// minute).
pub fn timing(
    warm_up: Duration,
    measurement: Duration,
    samples: usize,
) -> (Duration, Duration, usize) {
    if quick() {
        (Duration::from_millis(100), Duration::from_millis(300), 10)
    } else {
        (warm_up, measurement, samples)
    }
}

/// Where criterion writes its results, resolved as criterion does:
/// `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, cargo's target
/// directory, `./target/criterion`.
pub fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let from_metadata = std::env::var_os("CARGO").and_then(|cargo| {
        let output = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        Some(PathBuf::from(metadata.get("target_directory")?.as_str()?))
    });
    from_metadata.map_or_else(
        || PathBuf::from("target/criterion"),
        |target| target.join("criterion"),
    )
}

/// The median (ns) criterion recorded for `id` in this run, if it ran.
pub fn median_ns(home: &Path, id: &str, started: SystemTime) -> Option<f64> {
    let path = home.join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path)
        .and_then(|meta| meta.modified())
        .ok()?;
    if modified < started {
        return None; // Left over from an earlier run (filtered out of this one).
    }
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    estimates.get("median")?.get("point_estimate")?.as_f64()
}

/// Nearest-rank percentile (`p` in 0..=1) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// `median (min–max)` of `values`, with `decimals` digits.
pub fn summary(values: &[f64], decimals: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.decimals$} ({min:.decimals$}–{max:.decimals$})",
        median(values)
    )
}

/// A duration in ns, printed in ns below 1 µs and in µs above.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1_000.0 {
        format!("{:>9.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:>9.1} ns")
    }
}

/// The median of per-call CPU times in whole nanoseconds, or `–` when none
/// was measured (the throughput tables of `throughput` and `cluster`).
pub fn median_ns_or_dash(values: &[f64]) -> String {
    if values.is_empty() {
        "–".to_owned()
    } else {
        format!("{:.0} ns", median(values))
    }
}

/// Builds a cache on the bench redis-server and checks it connected: a
/// bench whose cache silently ran in-process would measure something else.
pub async fn connected(builder: cache_runtime::CacheBuilder) -> cache_runtime::Cache {
    let cache = builder.build().await.expect("valid configuration");
    assert!(
        cache.is_l2_connected(),
        "connected to the bench redis-server"
    );
    cache
}

/// A Tokio multi-thread runtime with `workers` worker threads.
pub fn multi_thread_runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A Tokio current-thread runtime (single-task latency).
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How many calls a [`run_tasks`] task makes between two yields.
pub const YIELD_EVERY: u64 = 16;

/// What [`run_tasks`] measured.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Calls completed by all tasks together.
    pub calls: u64,
    /// From the moment every task was released to the moment the last one
    /// returned (it finishes the call it was in when told to stop).
    pub elapsed: Duration,
    /// CPU time this process's threads used meanwhile (all of them, the
    /// runtime's workers included), when the kernel reports it.
    pub cpu: Option<Duration>,
}

impl Throughput {
    /// Calls per second.
    pub fn per_second(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU time of this process per call, in ns.
    pub fn cpu_ns_per_call(&self) -> Option<f64> {
        Some(self.cpu?.as_nanos() as f64 / self.calls as f64)
    }

    /// The two columns every throughput table prints for one contender's
    /// rounds: calls per second ([`summary`]: median, min–max) and the
    /// median CPU time of this process per call (a dash when the kernel
    /// reported none).
    pub fn rate_and_cpu(runs: &[Throughput]) -> (String, String) {
        let rates: Vec<f64> = runs.iter().map(Throughput::per_second).collect();
        let cpu: Vec<f64> = runs
            .iter()
            .filter_map(Throughput::cpu_ns_per_call)
            .collect();
        (summary(&rates, 0), median_ns_or_dash(&cpu))
    }
}

/// CPU time used so far by the threads of process `pid` (`"self"` for
/// this one) that are alive now: the sum of the first field of each
/// `/proc/<pid>/task/<tid>/schedstat` (ns on CPU). `None` off Linux.
pub fn cpu_time(pid: &str) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // The thread ended meanwhile.
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// The pid of the redis-server listening on `port` (it shows as
/// `redis-server 127.0.0.1:<port>` in `/proc/<pid>/cmdline`).
pub fn redis_server_pid(port: u16) -> Option<String> {
    let wanted = format!("127.0.0.1:{port}");
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid = entry.file_name().into_string().ok()?;
        pid.parse::<u32>().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("redis-server") && cmdline.contains(&wanted)).then_some(pid)
    })
}

/// Runs `tasks` Tokio tasks on the current runtime, all released at once by
/// a barrier, each calling `call(task, i)` for i = 0, 1, 2, ... in a loop
/// until `duration` has passed; counts the calls.
///
/// The stop flag is one relaxed atomic load per call, the same for every
/// contender, set by a plain thread (a call that never waits, such as an
/// in-process hit, never lets a busy worker drive the runtime's timers).
/// Each task yields to the scheduler after every [`YIELD_EVERY`] calls, so
/// that all tasks take turns even when no call ever waits (as requests
/// would, between them). `call` gets the task's index and its own call
/// count, from which it derives the key it reads.
pub async fn run_tasks<F, Fut>(tasks: usize, duration: Duration, call: F) -> Throughput
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let (call, stop, barrier) = (call.clone(), stop.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                call(task, done).await;
                done += 1;
                if done.is_multiple_of(YIELD_EVERY) {
                    tokio::task::yield_now().await;
                }
            }
            done
        }));
    }
    barrier.wait().await;
    let cpu_before = cpu_time("self");
    let start = Instant::now();
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut calls = 0;
    for handle in handles {
        calls += handle.await.expect("a throughput task panicked");
    }
    stopper.join().expect("the stopping thread");
    let elapsed = start.elapsed();
    let cpu = cpu_before
        .zip(cpu_time("self"))
        .map(|(before, after)| after.saturating_sub(before));
    Throughput {
        calls,
        elapsed,
        cpu,
    }
}

/// A global allocator that counts what passes through it (then lets the
/// system allocator do the work). A bench binary opts in with
/// `#[global_allocator] static ALLOC: cache_benches::CountingAlloc = cache_benches::CountingAlloc;`;
/// the other benches compile this type but do not use it.
///
/// Counters are process-wide relaxed atomics. Bytes are the sizes requested
/// by callers, not what the system allocator rounds them up to (glibc
/// malloc adds about 8–16 bytes of header and rounding per block).
pub struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static DEALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES_ALLOCATED: AtomicU64 = AtomicU64::new(0);
static BYTES_FREED: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Record a backtrace of every allocation this thread makes.
    static TRACING: Cell<bool> = const { Cell::new(false) };
    /// Inside the tracing hook: its own allocations are neither counted nor traced.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Backtraces recorded while tracing: (bytes requested, backtrace).
static TRACES: Mutex<Vec<(usize, std::backtrace::Backtrace)>> = Mutex::new(Vec::new());

impl CountingAlloc {
    /// Counts one allocation of `size` bytes, unless it comes from the
    /// tracing hook; records its backtrace when this thread is tracing.
    #[inline]
    fn counted(size: usize) -> bool {
        if IN_HOOK.try_with(Cell::get).unwrap_or(true) {
            return false;
        }
        BYTES_ALLOCATED.fetch_add(size as u64, Ordering::Relaxed);
        if TRACING.try_with(Cell::get).unwrap_or(false) {
            IN_HOOK.with(|hook| hook.set(true));
            let trace = std::backtrace::Backtrace::force_capture();
            TRACES
                .lock()
                .unwrap_or_else(|poison| poison.into_inner())
                .push((size, trace));
            IN_HOOK.with(|hook| hook.set(false));
        }
        true
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the counting around it touches only atomics and thread-locals.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::counted(layout.size()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::counted(layout.size()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !IN_HOOK.try_with(Cell::get).unwrap_or(true) {
            DEALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES_FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::counted(new_size) {
            REALLOCS.fetch_add(1, Ordering::Relaxed);
            BYTES_FREED.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// The allocator's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllocCounts {
    /// `alloc` + `alloc_zeroed` calls.
    pub allocs: u64,
    /// `realloc` calls (a block grown or shrunk).
    pub reallocs: u64,
    /// `dealloc` calls.
    pub deallocs: u64,
    /// Bytes requested by `alloc`, `alloc_zeroed` and `realloc` (new size).
    pub allocated: u64,
    /// Bytes given back by `dealloc` and `realloc` (old size).
    pub freed: u64,
}

impl AllocCounts {
    /// The counters now.
    pub fn now() -> AllocCounts {
        AllocCounts {
            allocs: ALLOCS.load(Ordering::Relaxed),
            reallocs: REALLOCS.load(Ordering::Relaxed),
            deallocs: DEALLOCS.load(Ordering::Relaxed),
            allocated: BYTES_ALLOCATED.load(Ordering::Relaxed),
            freed: BYTES_FREED.load(Ordering::Relaxed),
        }
    }

    /// What happened between `self` (earlier) and `later`.
    pub fn until(&self, later: &AllocCounts) -> AllocCounts {
        AllocCounts {
            allocs: later.allocs - self.allocs,
            reallocs: later.reallocs - self.reallocs,
            deallocs: later.deallocs - self.deallocs,
            allocated: later.allocated - self.allocated,
            freed: later.freed - self.freed,
        }
    }

    /// Bytes still held: allocated minus freed (of a delta: the growth).
    pub fn live_bytes(&self) -> i64 {
        self.allocated as i64 - self.freed as i64
    }

    /// Blocks still held: allocations minus deallocations.
    pub fn live_blocks(&self) -> i64 {
        self.allocs as i64 - self.deallocs as i64
    }
}

/// Runs `f` with every allocation of this thread recorded, and returns
/// the allocations' sizes and call stacks: one line per allocation, the
/// first `frames` frames above the allocator, `a <- b <- c`, innermost first.
/// Needs `CountingAlloc` installed as the global allocator.
pub fn trace_allocations<R>(frames: usize, f: impl FnOnce() -> R) -> (R, Vec<String>) {
    TRACES
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .clear();
    TRACING.with(|tracing| tracing.set(true));
    let result = f();
    TRACING.with(|tracing| tracing.set(false));
    let traces = std::mem::take(&mut *TRACES.lock().unwrap_or_else(|poison| poison.into_inner()));
    let lines = traces
        .into_iter()
        .map(|(size, trace)| format!("{size:>5} B  {}", call_sites(&trace, frames)))
        .collect();
    (result, lines)
}

/// The first `frames` function names of a backtrace above the allocator
/// itself (the hook, `__rust_alloc`, `alloc::alloc`, `RawVec` growth).
fn call_sites(trace: &std::backtrace::Backtrace, frames: usize) -> String {
    let text = trace.to_string();
    let names = text.lines().filter_map(|line| {
        let (number, name) = line.trim_start().split_once(": ")?;
        number.parse::<u32>().ok()?;
        Some(name.trim())
    });
    let skip = |name: &str| {
        name.starts_with("std::backtrace")
            || name.contains("CountingAlloc")
            || name.contains("cache_benches::trace_allocations")
            || name.starts_with("__rust")
            || name.starts_with("__rdl")
            || name.starts_with("alloc::alloc::")
            || name.starts_with("alloc::raw_vec::")
            || name.starts_with("<alloc::alloc::Global")
            || name.starts_with("std::sys::")
    };
    names
        .skip_while(|name| skip(name))
        .take(frames)
        .map(|name| {
            // Drop the trailing hash (`::h0123abcd...`) rustc appends.
            match name.rfind("::h") {
                Some(at) if name.len() - at == 19 => &name[..at],
                _ => name,
            }
        })
        .collect::<Vec<_>>()
        .join(" <- ")
}

/// Prints one same-run ratio as the line `scripts/bench-check` reads:
/// `ratio <name> <value>`, the name free of spaces (`hits/l1_hit/one_key/ours_vs_cached_crate`).
/// BENCHMARKS.md records the same names with their last recorded value.
pub fn print_check_ratio(name: &str, ratio: f64) {
    debug_assert!(
        !name.contains(char::is_whitespace),
        "a ratio name has no spaces"
    );
    println!("ratio {name} {ratio:.3}");
}
