//! The local Redis Cluster the cluster tests run on (issue 14): it forms
//! with 3 masters and 3 replicas, spreads slots over the masters, and a
//! replica takes over when its master is killed.

use cache_test_support::{RedisCluster, key_slot};

#[test]
fn a_local_cluster_forms_and_fails_over() {
    let mut cluster = RedisCluster::start();
    assert_eq!(cluster.seed_urls().len(), 6);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);

    // A key is written on the master of its slot: every master takes some.
    let mut written_on = std::collections::BTreeSet::new();
    for id in 0..64 {
        let key = format!("app:user:{id}");
        for master in &masters {
            let stored: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(id)
                .query(&mut master.client());
            if stored.is_ok() {
                written_on.insert(master.port());
            }
        }
    }
    assert_eq!(written_on.len(), 3, "keys spread over every master");
    assert_ne!(key_slot("app:user:1"), key_slot("app:user:2"));
    assert_eq!(key_slot("{app:user:1} #lock"), key_slot("app:user:1"));

    let killed = cluster.kill_master_of("app:user:1");
    cluster.wait_until_ok();
    assert!(
        cluster
            .masters()
            .iter()
            .all(|master| master.port() != killed),
        "a replica took over"
    );
    assert_eq!(cluster.seed_urls().len(), 5);
}
