use cache_runtime::cached;

pub struct Connection {
    pub queries: u64,
}

#[cached(key = "user:<id>", ttl = 60, stale = 30, skip(conn))]
async fn user_name(id: u64, conn: &mut Connection) -> String {
    conn.queries += 1;
    format!("user {id}")
}

fn main() {}
