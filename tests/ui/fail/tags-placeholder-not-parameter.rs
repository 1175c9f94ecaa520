use cache_runtime::cached;

// Tags follow the key's placeholder rules, but only the key must hold every
// parameter: `org` in a tag alone still needs `skip(org)`.
#[cached(key = "user:<id>", ttl = 60, tags = ["org:<organisation>", "team:<self.team>"])]
async fn user_name(org: u32, id: u64) -> String {
    format!("user {id} of {org}")
}

#[cached(key = "user:<id>", ttl = 60, tags = ["org:<org>"])]
async fn user_name2(org: u32, id: u64) -> String {
    format!("user {id} of {org}")
}

fn main() {}
