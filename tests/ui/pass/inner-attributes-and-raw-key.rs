use cache_runtime::cached;

#[cached(key = r#"v2:item:<id>"#, ttl = 60)]
async fn item(id: u64) -> u64 {
    #![allow(unused_variables)]
    let unused = 1;
    id
}

#[cached(key = "r#type:<r#type>", ttl = 60)]
async fn kind(r#type: u8) -> u8 {
    r#type
}

fn main() {}
