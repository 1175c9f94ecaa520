use std::rc::Rc;

use cache_runtime::cached;

// The background run happens on another thread: every copy must be `Send`.
#[cached(key = "user:<id>", ttl = 60, early, skip(names))]
async fn user_name(id: u64, names: Rc<Vec<String>>) -> String {
    format!("user {id} of {}", names.len())
}

fn main() {}
