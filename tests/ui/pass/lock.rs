use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
}

// `lock` changes nothing in the function: parameters may still be borrowed
// mutably or destructured.
#[cached(key = "user:<id>", ttl = 300, jitter = 0.1, lock)]
pub async fn get_user(id: u64) -> Option<User> {
    Some(User { id })
}

#[cached(key = "range:<start>:<end>", ttl = 60, lock, skip(calls))]
async fn sum((start, end): (u64, u64), calls: &mut u64) -> u64 {
    *calls += 1;
    (start..end).sum()
}

fn main() {
    let _ = (get_user(1), sum((1, 2), &mut 0));
}
