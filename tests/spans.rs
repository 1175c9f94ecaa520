//! The `cache.load` span around each run of a function body: the template
//! (never the rendered key), the outcome, background refreshes.
//!
//! Each test sets its own subscriber as the thread's default and runs on a
//! current-thread runtime (background refreshes included), so tests running
//! in parallel never see each other's spans.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_runtime::{Cache, cached};
use tracing::Instrument;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What the test subscriber saw of one span.
#[derive(Debug, Clone, Default)]
struct SeenSpan {
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<&'static str>,
    follows_from: Vec<&'static str>,
    /// Messages of the events emitted inside it.
    events: Vec<String>,
}

/// Index of a span in `Seen`, kept in the span's extensions.
struct Index(usize);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<SeenSpan>>>);

impl Seen {
    fn spans(&self, name: &str) -> Vec<SeenSpan> {
        let spans = self.0.lock().unwrap();
        spans.iter().filter(|s| s.name == name).cloned().collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for Seen
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a new span is registered");
        let mut seen = SeenSpan {
            name: attrs.metadata().name(),
            parent: span.parent().map(|parent| parent.name()),
            ..SeenSpan::default()
        };
        attrs.record(&mut Fields(&mut seen.fields));
        let mut spans = self.0.lock().unwrap();
        span.extensions_mut().insert(Index(spans.len()));
        spans.push(seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("recorded on a live span");
        let index = span.extensions().get::<Index>().unwrap().0;
        values.record(&mut Fields(&mut self.0.lock().unwrap()[index].fields));
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("a live span");
        let index = span.extensions().get::<Index>().unwrap().0;
        let follows = ctx.span(follows).expect("a live span").name();
        self.0.lock().unwrap()[index].follows_from.push(follows);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.event_span(event) {
            let index = span.extensions().get::<Index>().map(|index| index.0);
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            if let (Some(index), Some(message)) = (index, fields.remove("message")) {
                self.0.lock().unwrap()[index].events.push(message);
            }
        }
    }
}

fn capture() -> (Seen, tracing::subscriber::DefaultGuard) {
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    (seen, tracing::subscriber::set_default(subscriber))
}

#[derive(Debug)]
struct Boom;

#[cached(key = "user:<email>", ttl = 60, negative = 60, cache = cache, skip(cache))]
async fn find_user(cache: &Cache, email: &str) -> Result<Option<u64>, Boom> {
    tracing::info!("querying the database");
    match email {
        "boom@example.com" => Err(Boom),
        "nobody@example.com" => Ok(None),
        _ => Ok(Some(email.len() as u64)),
    }
}

#[tokio::test]
async fn a_load_span_carries_the_template_and_the_outcome_never_the_key() {
    let (seen, _guard) = capture();
    let cache = Cache::builder().namespace("s-load").build().await.unwrap();

    let request = tracing::info_span!("request");
    async {
        assert_eq!(
            find_user(&cache, "ada@example.com").await.unwrap(),
            Some(15)
        );
        assert_eq!(
            find_user(&cache, "ada@example.com").await.unwrap(),
            Some(15)
        );
        assert_eq!(find_user(&cache, "nobody@example.com").await.unwrap(), None);
        assert!(find_user(&cache, "boom@example.com").await.is_err());
    }
    .instrument(request)
    .await;

    let loads = seen.spans("cache.load");
    assert_eq!(loads.len(), 3, "one per load, none for the hit: {loads:#?}");
    let outcomes: Vec<&str> = loads.iter().map(|s| s.fields["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["ok", "none", "err"]);
    for span in &loads {
        assert_eq!(span.fields["function"], "find_user");
        assert_eq!(span.fields["key"], "user:<email>");
        assert_eq!(span.fields["refresh"], "false");
        assert_eq!(span.parent, Some("request"), "a child of the caller's span");
        assert_eq!(
            span.events,
            ["querying the database"],
            "the body runs inside it"
        );
        for value in span.fields.values() {
            assert!(
                !value.contains("example"),
                "a rendered key leaked into {span:?}"
            );
        }
    }
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    loads: Arc<AtomicU64>,
    /// Loads after the first take this long.
    later_loads: Duration,
}

impl Repo {
    async fn new(namespace: &str, later_loads: Duration) -> Repo {
        Repo {
            cache: Cache::builder()
                .namespace(namespace)
                .refresh_timeout(Duration::from_millis(100))
                .build()
                .await
                .unwrap(),
            loads: Arc::default(),
            later_loads,
        }
    }

    #[cached(key = "report:<day>", ttl = 1, stale = 60, cache = self.cache)]
    async fn report(&self, day: u32) -> Result<u32, Boom> {
        if self.loads.fetch_add(1, Ordering::SeqCst) > 0 {
            tokio::time::sleep(self.later_loads).await;
        }
        Ok(day)
    }

    /// Loads once, waits past the TTL, serves the stale value (starting a
    /// background refresh) from inside a `request` span, and waits for the
    /// refresh's span to end.
    async fn refresh_once(&self, seen: &Seen) -> SeenSpan {
        assert_eq!(self.report(1).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(
            self.report(1)
                .instrument(tracing::info_span!("request"))
                .await
                .unwrap(),
            1,
            "stale"
        );
        let started = Instant::now();
        loop {
            let loads = seen.spans("cache.load");
            if let [_, refresh] = &loads[..]
                && refresh.fields.contains_key("outcome")
            {
                return refresh.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "no refresh ended: {loads:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_background_refresh_has_its_own_span_following_the_call() {
    let (seen, _guard) = capture();
    let repo = Repo::new("s-refresh", Duration::ZERO).await;

    let refresh = repo.refresh_once(&seen).await;
    assert_eq!(refresh.fields["refresh"], "true");
    assert_eq!(refresh.fields["key"], "report:<day>");
    assert_eq!(refresh.fields["function"], "report");
    assert_eq!(refresh.fields["outcome"], "ok");
    assert_eq!(refresh.parent, None, "a root span: the call returned first");
    assert_eq!(refresh.follows_from, ["request"]);
}

#[tokio::test]
async fn a_refresh_past_its_deadline_ends_with_outcome_timeout() {
    let (seen, _guard) = capture();
    let repo = Repo::new("s-timeout", Duration::from_secs(30)).await;

    let refresh = repo.refresh_once(&seen).await;
    assert_eq!(refresh.fields["outcome"], "timeout");
    assert_eq!(repo.cache.stats().refresh_errors, 1);
}

/// A write-behind worker's batch: one `cache.write_behind` span per batch,
/// with the queue, the partition, and how many writes it applied; the
/// bodies run inside it.
#[tokio::test]
async fn a_write_behind_batch_has_a_span_with_its_counts() {
    let (seen, _guard) = capture();
    let redis = cache_test_support::RedisServer::start();
    let cache = Cache::builder()
        .namespace("s-write-behind")
        .redis_url(redis.url())
        .build()
        .await
        .unwrap();
    for at in 0..3i64 {
        let taken: Result<(), String> = cache
            .write_behind(
                "seen",
                "user:1:seen",
                at,
                Duration::from_secs(60),
                (1u64, at),
                |_| async { Err("not queued?".to_owned()) },
            )
            .await;
        assert_eq!(taken, Ok(()), "queued, the body did not run");
    }
    let handler = cache_runtime::WriteBehindHandler::new(
        "seen",
        (),
        |_: Arc<()>, (_, at): (u64, i64)| async move {
            tracing::info!(at, "saving");
            Ok::<(), String>(())
        },
    );
    let worker = cache_runtime::WriteBehindWorker::builder(&cache)
        .handler(handler)
        .poll_interval(Duration::from_millis(5))
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().write_behind_applied < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    worker.shutdown().await;
    let batches = seen.spans("cache.write_behind");
    assert_eq!(batches.len(), 1, "{batches:#?}");
    let batch = &batches[0];
    assert_eq!(batch.fields["queue"], "seen");
    assert_eq!(batch.fields["writes"], "3");
    assert_eq!(batch.fields["applied"], "3");
    assert_eq!(batch.fields["failed"], "0");
    assert!(batch.fields.contains_key("partition"));
    assert_eq!(batch.events, ["saving"; 3], "the bodies run inside it");
}
