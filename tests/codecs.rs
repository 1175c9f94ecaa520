//! Codecs against a real redis-server: what a cache with the JSON codec
//! stores is read by a Python service (the README's snippet, run by
//! python3 with the `redis` module and `json` alone), which also sees
//! invalidations (a tombstone, a tag's new version); and caches of
//! different codecs sharing a namespace never misread each other's
//! entries: a miss each, the other's entry left in place.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cache_runtime::{Cache, Codec, Options};
use cache_test_support::RedisServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    roles: Vec<String>,
}

fn user(id: u64, name: &str) -> User {
    User {
        id,
        name: name.to_owned(),
        roles: vec!["admin".to_owned()],
    }
}

const TTL: Duration = Duration::from_secs(300);

async fn cache(server: &RedisServer, namespace: &str, codec: Codec) -> Cache {
    Cache::builder()
        .namespace(namespace)
        .redis_url(server.url())
        .codec(codec)
        .build()
        .await
        .expect("cache")
}

/// A python3 that imports `redis`: the one on `PATH`, or the system's
/// (Debian's python3-redis installs there, and a pyenv or venv on `PATH`
/// does not see it). `./scripts/test` installs python3-redis when neither
/// has it.
fn python_with_redis() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", "import redis"])
                .output()
                .is_ok_and(|output| output.status.success())
        })
        .expect(
            "no python3 that imports `redis`: install Debian's python3-redis (./scripts/test does)",
        )
}

/// The Python snippet of the README's "Codecs", as it is printed there.
fn readme_snippet() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let codecs = &readme[readme.find("### Codecs").expect("a Codecs section")..];
    let start = codecs.find("```python\n").expect("a Python snippet") + "```python\n".len();
    let end = start + codecs[start..].find("\n```").expect("the snippet's end");
    codecs[start..end].to_owned()
}

/// What the README's `cached_user(id)` returns, as JSON (`null` for
/// `None`), run by a separate python3 process against `server`.
async fn python_reads(server: &RedisServer, id: u64) -> serde_json::Value {
    let snippet = readme_snippet();
    assert!(snippet.contains("port=6379"), "{snippet}");
    let script = format!(
        "{}\nprint(json.dumps(cached_user({id})))\n",
        snippet.replace("port=6379", &format!("port={}", server.port()))
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python_with_redis())
            .arg("-c")
            .arg(script)
            .output()
            .expect("run python3")
    })
    .await
    .expect("python3's thread");
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "python3 printed {:?}: {error}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_service_reads_what_a_json_cache_stored() {
    let server = RedisServer::start();
    let cache = cache(&server, "shared", Codec::Json).await;
    cache.set("user:7", &user(7, "Ada"), TTL).await;
    cache
        .set_with(
            "user:8",
            &user(8, "Grace"),
            &Options::ttl(TTL).tags(["org:7"]),
        )
        .await;

    let read = python_reads(&server, 7).await;
    assert_eq!(
        read,
        serde_json::json!({"id": 7, "name": "Ada", "roles": ["admin"]})
    );
    assert_eq!(python_reads(&server, 8).await["name"], "Grace");
    assert_eq!(python_reads(&server, 9).await, serde_json::Value::Null);

    // An invalidation leaves a tombstone (binary, whatever the codec): a
    // miss for Python too. A tag's invalidation moves its version on.
    cache.invalidate("user:7").await.expect("invalidate");
    assert_eq!(python_reads(&server, 7).await, serde_json::Value::Null);
    cache.invalidate_tag("org:7").await.expect("invalidate_tag");
    assert_eq!(python_reads(&server, 8).await, serde_json::Value::Null);

    // And the cache itself reads its JSON entries back from Redis (a second
    // instance, whose L1 is empty).
    cache.set("user:7", &user(7, "Ada L."), TTL).await;
    let other = self::cache(&server, "shared", Codec::Json).await;
    assert_eq!(other.get::<User>("user:7").await, Some(user(7, "Ada L.")));
    assert_eq!(other.stats().l2_hits, 1);
    assert_eq!(python_reads(&server, 7).await["name"], "Ada L.");
}

/// The raw bytes under a key, as any client reads them.
fn raw(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut server.client())
        .expect("GET")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_of_different_codecs_sharing_a_namespace_never_misread() {
    let server = RedisServer::start();
    let codecs = [Codec::Bincode, Codec::Json, Codec::Postcard];
    for writer_codec in codecs {
        for reader_codec in codecs.into_iter().filter(|codec| *codec != writer_codec) {
            let namespace = format!("mixed-{writer_codec:?}-{reader_codec:?}").to_lowercase();
            let context = format!("{writer_codec:?} written, {reader_codec:?} read");
            let writer = cache(&server, &namespace, writer_codec).await;
            let reader = cache(&server, &namespace, reader_codec).await;
            writer.set("user:1", &user(1, "written"), TTL).await;
            let stored = raw(&server, &format!("{namespace}:user:1")).expect(&context);

            // A miss, never the other codec's bytes decoded.
            assert_eq!(reader.get::<User>("user:1").await, None, "{context}");
            assert!(reader.stats().l2_undecodable >= 1, "{context}");
            // A load runs, its value is returned, and the writer's entry is
            // left in place (the writer keeps reading it).
            let loaded = reader
                .get_or_load("user:1", TTL, || async { Some(user(1, "loaded")) })
                .await;
            assert_eq!(loaded, Some(user(1, "loaded")), "{context}");
            reader.settled().await;
            assert_eq!(
                raw(&server, &format!("{namespace}:user:1")).as_ref(),
                Some(&stored),
                "{context}: overwritten"
            );
            let fresh_writer = cache(&server, &namespace, writer_codec).await;
            assert_eq!(
                fresh_writer.get::<User>("user:1").await,
                Some(user(1, "written")),
                "{context}"
            );
            assert_eq!(fresh_writer.stats().l2_hits, 1, "{context}");

            // Either codec's cache invalidates the other's entry: its
            // tombstone is a miss for both.
            reader.invalidate("user:1").await.expect("invalidate");
            let another_writer = cache(&server, &namespace, writer_codec).await;
            assert_eq!(
                another_writer.get::<User>("user:1").await,
                None,
                "{context}"
            );
            assert_eq!(another_writer.stats().l2_undecodable, 0, "{context}");
        }
    }
}
