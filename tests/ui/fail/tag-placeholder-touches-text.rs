use cache_runtime::{cached, invalidates};

#[cached(key = "user:<id>", ttl = 60, tags = ["org<org>", "team:<org><team>"], skip(org, team))]
async fn user(id: u64, org: u32, team: u32) -> String {
    format!("user {id} of {org}/{team}")
}

#[invalidates(tag = "org:<org>x")]
async fn drop_org(org: u32) {
    let _ = org;
}

fn main() {}
