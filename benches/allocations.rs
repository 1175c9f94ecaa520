//! Allocations per call and memory held per L1 entry, counted by a global
//! allocator that wraps the system one (`cache_benches::CountingAlloc`).
//!
//! Part 1, allocations per call. Every contender of `hits` runs on a
//! current-thread Tokio runtime (so the Redis connections' driver tasks run
//! on this thread too, and their allocations count): after warm-up calls,
//! the bench counts the allocator calls (`alloc` + `realloc`) and bytes
//! requested during a run of calls, divided by the number of calls. Every
//! call returns a `User` (cloned out of a cache, decoded from Redis, or built
//! by the body), which is 5 allocations (two `String`s, the `Vec` and its two
//! `String`s); the `user_clone` row measures a clone alone, and "beyond the
//! returned `User`'s 5" is what a call allocates on top.
//!
//! Part 2, memory held per entry. For each structure: live bytes (requested
//! and not yet freed) before building it, after building it empty, and after
//! inserting N entries `user:<id>` -> a `User` of ~100 heap bytes through the
//! API a user would call (ours: the `#[cached]` function, which loads each
//! id). Each structure is built with room for N entries. Per entry:
//! (full - before) / entries held, the part added by the inserts alone
//! ((full - empty) / entries held), and what is held beyond the value
//! itself (a `User`, measured as `N` of them in a `Vec`).
//!
//! `ALLOC_TRACE=1` also prints, for one call of each contender, the call
//! stack of every allocation it makes (function names only; inlined frames
//! are folded into their caller unless the bench is built with debug info,
//! e.g. `CARGO_PROFILE_BENCH_DEBUG=line-tables-only`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cache_benches::contenders::{
    Contenders, body, cached_crate_get_user, cached_crate_redis_get_user, fresh, moka_get_user,
    moka_sync_get_user, ours_get_user, ours_get_user_global, ours_get_user_l2, ours_miss,
    quick_cache_get_user, redis_get_user,
};
use cache_benches::{AllocCounts, CountingAlloc, User, trace_allocations, user};
use cache_runtime::{BreakerState, Cache};
use cache_test_support::RedisServer;

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

const ID: u64 = 42;
/// Entries held in part 2.
const ENTRIES: u64 = 10_000;
/// Ids of part 2 start here: six digits for every one of them, so every
/// `User` has the same size (`name` 19 bytes, `email` 30).
const FIRST_ID: u64 = 100_000;

/// Subjects of part 1. Each call returns a `User` (cloned out of a cache,
/// decoded, or built by the body): 5 allocations of its own.
const SUBJECTS: [&str; 13] = [
    "user_clone",
    "ours/l1_hit",
    "ours/l1_hit_global",
    "raw/moka_future_get_clone",
    "raw/moka_sync_get_clone",
    "raw/quick_cache_get_clone",
    "cached_crate/inmem_hit",
    "ours/l2_hit",
    "raw/redis_get_decode",
    "cached_crate/redis_hit",
    "raw/body",
    "ours/miss_load",
    "ours/redis_down",
];

/// Calls subject `$id` `$calls` times.
macro_rules! call_subject {
    ($id:expr, $c:expr, $calls:expr) => {{
        let c: &Contenders = $c;
        let template: &User = &c.template;
        for _ in 0..$calls {
            match $id {
                "user_clone" => drop(black_box(black_box(template).clone())),
                "ours/l1_hit" => drop(black_box(ours_get_user(&c.cache, black_box(ID)).await)),
                "ours/l1_hit_global" => drop(black_box(ours_get_user_global(black_box(ID)).await)),
                "raw/moka_future_get_clone" => {
                    drop(black_box(moka_get_user(&c.moka, black_box(ID)).await))
                }
                "raw/moka_sync_get_clone" => drop(black_box(
                    moka_sync_get_user(&c.moka_sync, black_box(ID)).await,
                )),
                "raw/quick_cache_get_clone" => drop(black_box(
                    quick_cache_get_user(&c.quick, black_box(ID)).await,
                )),
                "cached_crate/inmem_hit" => {
                    drop(black_box(cached_crate_get_user(black_box(ID)).await))
                }
                "ours/l2_hit" => drop(black_box(ours_get_user_l2(&c.cache, black_box(ID)).await)),
                "raw/redis_get_decode" => drop(black_box(
                    redis_get_user(&c.connection, black_box(ID)).await,
                )),
                "cached_crate/redis_hit" => drop(black_box(
                    cached_crate_redis_get_user(&c.redis_store, black_box(ID)).await,
                )),
                "raw/body" => drop(black_box(body(fresh()).await)),
                "ours/miss_load" => drop(black_box(ours_miss(&c.local, fresh()).await)),
                "ours/redis_down" => {
                    drop(black_box(ours_get_user_l2(&c.down, black_box(ID)).await))
                }
                other => unreachable!("no subject {other}"),
            }
        }
    }};
}

fn main() {
    let quick = cache_benches::quick();
    let trace = std::env::var_os("ALLOC_TRACE").is_some_and(|v| !v.is_empty() && v != "0");
    let runtime = cache_benches::current_thread_runtime();
    let server = RedisServer::start();
    let mut down_server = RedisServer::start();
    let c = runtime.block_on(setup(&server.url(), &down_server.url()));
    down_server.kill();
    runtime.block_on(async {
        while c.down.stats().breaker != BreakerState::Open {
            ours_get_user_l2(&c.down, ID).await;
        }
    });

    // Part 1.
    let (hits, redis) = if quick { (2_000, 200) } else { (20_000, 2_000) };
    println!("Allocations per call (allocator calls and bytes requested, per call):\n");
    println!("| id | calls | allocations | beyond the returned `User`'s 5 | bytes |");
    println!("|---|--:|--:|--:|--:|");
    let before = (c.cache.stats(), c.local.stats(), c.down.stats());
    for id in SUBJECTS {
        let calls: u32 = if id.contains("redis") || id.contains("l2") {
            redis
        } else {
            hits
        };
        let counts = runtime.block_on(async {
            call_subject!(id, &c, calls / 10); // warm
            let start = AllocCounts::now();
            call_subject!(id, &c, calls);
            start.until(&AllocCounts::now())
        });
        let per_call = (counts.allocs + counts.reallocs) as f64 / f64::from(calls);
        println!(
            "| `{id}` | {calls} | {per_call:.2} | {:.2} | {:.1} |",
            per_call - 5.0,
            counts.allocated as f64 / f64::from(calls)
        );
    }
    let after = (c.cache.stats(), c.local.stats(), c.down.stats());
    println!(
        "\nTier check: main cache {} loads, {} L2 errors during part 1; in-process cache {} loads; \
         Redis-down cache breaker {:?}, {} L2 skipped, {} loads",
        after.0.loads - before.0.loads,
        after.0.l2_errors - before.0.l2_errors,
        after.1.loads - before.1.loads,
        after.2.breaker,
        after.2.l2_skipped - before.2.l2_skipped,
        after.2.loads - before.2.loads,
    );

    if trace {
        println!("\nAllocation call stacks of one call (innermost frame first):");
        for id in SUBJECTS {
            let ((), lines) =
                trace_allocations(6, || runtime.block_on(async { call_subject!(id, &c, 1) }));
            println!("\n{id}: {} allocations", lines.len());
            for line in lines {
                println!("  {line}");
            }
        }
    }
    drop(c);
    drop(server);

    // Part 2.
    println!(
        "\nMemory held per entry, {ENTRIES} entries of `User` (bytes requested from the allocator):\n"
    );
    memory(&runtime);
}

async fn setup(url: &str, down_url: &str) -> Contenders {
    let contenders = Contenders::set_up("allocations", url, down_url, ID).await;
    contenders.fill_raw(ID).await;
    let expected = Some(user(ID));
    let cache = &contenders.cache;
    assert_eq!(ours_get_user(cache, ID).await, expected); // loads: L1 and L2
    assert_eq!(ours_get_user(cache, ID).await, expected);
    assert_eq!(cached_crate_get_user(ID).await, expected); // loads
    for id in SUBJECTS {
        call_subject!(id, &contenders, 1);
    }
    contenders
}

#[cache_runtime::cached(key = "mem:<id>", ttl = 3600, cache = cache, skip(cache))]
async fn ours_mem(cache: &Cache, id: u64) -> Option<User> {
    Some(user(id))
}

// `max_size` makes it an `LruTtlCache`, the sized store with a TTL.
#[cached::proc_macro::cached(max_size = 10_000, ttl_secs = 3600, companions = false)]
async fn cached_crate_mem(id: u64) -> Option<User> {
    Some(user(id))
}

/// One structure's figures: live bytes and blocks at each step.
struct Held {
    name: &'static str,
    entries: u64,
    /// Live bytes added by building it empty (`None`: built on first use).
    empty: Option<i64>,
    /// Live bytes added by building it and inserting.
    full: i64,
    /// Live blocks added by building it and inserting.
    blocks: i64,
}

fn memory(runtime: &tokio::runtime::Runtime) {
    let n = ENTRIES;
    let ids = FIRST_ID..FIRST_ID + n;
    let mut rows = Vec::new();

    // The values alone.
    let mut users = Vec::with_capacity(n as usize);
    let start = AllocCounts::now();
    users.extend(ids.clone().map(user));
    let added = start.until(&AllocCounts::now());
    drop(users);
    let value = added.live_bytes() as f64 / n as f64;
    let value_inline = std::mem::size_of::<User>() as f64;
    let value_total = value + value_inline;
    println!(
        "A `User` here is {value_inline} bytes inline and {value:.1} bytes on the heap in {:.2} \
         blocks: {value_total:.1} bytes.\n",
        added.live_blocks() as f64 / n as f64
    );

    // Ours: the `#[cached]` function on an in-process cache with room for N.
    {
        let start = AllocCounts::now();
        let cache = runtime.block_on(
            Cache::builder()
                .namespace("memory")
                .l1_capacity(n as usize)
                .l1_max_ttl(Duration::from_secs(3600))
                .build(),
        );
        let cache = cache.expect("valid configuration");
        let empty = start.until(&AllocCounts::now()).live_bytes();
        runtime.block_on(async {
            for id in ids.clone() {
                black_box(ours_mem(&cache, id).await);
            }
        });
        let full = start.until(&AllocCounts::now());
        rows.push(Held {
            name: "ours (`#[cached]`, L1 only)",
            entries: cache.stats().l1_entries,
            empty: Some(empty),
            full: full.live_bytes(),
            blocks: full.live_blocks(),
        });
        drop(cache);
    }

    // moka future, with a TTL (as ours has).
    {
        let start = AllocCounts::now();
        let moka = moka::future::Cache::<String, Arc<User>>::builder()
            .max_capacity(n)
            .time_to_live(Duration::from_secs(3600))
            .build();
        let empty = start.until(&AllocCounts::now()).live_bytes();
        let entries = runtime.block_on(async {
            for id in ids.clone() {
                moka.insert(format!("user:{id}"), Arc::new(user(id))).await;
            }
            moka.run_pending_tasks().await;
            moka.entry_count()
        });
        let full = start.until(&AllocCounts::now());
        rows.push(Held {
            name: "moka `future::Cache<String, Arc<User>>`, TTL",
            entries,
            empty: Some(empty),
            full: full.live_bytes(),
            blocks: full.live_blocks(),
        });
        drop(moka);
    }

    // moka sync, with a TTL.
    {
        let start = AllocCounts::now();
        let moka = moka::sync::Cache::<String, Arc<User>>::builder()
            .max_capacity(n)
            .time_to_live(Duration::from_secs(3600))
            .build();
        let empty = start.until(&AllocCounts::now()).live_bytes();
        for id in ids.clone() {
            moka.insert(format!("user:{id}"), Arc::new(user(id)));
        }
        moka.run_pending_tasks();
        let entries = moka.entry_count();
        let full = start.until(&AllocCounts::now());
        rows.push(Held {
            name: "moka `sync::Cache<String, Arc<User>>`, TTL",
            entries,
            empty: Some(empty),
            full: full.live_bytes(),
            blocks: full.live_blocks(),
        });
        drop(moka);
    }

    // quick_cache, bare.
    {
        let start = AllocCounts::now();
        let quick = quick_cache::sync::Cache::<String, Arc<User>>::new(n as usize);
        let empty = start.until(&AllocCounts::now()).live_bytes();
        for id in ids.clone() {
            quick.insert(format!("user:{id}"), Arc::new(user(id)));
        }
        let entries = quick.len() as u64;
        let full = start.until(&AllocCounts::now());
        rows.push(Held {
            name: "quick_cache `sync::Cache<String, Arc<User>>`",
            entries,
            empty: Some(empty),
            full: full.live_bytes(),
            blocks: full.live_blocks(),
        });
        drop(quick);
    }

    // The cached crate's sized TTL store, through its macro (keyed by the
    // `u64` argument; its static is built on the first call).
    {
        let start = AllocCounts::now();
        runtime.block_on(async {
            for id in ids.clone() {
                black_box(cached_crate_mem(id).await);
            }
        });
        let entries = runtime
            .block_on(async { cached::Cached::cache_size(&*CACHED_CRATE_MEM.read().await) as u64 });
        let full = start.until(&AllocCounts::now());
        rows.push(Held {
            name: "cached crate `#[cached(max_size, ttl_secs)]` (`LruTtlCache<u64, User>`)",
            entries,
            empty: None,
            full: full.live_bytes(),
            blocks: full.live_blocks(),
        });
    }

    println!(
        "| structure | entries held | built empty | per entry, total | per entry, inserts only | per entry beyond the `User` | blocks per entry |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|");
    for row in rows {
        let per_entry = row.full as f64 / row.entries as f64;
        let inserts = row.empty.map_or("–".to_owned(), |empty| {
            format!("{:.0}", (row.full - empty) as f64 / row.entries as f64)
        });
        println!(
            "| {} | {} | {} | {per_entry:.0} | {inserts} | {:.0} | {:.2} |",
            row.name,
            row.entries,
            row.empty.map_or("–".to_owned(), |empty| empty.to_string()),
            per_entry - value_total,
            row.blocks as f64 / row.entries as f64,
        );
    }
}
