use cache_runtime::cached;

// A borrowed value the copy keeps borrowing: the background run can't own it.
#[cached(key = "user:<id>", ttl = 60, early, skip(names))]
async fn user_name<'a>(id: u64, names: Vec<&'a str>) -> String {
    format!("user {id} of {}", names.len())
}

fn main() {}
