use cache_runtime::cached;

pub struct Point {
    pub x: i32,
    pub y: i32,
}

// Names bound by a pattern count as parameters: each is keyed or skipped.
#[cached(key = "distance:<a>:<b>:<x>", ttl = 60, skip(y))]
async fn distance((a, b): (u32, u32), Point { x, y }: Point) -> u64 {
    u64::from(a.abs_diff(b)) + u64::from(x.unsigned_abs()) + u64::from(y.unsigned_abs())
}

fn main() {}
