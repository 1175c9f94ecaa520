//! Load test of the example app: a fixed request rate and a share of PUTs;
//! prints hit rate, database queries per second with the cache and without
//! it, and latency percentiles. Two scenarios:
//!
//! - `users` (the default): `GET /users/{id}` with ids drawn from a Zipf
//!   distribution, `PUT /users/{id}` renames; many cheap keys.
//! - `report`: `GET /reports/sales`, one expensive aggregate over
//!   `--report-rows` orders (default 200,000: 100 ms or more in SQLite),
//!   and `PUT /orders/{id}` setting an order's amount, which patches the
//!   cached report. Default 2 req/s for 120 s: without the cache each GET
//!   is a pass over every order (about 180 ms of one core here), and at a
//!   rate near what the machine can add up the uncached phase would measure
//!   a queue rather than the query (at 5 req/s its p50 was 430 ms and
//!   growing on this 2-core machine).
//!
//! ```sh
//! cargo run --release --example load                 # starts the app itself, twice: cache on, then CACHE=off
//! cargo run --release --example load -- --scenario report   # the sales report, cache on then off
//! cargo run --release --example load -- --url http://127.0.0.1:3000   # drives an app you started
//! cargo run --release --example load -- --rate 2000 --duration 10 --puts 0.05
//! ```
//!
//! Without `--url`, the app runs inside this process on a temporary SQLite
//! file (with Redis if `REDIS_URL` is set), so both phases see the same
//! machine. With `--url`, one phase runs against that app; start it with
//! `CACHE=off` for the comparison (and, for `report`, with `REPORT_ROWS`
//! equal to `--report-rows`: the PUTs pick order ids up to it). Only
//! loopback URLs are accepted.
//!
//! Latency is measured from the moment a request was due, not from when it
//! was sent, so a stall shows up in p99 instead of silently lowering the rate.
//! GETs and PUTs are reported apart: the percentiles are the reads', which
//! the cache serves; a PUT is a database write in both phases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum_app::app::{App, BoxError, Settings};
use axum_app::db;
use axum_app::serve::serve;
use indicatif::{ProgressBar, ProgressStyle};
use rand::Rng;
use rand_distr::{Distribution, Zipf};
use tokio::sync::{Mutex, Semaphore};

/// Requests allowed in flight at once; past it a due request is counted as
/// dropped rather than queued, so the offered rate stays fixed.
const MAX_IN_FLIGHT: usize = 512;

/// What the requests read and write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `GET`/`PUT /users/{id}`, ids drawn from Zipf(1.0) over every user.
    Users,
    /// `GET /reports/sales`, `PUT /orders/{id}` with a random order.
    Report,
}

impl Scenario {
    /// Requests per second and seconds, unless given.
    fn default_rate_and_duration(self) -> (u32, Duration) {
        match self {
            Scenario::Users => (1000, Duration::from_secs(30)),
            // The uncached report is a pass over every order, about 180 ms
            // of one core: 2 a second keep a fifth of two cores busy with
            // it, so the uncached phase measures the query rather than a
            // queue; 120 s make 240 GETs, enough for a p99 (the 3rd worst).
            Scenario::Report => (2, Duration::from_secs(120)),
        }
    }
}

/// Orders seeded for the report scenario: what makes the uncached report
/// take 100 ms or more in SQLite on a 2-core machine.
const REPORT_ROWS: u32 = 200_000;

struct Options {
    url: Option<String>,
    scenario: Scenario,
    rate: u32,
    duration: Duration,
    put_share: f64,
    report_rows: u32,
}

fn parse_options() -> Result<Options, BoxError> {
    let mut url = None;
    let mut scenario = Scenario::Users;
    let mut rate = None;
    let mut duration = None;
    let mut put_share = 0.01;
    let mut report_rows = REPORT_ROWS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => url = Some(value()?),
            "--scenario" => {
                scenario = match value()?.as_str() {
                    "users" => Scenario::Users,
                    "report" => Scenario::Report,
                    other => {
                        return Err(format!(
                            "unknown scenario `{other}` (expected users or report)"
                        )
                        .into());
                    }
                }
            }
            "--rate" => rate = Some(value()?.parse()?),
            "--duration" => duration = Some(Duration::from_secs(value()?.parse()?)),
            "--puts" => put_share = value()?.parse()?,
            "--report-rows" => report_rows = value()?.parse()?,
            other => {
                return Err(format!(
                    "unknown argument `{other}` (expected --url URL, --scenario users|report, --rate N, --duration SECS, --puts SHARE, --report-rows N)"
                )
                .into());
            }
        }
    }
    let (default_rate, default_duration) = scenario.default_rate_and_duration();
    let options = Options {
        url,
        scenario,
        rate: rate.unwrap_or(default_rate),
        duration: duration.unwrap_or(default_duration),
        put_share,
        report_rows,
    };
    if options.report_rows == 0 {
        return Err("--report-rows must be at least 1".into());
    }
    if !(1..=20_000).contains(&options.rate) {
        return Err("--rate must be 1..=20000 requests per second".into());
    }
    if options.duration.is_zero() || options.duration > Duration::from_secs(600) {
        return Err("--duration must be 1..=600 seconds".into());
    }
    if !(0.0..=1.0).contains(&options.put_share) {
        return Err("--puts must be a share between 0 and 1".into());
    }
    if let Some(url) = &options.url {
        let parsed = reqwest::Url::parse(url)?;
        if !matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) {
            return Err(format!("{url}: only loopback addresses are allowed").into());
        }
    }
    Ok(options)
}

/// What one phase measured.
struct Report {
    label: String,
    sent: u64,
    dropped: u64,
    failed: u64,
    elapsed: Duration,
    hit_rate: Option<f64>,
    db_queries: f64,
    db_queries_per_sec: f64,
    /// The same three over the second half of the phase, once the cache
    /// has had time to fill.
    second_half_hit_rate: Option<f64>,
    second_half_db_queries: f64,
    second_half_db_queries_per_sec: f64,
    /// Latency of the GETs (the reads the cache serves).
    p50: Duration,
    p99: Duration,
    /// The same two over the GETs due in the second half.
    second_half_p50: Duration,
    second_half_p99: Duration,
    puts: u64,
    /// Latency of the PUTs (writes: the database's in both phases).
    put_p50: Duration,
    put_max: Duration,
}

/// One request that succeeded.
struct Completed {
    second_half: bool,
    put: bool,
    latency: Duration,
}

/// The counters the phase reads from `/metrics` before and after.
#[derive(Default, Clone, Copy)]
struct Scrape {
    hits: f64,
    misses: f64,
    db_queries: f64,
    cache_enabled: bool,
}

async fn scrape(http: &reqwest::Client, base: &str) -> Result<Scrape, BoxError> {
    let body = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let sum = |name: &str| -> f64 {
        body.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(['{', ' ']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Ok(Scrape {
        hits: sum("cache_hits_total"),
        misses: sum("cache_misses_total"),
        db_queries: sum("app_db_queries_total"),
        cache_enabled: sum("app_cache_enabled") > 0.0,
    })
}

async fn run_phase(base: &str, label: &str, options: &Options) -> Result<Report, BoxError> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .timeout(Duration::from_secs(10))
        .build()?;
    let before = scrape(&http, base).await?;
    let total = u64::from(options.rate) * options.duration.as_secs();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg:>10} {bar:40} {pos}/{len} requests, {elapsed}/{duration}",
        )
        .expect("the template is valid"),
    );
    bar.set_message(label.to_owned());

    let zipf = Zipf::new(db::SEEDED_USERS as f64, 1.0)?;
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let failed = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut dropped = 0;
    let mut puts = 0;
    let mut halfway = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / options.rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for n in 0..total {
        let due = tick.tick().await.into_std();
        bar.inc(1);
        if n == total / 2 {
            // In a task of its own, so that the requests keep their schedule.
            let (http, base) = (http.clone(), base.to_owned());
            halfway = Some(tokio::spawn(async move {
                (scrape(&http, &base).await, Instant::now())
            }));
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let mut rng = rand::rng();
        let put = rng.random_bool(options.put_share);
        puts += u64::from(put);
        let request = match (options.scenario, put) {
            (Scenario::Users, false) => {
                http.get(format!("{base}/users/{}", zipf.sample(&mut rng) as i64))
            }
            (Scenario::Users, true) => http
                .put(format!("{base}/users/{}", zipf.sample(&mut rng) as i64))
                .json(&serde_json::json!({ "name": format!("Load Test {n}") })),
            (Scenario::Report, false) => http.get(format!("{base}/reports/sales")),
            (Scenario::Report, true) => http
                .put(format!(
                    "{base}/orders/{}",
                    rng.random_range(1..=options.report_rows)
                ))
                .json(&serde_json::json!({ "amount_cents": rng.random_range(100..20_100) })),
        };
        let second_half = n >= total / 2;
        let (latencies, failed) = (latencies.clone(), failed.clone());
        tokio::spawn(async move {
            let ok = match request.send().await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    // Read the body: the request is done when it has arrived.
                    ok && response.bytes().await.is_ok()
                }
                Err(_) => false,
            };
            let latency = due.elapsed();
            if ok {
                latencies.lock().await.push(Completed {
                    second_half,
                    put,
                    latency,
                });
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    // Wait for the stragglers.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await?;
    let elapsed = started.elapsed();
    bar.finish();
    let after = scrape(&http, base).await?;

    let latencies = std::mem::take(&mut *latencies.lock().await);
    let sorted = |keep: &dyn Fn(&Completed) -> bool| {
        let mut sorted: Vec<Duration> = latencies
            .iter()
            .filter(|completed| keep(completed))
            .map(|completed| completed.latency)
            .collect();
        sorted.sort_unstable();
        sorted
    };
    let gets = sorted(&|completed| !completed.put);
    let second_half_gets = sorted(&|completed| !completed.put && completed.second_half);
    let puts_latency = sorted(&|completed| completed.put);
    let percentile = |sorted: &[Duration], p: f64| {
        sorted
            .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let ended = Instant::now();
    let (middle, middle_at) = match halfway {
        Some(task) => {
            let (scraped, at) = task.await?;
            (scraped?, at)
        }
        None => (before, started),
    };
    let hit_rate = |from: &Scrape| {
        let lookups = (after.hits - from.hits) + (after.misses - from.misses);
        (after.cache_enabled && lookups > 0.0).then(|| (after.hits - from.hits) / lookups)
    };
    Ok(Report {
        label: label.to_owned(),
        sent: total - dropped,
        dropped,
        failed: failed.load(Ordering::Relaxed),
        elapsed,
        hit_rate: hit_rate(&before),
        db_queries: after.db_queries - before.db_queries,
        db_queries_per_sec: (after.db_queries - before.db_queries) / elapsed.as_secs_f64(),
        second_half_db_queries: after.db_queries - middle.db_queries,
        second_half_hit_rate: hit_rate(&middle),
        second_half_db_queries_per_sec: (after.db_queries - middle.db_queries)
            / (ended - middle_at).as_secs_f64(),
        p50: percentile(&gets, 0.50),
        p99: percentile(&gets, 0.99),
        second_half_p50: percentile(&second_half_gets, 0.50),
        second_half_p99: percentile(&second_half_gets, 0.99),
        puts,
        put_p50: percentile(&puts_latency, 0.50),
        put_max: puts_latency.last().copied().unwrap_or_default(),
    })
}

/// Starts the app in this process on a free loopback port.
async fn start_app(
    database_url: &str,
    cache_enabled: bool,
    options: &Options,
) -> Result<(App, String), BoxError> {
    let defaults = Settings::default();
    let settings = Settings {
        database_url: database_url.to_owned(),
        redis_url: std::env::var("REDIS_URL")
            .ok()
            .filter(|url| !url.is_empty()),
        cache_enabled,
        namespace: format!("load_test_{}", std::process::id()),
        // Only the report scenario needs (and waits for) the large table.
        report_rows: match options.scenario {
            Scenario::Users => defaults.report_rows,
            Scenario::Report => options.report_rows,
        },
        ..defaults
    };
    let app = App::start(&settings).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = app.router();
    // The app's own server with its default limits, which must not
    // throttle this load.
    let limits = settings.limits;
    tokio::spawn(async move { serve(listener, router, limits, std::future::pending()).await });
    Ok((app, base))
}

fn print_reports(reports: &[Report], options: &Options) {
    println!();
    let reads = match options.scenario {
        Scenario::Users => format!(
            "GET /users/{{id}}, ids Zipf(s = 1.0) over {} users",
            db::SEEDED_USERS
        ),
        Scenario::Report => format!("GET /reports/sales over {} orders", options.report_rows),
    };
    let writes = match options.scenario {
        Scenario::Users => "PUT /users/{id}",
        Scenario::Report => "PUT /orders/{id}",
    };
    println!(
        "{} req/s offered for {} s: {reads}, {}% {writes}",
        options.rate,
        options.duration.as_secs(),
        options.put_share * 100.0
    );
    let row = |name: &str, value: &dyn Fn(&Report) -> String| {
        let cells: Vec<String> = reports
            .iter()
            .map(|report| format!("{:>14}", value(report)))
            .collect();
        println!("{name:<22}{}", cells.join(""));
    };
    row("", &|report| report.label.clone());
    row("requests completed", &|report| {
        (report.sent - report.failed).to_string()
    });
    row("achieved rate (req/s)", &|report| {
        format!(
            "{:.0}",
            (report.sent - report.failed) as f64 / report.elapsed.as_secs_f64()
        )
    });
    row("failed / dropped", &|report| {
        format!("{} / {}", report.failed, report.dropped)
    });
    row("PUTs sent", &|report| report.puts.to_string());
    let percent = |rate: Option<f64>| match rate {
        Some(rate) => format!("{:.1}%", rate * 100.0),
        None => "-".into(),
    };
    row("cache hit rate", &|report| percent(report.hit_rate));
    row("  second half", &|report| {
        percent(report.second_half_hit_rate)
    });
    row("DB queries, per s", &|report| {
        format!("{:.0}, {:.2}", report.db_queries, report.db_queries_per_sec)
    });
    row("  second half", &|report| {
        format!(
            "{:.0}, {:.2}",
            report.second_half_db_queries, report.second_half_db_queries_per_sec
        )
    });
    let ms = |latency: Duration| format!("{:.2}", latency.as_secs_f64() * 1e3);
    row("GET p50 (ms)", &|report| ms(report.p50));
    row("GET p99 (ms)", &|report| ms(report.p99));
    row("  second half p50", &|report| ms(report.second_half_p50));
    row("  second half p99", &|report| ms(report.second_half_p99));
    row("PUT p50 / max (ms)", &|report| {
        format!("{} / {}", ms(report.put_p50), ms(report.put_max))
    });
    if let [on, off] = reports
        && off.db_queries_per_sec > 0.0
    {
        let saved = |with: f64, without: f64| (1.0 - with / without) * 100.0;
        println!(
            "\nthe cache cut database queries by {:.1}% over the run, {:.1}% over its second half",
            saved(on.db_queries_per_sec, off.db_queries_per_sec),
            saved(
                on.second_half_db_queries_per_sec,
                off.second_half_db_queries_per_sec
            )
        );
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = parse_options()?;
    let reports = match &options.url {
        Some(url) => {
            let url = url.trim_end_matches('/');
            let cache_enabled = scrape(&reqwest::Client::builder().no_proxy().build()?, url)
                .await?
                .cache_enabled;
            let label = if cache_enabled {
                "cache on"
            } else {
                "cache off"
            };
            vec![run_phase(url, label, &options).await?]
        }
        None => {
            let path =
                std::env::temp_dir().join(format!("cache-load-{}.sqlite", std::process::id()));
            let database_url = format!("sqlite:{}?mode=rwc", path.display());
            let mut reports = Vec::new();
            for (cache_enabled, label) in [(true, "cache on"), (false, "cache off")] {
                let (app, base) = start_app(&database_url, cache_enabled, &options).await?;
                reports.push(run_phase(&base, label, &options).await?);
                app.shutdown().await;
            }
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
            reports
        }
    };
    print_reports(&reports, &options);
    Ok(())
}
