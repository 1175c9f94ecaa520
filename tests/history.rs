//! A history check (issue 12, part 6): three `Cache` instances ("three
//! processes") on one real redis-server and one namespace, many tokio tasks
//! each, run reads, invalidations, write-throughs and tag drops
//! concurrently against a model database whose every write takes the next
//! value of one global version counter. Every operation is logged with
//! ticks of one logical clock (a `SeqCst` counter: a tick taken after a call
//! returned is smaller than a tick taken before another call started only
//! if the first call returned before the second started), and the history
//! is checked at the end:
//!
//! a read that started after a mutation of its key (or of a row of its
//! group) returned never returns a version older than that mutation.
//!
//! Which mutations a read must see:
//!
//! - functions with `l1 = false` read Redis on every call: every mutation,
//!   from any instance, that returned before the read started;
//! - functions with L1: every mutation made through the reading instance
//!   (its own L1 was dropped or rewritten before the call returned), and
//!   another instance's mutation once it returned more than [`PUBSUB_LAG`]
//!   before the read started (L1 copies elsewhere are dropped "within one
//!   pub/sub delivery"; reads inside that window are counted and reported,
//!   not failed).
//!
//! One exception, which no cache can order without the database's
//! versions: two write-throughs (or a write-through and an invalidation)
//! of one key that overlap. If write-through `W` committed `v` before
//! mutation `M` committed `f > v`, but `W` returned after `M` committed,
//! `W`'s cache write may legitimately land last ("the last completed
//! mutation wins"), so `v` may be served after `M` returned. A version that
//! was not written through, or whose write-through returned before `M`
//! committed, has no excuse.
//!
//! `HISTORY_SEED=<n>` replays one seed's choices of operations (the
//! interleaving itself is up to the scheduler); `HISTORY_OPS=<n>` changes
//! the number of operations (default 20,000).

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached, invalidates, write_through};
use cache_test_support::{RedisServer, subscribed};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Rows `1..=ROWS`, in groups of `GROUP_SIZE` (`1..=3`, `4..=6`, `7..=8`).
const ROWS: u64 = 8;
const GROUP_SIZE: u64 = 3;
const GROUPS: u64 = ROWS.div_ceil(GROUP_SIZE);
/// Rows that do not exist at the start (negative caching).
const INITIALLY_ABSENT: [u64; 2] = [7, 8];
const INSTANCES: usize = 3;
const TASKS_PER_INSTANCE: usize = 4;
const DEFAULT_OPS: usize = 20_000;
/// How long after another instance's mutation returned a copy in this
/// instance's L1 may still be served: "within one pub/sub delivery", with a
/// wide margin for a debug build sharing two cores with redis-server.
const PUBSUB_LAG: Duration = Duration::from_millis(500);
/// The whole run, as a guard against a hang (it takes seconds): this much,
/// plus a millisecond per operation.
const RUN_LIMIT: Duration = Duration::from_secs(120);

fn group_of(id: u64) -> u64 {
    (id - 1) / GROUP_SIZE
}

fn rows_of(group: u64) -> std::ops::RangeInclusive<u64> {
    (group * GROUP_SIZE + 1)..=((group + 1) * GROUP_SIZE).min(ROWS)
}

// ---------------------------------------------------------------------------
// The model database and the log of mutations.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Row {
    id: u64,
    version: u64,
    payload: String,
}

/// A group's value: its own version (moved on by `touch`) and the version
/// of each of its rows (absent rows too: a delete has a version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    group: u64,
    meta: u64,
    rows: Vec<(u64, u64, bool)>,
}

#[derive(Debug, Clone, Copy)]
struct RowState {
    version: u64,
    exists: bool,
}

struct Db {
    /// The last version handed out; each write takes the next one.
    version: u64,
    rows: BTreeMap<u64, RowState>,
    meta: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum MutKind {
    /// `#[invalidates(key = "row:<id>", tag = "grp:<g>")]` around an upsert.
    Update,
    /// An upsert, then `Cache::invalidate` and `Cache::invalidate_tag`.
    UpdateRaw,
    /// `#[invalidates(key = "row:<id>", tag = "grp:<g>")]` around a delete.
    Delete,
    /// `#[write_through(key = "row:<id>")]` returning the upserted row, then
    /// `Cache::invalidate_tag` (a write-through tags nothing away).
    Save,
    /// `#[invalidates(tag = "grp:<g>")]` around a change of the group's own
    /// version.
    Touch,
}

#[derive(Debug, Clone, Copy)]
struct Done {
    tick: u64,
    at: Instant,
}

#[derive(Debug, Clone)]
struct Mutation {
    kind: MutKind,
    instance: usize,
    /// The row (the group for `Touch`).
    target: u64,
    start: u64,
    /// The version the write took, and the tick it committed at (under the
    /// database's lock).
    version: u64,
    commit: u64,
    /// When the call that made the change reach the row's key returned
    /// (`None`: it reported a failure, or does not touch the key).
    key_done: Option<Done>,
    /// When the call that dropped the group's tag returned.
    tag_done: Option<Done>,
}

/// What every instance shares: the database, the clock, the log.
struct World {
    clock: AtomicU64,
    db: Mutex<Db>,
    mutations: Mutex<Vec<Mutation>>,
    /// Calls to `Cache::invalidate` / `invalidate_tag` that returned `Err`.
    failed_invalidations: AtomicU64,
}

enum Change {
    Upsert(u64),
    Delete(u64),
    Touch(u64),
}

impl World {
    fn new() -> World {
        let rows = (1..=ROWS)
            .map(|id| {
                let exists = !INITIALLY_ABSENT.contains(&id);
                (id, RowState { version: 0, exists })
            })
            .collect();
        World {
            clock: AtomicU64::new(1),
            db: Mutex::new(Db {
                version: 0,
                rows,
                meta: (0..GROUPS).map(|group| (group, 0)).collect(),
            }),
            mutations: Mutex::new(Vec::new()),
            failed_invalidations: AtomicU64::new(0),
        }
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn read_row(&self, id: u64) -> Option<Row> {
        let db = self.db.lock().unwrap();
        let state = db.rows[&id];
        state.exists.then(|| row(id, state.version))
    }

    fn read_group(&self, group: u64) -> Group {
        let db = self.db.lock().unwrap();
        Group {
            group,
            meta: db.meta[&group],
            rows: rows_of(group)
                .map(|id| {
                    let state = db.rows[&id];
                    (id, state.version, state.exists)
                })
                .collect(),
        }
    }

    /// Logs the start of a mutation; returns its index.
    fn begin(&self, kind: MutKind, instance: usize, target: u64) -> usize {
        let start = self.tick();
        let mut mutations = self.mutations.lock().unwrap();
        mutations.push(Mutation {
            kind,
            instance,
            target,
            start,
            version: 0,
            commit: 0,
            key_done: None,
            tag_done: None,
        });
        mutations.len() - 1
    }

    /// The database write of mutation `op`: takes the next version.
    fn commit(&self, op: usize, change: Change) -> u64 {
        let mut db = self.db.lock().unwrap();
        db.version += 1;
        let version = db.version;
        match change {
            Change::Upsert(id) => {
                db.rows.insert(
                    id,
                    RowState {
                        version,
                        exists: true,
                    },
                );
            }
            Change::Delete(id) => {
                db.rows.insert(
                    id,
                    RowState {
                        version,
                        exists: false,
                    },
                );
            }
            Change::Touch(group) => {
                db.meta.insert(group, version);
            }
        }
        let commit = self.tick();
        let mut mutations = self.mutations.lock().unwrap();
        mutations[op].version = version;
        mutations[op].commit = commit;
        version
    }

    fn done(&self) -> Done {
        Done {
            tick: self.tick(),
            at: Instant::now(),
        }
    }

    fn key_done(&self, op: usize, done: Done) {
        self.mutations.lock().unwrap()[op].key_done = Some(done);
    }

    fn tag_done(&self, op: usize, done: Done) {
        self.mutations.lock().unwrap()[op].tag_done = Some(done);
    }
}

fn row(id: u64, version: u64) -> Row {
    Row {
        id,
        version,
        payload: format!("row {id} at version {version}"),
    }
}

/// A pause inside a body, to widen the windows between a database access
/// and the cache work that follows it.
#[derive(Debug, Clone, Copy)]
enum Pause {
    No,
    Yield,
    Sleep(u64),
}

impl Pause {
    fn draw(rng: &mut StdRng) -> Pause {
        match rng.random_range(0..10) {
            0..=6 => Pause::No,
            7 | 8 => Pause::Yield,
            _ => Pause::Sleep(rng.random_range(1..=3)),
        }
    }

    async fn run(self) {
        match self {
            Pause::No => {}
            Pause::Yield => tokio::task::yield_now().await,
            Pause::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }
}

tokio::task_local! {
    /// Set by a read body that runs in the calling task: the value returned
    /// was read from the database during this call.
    static LOADED_HERE: Cell<bool>;
}

fn mark_loaded() {
    let _ = LOADED_HERE.try_with(|loaded| loaded.set(true));
}

// ---------------------------------------------------------------------------
// One instance ("process"): its own cache, the shared world.

#[derive(Clone)]
struct Repo {
    cache: Cache,
    world: Arc<World>,
}

impl Repo {
    #[cached(key = "row:<id>", ttl = 60, negative = 60, lock, cache = self.cache, skip(pause))]
    async fn row(&self, id: u64, pause: Pause) -> Option<Row> {
        let row = self.world.read_row(id);
        mark_loaded();
        pause.run().await;
        row
    }

    /// The same entries, read from Redis on every call.
    #[cached(key = "row:<id>", ttl = 60, negative = 60, lock, l1 = false, cache = self.cache, skip(pause))]
    async fn row_l2(&self, id: u64, pause: Pause) -> Option<Row> {
        let row = self.world.read_row(id);
        mark_loaded();
        pause.run().await;
        row
    }

    /// Short-lived, refreshed early and served stale: background refreshes
    /// run all the time.
    #[cached(key = "grp:<group>", ttl = 1, jitter = 0.5, early, stale = 30, tags = ["grp:<group>"], cache = self.cache, skip(pause))]
    async fn group(&self, group: u64, pause: Pause) -> Group {
        let value = self.world.read_group(group);
        mark_loaded();
        pause.run().await;
        value
    }

    #[cached(key = "grp2:<group>", ttl = 60, l1 = false, tags = ["grp:<group>"], cache = self.cache, skip(pause))]
    async fn group_l2(&self, group: u64, pause: Pause) -> Group {
        let value = self.world.read_group(group);
        mark_loaded();
        pause.run().await;
        value
    }

    #[invalidates(key = "row:<id>", tag = "grp:<group>", cache = self.cache)]
    async fn update(&self, id: u64, group: u64, op: usize, pause: Pause) {
        self.world.commit(op, Change::Upsert(id));
        pause.run().await;
    }

    #[invalidates(key = "row:<id>", tag = "grp:<group>", cache = self.cache)]
    async fn delete(&self, id: u64, group: u64, op: usize, pause: Pause) {
        self.world.commit(op, Change::Delete(id));
        pause.run().await;
    }

    #[write_through(key = "row:<id>", ttl = 60, cache = self.cache)]
    async fn save(&self, id: u64, op: usize, pause: Pause) -> Row {
        let version = self.world.commit(op, Change::Upsert(id));
        pause.run().await;
        row(id, version)
    }

    #[invalidates(tag = "grp:<group>", cache = self.cache)]
    async fn touch(&self, group: u64, op: usize, pause: Pause) {
        self.world.commit(op, Change::Touch(group));
        pause.run().await;
    }
}

// ---------------------------------------------------------------------------
// The workload.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ReadFn {
    Row,
    RowL2,
    Group,
    GroupL2,
}

impl ReadFn {
    /// Whether every call reads Redis (so every returned mutation counts at
    /// once, whichever instance made it).
    fn l2_only(self) -> bool {
        matches!(self, ReadFn::RowL2 | ReadFn::GroupL2)
    }

    /// The key template it reads (`row` and `row_l2` share entries).
    fn template(self) -> &'static str {
        match self {
            ReadFn::Row | ReadFn::RowL2 => "row:<id>",
            ReadFn::Group => "grp:<group>",
            ReadFn::GroupL2 => "grp2:<group>",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Got {
    Row(Option<Row>),
    Group(Group),
}

#[derive(Debug, Clone)]
struct Read {
    function: ReadFn,
    instance: usize,
    /// The row (or group) read.
    target: u64,
    start: u64,
    start_at: Instant,
    end: u64,
    got: Got,
    loaded_here: bool,
}

async fn timed_read<F>(
    world: &World,
    function: ReadFn,
    instance: usize,
    target: u64,
    call: F,
) -> Read
where
    F: Future<Output = Got>,
{
    let start_at = Instant::now();
    let start = world.tick();
    let (got, loaded_here) = LOADED_HERE
        .scope(Cell::new(false), async {
            let got = call.await;
            (got, LOADED_HERE.with(Cell::get))
        })
        .await;
    let end = world.tick();
    Read {
        function,
        instance,
        target,
        start,
        start_at,
        end,
        got,
        loaded_here,
    }
}

/// One task of one instance: `ops` operations drawn from `rng`.
async fn run_task(repo: Repo, instance: usize, mut rng: StdRng, ops: usize) -> Vec<Read> {
    let world = &*repo.world;
    let mut reads = Vec::with_capacity(ops);
    for _ in 0..ops {
        let id = rng.random_range(1..=ROWS);
        let group = group_of(id);
        let pause = Pause::draw(&mut rng);
        match rng.random_range(0..100) {
            0..30 => {
                let call = async { Got::Row(repo.row(id, pause).await) };
                reads.push(timed_read(world, ReadFn::Row, instance, id, call).await);
            }
            30..50 => {
                let call = async { Got::Row(repo.row_l2(id, pause).await) };
                reads.push(timed_read(world, ReadFn::RowL2, instance, id, call).await);
            }
            50..65 => {
                let call = async { Got::Group(repo.group(group, pause).await) };
                reads.push(timed_read(world, ReadFn::Group, instance, group, call).await);
            }
            65..75 => {
                let call = async { Got::Group(repo.group_l2(group, pause).await) };
                reads.push(timed_read(world, ReadFn::GroupL2, instance, group, call).await);
            }
            75..82 => {
                let op = world.begin(MutKind::Update, instance, id);
                repo.update(id, group, op, pause).await;
                let done = world.done();
                world.key_done(op, done);
                world.tag_done(op, done);
            }
            82..85 => {
                let op = world.begin(MutKind::UpdateRaw, instance, id);
                world.commit(op, Change::Upsert(id));
                pause.run().await;
                if repo.cache.invalidate(&format!("row:{id}")).await.is_ok() {
                    world.key_done(op, world.done());
                } else {
                    world.failed_invalidations.fetch_add(1, Ordering::SeqCst);
                }
                if repo
                    .cache
                    .invalidate_tag(&format!("grp:{group}"))
                    .await
                    .is_ok()
                {
                    world.tag_done(op, world.done());
                } else {
                    world.failed_invalidations.fetch_add(1, Ordering::SeqCst);
                }
            }
            85..88 => {
                let op = world.begin(MutKind::Delete, instance, id);
                repo.delete(id, group, op, pause).await;
                let done = world.done();
                world.key_done(op, done);
                world.tag_done(op, done);
            }
            88..96 => {
                let op = world.begin(MutKind::Save, instance, id);
                let saved = repo.save(id, op, pause).await;
                world.key_done(op, world.done());
                assert_eq!(saved.id, id);
                if repo
                    .cache
                    .invalidate_tag(&format!("grp:{group}"))
                    .await
                    .is_ok()
                {
                    world.tag_done(op, world.done());
                } else {
                    world.failed_invalidations.fetch_add(1, Ordering::SeqCst);
                }
            }
            _ => {
                let op = world.begin(MutKind::Touch, instance, group);
                repo.touch(group, op, pause).await;
                world.tag_done(op, world.done());
            }
        }
    }
    reads
}

// ---------------------------------------------------------------------------
// The check.

/// Whether a read must already see a mutation that returned at `done`.
enum Due {
    /// It had not returned when the read started.
    No,
    /// Another instance's, inside the pub/sub window (L1 functions only):
    /// how long before the read it returned.
    WithinLag(Duration),
    Yes,
}

fn due(read: &Read, mutation: &Mutation, done: Option<Done>) -> Due {
    let Some(done) = done else {
        return Due::No;
    };
    if done.tick >= read.start {
        return Due::No;
    }
    if read.function.l2_only() || mutation.instance == read.instance {
        return Due::Yes;
    }
    let lag = read.start_at.saturating_duration_since(done.at);
    if lag > PUBSUB_LAG {
        Due::Yes
    } else {
        Due::WithinLag(lag)
    }
}

#[derive(Debug)]
struct Violation {
    /// For the summary: function, kind of the missed mutation, where the
    /// returned version came from, same or other instance.
    class: String,
    detail: String,
    loaded_here: bool,
}

struct Checker<'a> {
    mutations: &'a [Mutation],
    reads: &'a [Read],
    /// Per row: indices of its mutations (not `Touch`).
    by_row: HashMap<u64, Vec<usize>>,
    /// Per group: indices of its `Touch`es.
    by_group: HashMap<u64, Vec<usize>>,
    /// Which mutation committed each version.
    by_version: HashMap<u64, usize>,
    violations: Vec<Violation>,
    /// Reads that returned a version older than another instance's
    /// mutation that had returned less than `PUBSUB_LAG` before.
    lagged_reads: u64,
    max_lag: Duration,
    /// Reads that passed only because an overlapping write-through of what
    /// they returned may have landed last.
    excused_reads: u64,
}

impl<'a> Checker<'a> {
    fn new(mutations: &'a [Mutation], reads: &'a [Read]) -> Self {
        let mut by_row: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut by_group: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut by_version = HashMap::new();
        for (index, mutation) in mutations.iter().enumerate() {
            assert!(mutation.version > 0, "mutation {index} never committed");
            by_version.insert(mutation.version, index);
            if mutation.kind == MutKind::Touch {
                by_group.entry(mutation.target).or_default().push(index);
            } else {
                by_row.entry(mutation.target).or_default().push(index);
            }
        }
        Checker {
            mutations,
            reads,
            by_row,
            by_group,
            by_version,
            violations: Vec::new(),
            lagged_reads: 0,
            max_lag: Duration::ZERO,
            excused_reads: 0,
        }
    }

    fn check(&mut self, read: &Read) {
        match &read.got {
            Got::Row(Some(row)) => {
                assert_eq!(row.id, read.target, "a row read returned another row");
                assert_eq!(*row, self::row(row.id, row.version), "a garbled row");
                self.check_row(read, row.version);
            }
            Got::Row(None) => self.check_absent(read),
            Got::Group(group) => self.check_group(read, group),
        }
    }

    /// A row read that returned version `got`.
    fn check_row(&mut self, read: &Read, got: u64) {
        let producer = self
            .by_version
            .get(&got)
            .map(|&index| &self.mutations[index]);
        if got > 0 {
            let producer = producer.expect("a returned version was committed by a mutation");
            assert_eq!(producer.target, read.target, "a version of another row");
            assert!(
                matches!(
                    producer.kind,
                    MutKind::Update | MutKind::UpdateRaw | MutKind::Save
                ),
                "a row returned at the version of a delete"
            );
        }
        let mut lag = None;
        let mut missed = None;
        let mut excuse_used = false;
        for &index in self.by_row.get(&read.target).into_iter().flatten() {
            let mutation = &self.mutations[index];
            if mutation.version <= got {
                continue;
            }
            // An overlapping write-through of `got` may have landed last.
            let excused = producer.is_some_and(|producer| {
                producer.kind == MutKind::Save
                    && producer
                        .key_done
                        .is_some_and(|done| done.tick > mutation.commit)
            });
            if excused {
                excuse_used |= !matches!(due(read, mutation, mutation.key_done), Due::No);
                continue;
            }
            match due(read, mutation, mutation.key_done) {
                Due::No => {}
                Due::WithinLag(l) => lag = Some(lag.unwrap_or(l).max(l)),
                Due::Yes => {
                    if missed.is_none_or(|m: usize| self.mutations[m].version < mutation.version) {
                        missed = Some(index);
                    }
                }
            }
        }
        if excuse_used && missed.is_none() {
            self.excused_reads += 1;
        }
        self.conclude(read, lag, missed, || describe_version(got, producer));
    }

    /// A row read that returned `None`: some delete (or the initial
    /// absence) must be at least as new as every mutation due.
    fn check_absent(&mut self, read: &Read) {
        let rows = self
            .by_row
            .get(&read.target)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let newest_absence = rows
            .iter()
            .map(|&index| &self.mutations[index])
            .filter(|mutation| mutation.kind == MutKind::Delete && mutation.commit < read.end)
            .map(|mutation| mutation.version)
            .chain(INITIALLY_ABSENT.contains(&read.target).then_some(0))
            .max();
        let Some(absent) = newest_absence else {
            self.violations.push(Violation {
                class: format!(
                    "{:?} returned None for a row that never was absent",
                    read.function
                ),
                detail: format!("{read:?}"),
                loaded_here: read.loaded_here,
            });
            return;
        };
        let mut lag = None;
        let mut missed = None;
        for &index in rows {
            let mutation = &self.mutations[index];
            if mutation.version <= absent {
                continue;
            }
            match due(read, mutation, mutation.key_done) {
                Due::No => {}
                Due::WithinLag(l) => lag = Some(lag.unwrap_or(l).max(l)),
                Due::Yes => {
                    if missed.is_none_or(|m: usize| self.mutations[m].version < mutation.version) {
                        missed = Some(index);
                    }
                }
            }
        }
        self.conclude(read, lag, missed, || {
            format!("None (newest absence: v{absent}, from a load or negative entry)")
        });
    }

    /// A group read: each row's version, and the group's own, against the
    /// mutations that dropped the group's tag. Group values come only from
    /// loads, so no write-through excuses anything.
    fn check_group(&mut self, read: &Read, group: &Group) {
        assert_eq!(group.group, read.target);
        assert_eq!(
            group.rows.iter().map(|row| row.0).collect::<Vec<_>>(),
            rows_of(read.target).collect::<Vec<_>>()
        );
        let mut lag = None;
        let mut missed = None;
        let rows = group
            .rows
            .iter()
            .map(|&(id, version, _)| (self.by_row.get(&id), version));
        let meta = std::iter::once((self.by_group.get(&read.target), group.meta));
        for (indices, got) in rows.chain(meta) {
            for &index in indices.into_iter().flatten() {
                let mutation = &self.mutations[index];
                if mutation.version <= got {
                    continue;
                }
                match due(read, mutation, mutation.tag_done) {
                    Due::No => {}
                    Due::WithinLag(l) => lag = Some(lag.unwrap_or(l).max(l)),
                    Due::Yes => {
                        if missed
                            .is_none_or(|m: usize| self.mutations[m].version < mutation.version)
                        {
                            missed = Some(index);
                        }
                    }
                }
            }
        }
        self.conclude(read, lag, missed, || format!("{group:?} (loaded)"));
    }

    fn conclude(
        &mut self,
        read: &Read,
        lag: Option<Duration>,
        missed: Option<usize>,
        got: impl FnOnce() -> String,
    ) {
        let Some(missed) = missed else {
            if let Some(lag) = lag {
                self.lagged_reads += 1;
                self.max_lag = self.max_lag.max(lag);
            }
            return;
        };
        let mutation = &self.mutations[missed];
        let got = got();
        let source = if read.loaded_here {
            "its own load (TEST BUG: the database was read after the mutation)"
        } else {
            "the cache"
        };
        let instances = if mutation.instance == read.instance {
            "same instance"
        } else {
            "other instance"
        };
        // Loads (in a caller's own task) of the same entry that returned
        // the same value and overlapped the mutation: where the value may
        // have come from (background refreshes and other waiters' leaders
        // are not logged).
        let suspects: Vec<String> = self
            .reads
            .iter()
            .filter(|other| {
                other.loaded_here
                    && other.function.template() == read.function.template()
                    && other.target == read.target
                    && other.got == read.got
                    && other.start < mutation.commit
                    && other.end > mutation.start
            })
            .take(4)
            .map(|other| {
                format!(
                    "{:?} on instance {} (ticks {}..{})",
                    other.function, other.instance, other.start, other.end
                )
            })
            .collect();
        let producer = match &read.got {
            Got::Row(Some(row)) => match self.by_version.get(&row.version) {
                Some(&index) => format!("{:?}", self.mutations[index].kind),
                None => "initial".to_owned(),
            },
            Got::Row(None) => "absent".to_owned(),
            Got::Group(_) => "load".to_owned(),
        };
        self.violations.push(Violation {
            class: format!(
                "{:?} read missed {:?} ({instances}); returned value from {producer}",
                read.function, mutation.kind
            ),
            detail: format!(
                "{:?} read of {} on instance {} (ticks {}..{}) from {source} got {got}; \
                 but {:?} of {} to v{} on instance {} (started t{}, committed t{}, \
                 key done {:?}, tag done {:?}) had returned before it started; \
                 loads of that value overlapping the mutation: {suspects:?}",
                read.function,
                read.target,
                read.instance,
                read.start,
                read.end,
                mutation.kind,
                mutation.target,
                mutation.version,
                mutation.instance,
                mutation.start,
                mutation.commit,
                mutation.key_done.map(|done| done.tick),
                mutation.tag_done.map(|done| done.tick),
            ),
            loaded_here: read.loaded_here,
        });
    }
}

fn describe_version(version: u64, producer: Option<&Mutation>) -> String {
    match producer {
        None => format!("v{version} (initial)"),
        Some(producer) => format!(
            "v{version} (committed by {:?} on instance {}: started t{}, committed t{}, key done {:?})",
            producer.kind,
            producer.instance,
            producer.start,
            producer.commit,
            producer.key_done.map(|done| done.tick),
        ),
    }
}

// ---------------------------------------------------------------------------

async fn instance(server: &RedisServer, world: &Arc<World>) -> Repo {
    let cache = Cache::builder()
        .namespace("history")
        .redis_url(server.url())
        // Generous: this checks ordering, not timeouts (a Redis call that
        // timed out may still land later, which is another test's subject).
        .l2_timeout(Duration::from_secs(2))
        .build()
        .await
        .unwrap();
    subscribed(&cache).await;
    Repo {
        cache,
        world: world.clone(),
    }
}

fn seed() -> u64 {
    match std::env::var("HISTORY_SEED") {
        Ok(seed) => seed.trim().parse().expect("HISTORY_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_returns_a_version_older_than_a_mutation_that_returned_before_it_started() {
    let seed = seed();
    let ops: usize = std::env::var("HISTORY_OPS")
        .map(|ops| ops.trim().parse().expect("HISTORY_OPS is a number"))
        .unwrap_or(DEFAULT_OPS);
    let tasks = INSTANCES * TASKS_PER_INSTANCE;
    let replay = format!("seed {seed} (replay: HISTORY_SEED={seed} cargo test --test history)");
    eprintln!("history: {replay}, {ops} operations");

    let server = RedisServer::start();
    let world = Arc::new(World::new());
    let mut repos = Vec::new();
    for _ in 0..INSTANCES {
        repos.push(instance(&server, &world).await);
    }

    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let instance = task % INSTANCES;
        let rng =
            StdRng::seed_from_u64(seed ^ (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let share = ops / tasks + usize::from(task < ops % tasks);
        handles.push(tokio::spawn(run_task(
            repos[instance].clone(),
            instance,
            rng,
            share,
        )));
    }
    let limit = RUN_LIMIT + Duration::from_millis(ops as u64);
    let joined = tokio::time::timeout(limit, futures_util::future::join_all(handles))
        .await
        .unwrap_or_else(|_| panic!("the run did not finish within {limit:?}; {replay}"));
    let mut reads = Vec::new();
    for task in joined {
        reads.extend(task.unwrap_or_else(|error| panic!("a task failed: {error}; {replay}")));
    }
    let elapsed = started.elapsed();

    let stats: Vec<_> = repos.iter().map(|repo| repo.cache.stats()).collect();
    drop(repos);
    drop(server);

    let mutations = world.mutations.lock().unwrap().clone();
    let mut checker = Checker::new(&mutations, &reads);
    for read in &reads {
        checker.check(read);
    }
    let loaded_here = reads.iter().filter(|read| read.loaded_here).count();
    let l2_trouble: u64 = stats
        .iter()
        .map(|stats| stats.l2_errors + stats.l2_timeouts + stats.l2_skipped)
        .sum();
    let failed_invalidations = world.failed_invalidations.load(Ordering::SeqCst);
    let summary = format!(
        "{replay}: {} operations ({} reads, {loaded_here} of them loaded in their own call; \
         {} mutations) in {elapsed:.1?}; {} reads served another instance's older value \
         inside the pub/sub window (longest {:.1?}); {} reads got a write-through's value \
         that overlapping mutations had overtaken; L2 errors/timeouts/skips: {l2_trouble}; \
         failed invalidate calls: {failed_invalidations}; loads per instance: {:?}",
        reads.len() + mutations.len(),
        reads.len(),
        mutations.len(),
        checker.lagged_reads,
        checker.max_lag,
        checker.excused_reads,
        stats.iter().map(|stats| stats.loads).collect::<Vec<_>>(),
    );
    eprintln!("history: {summary}");

    let violations = checker.violations;
    if !violations.is_empty() {
        let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
        for violation in &violations {
            *classes.entry(violation.class.as_str()).or_default() += 1;
        }
        let mut message = format!(
            "{} reads returned a version older than a mutation that returned before they started\n{summary}\nby kind:\n",
            violations.len()
        );
        for (class, count) in &classes {
            let _ = writeln!(message, "  {count:5} x {class}");
        }
        let test_bugs = violations
            .iter()
            .filter(|violation| violation.loaded_here)
            .count();
        if l2_trouble + failed_invalidations > 0 {
            message.push_str(
                "Redis calls failed or timed out during the run: some of these may follow from that\n",
            );
        }
        if test_bugs > 0 {
            let _ = writeln!(
                message,
                "{test_bugs} of them read the database themselves: a bug in the test"
            );
        }
        message.push_str("first ones:\n");
        for violation in violations.iter().take(12) {
            let _ = writeln!(message, "  - {}", violation.detail);
        }
        panic!("{message}");
    }
    assert!(reads.len() + mutations.len() >= ops, "{summary}");
}
