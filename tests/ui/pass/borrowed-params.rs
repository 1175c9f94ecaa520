use cache_runtime::cached;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub bio: String,
}

#[cached(key = "profile:<user.id>:<lang>", ttl = 60)]
async fn profile(user: &User, lang: &str) -> Profile {
    Profile {
        bio: format!("{} ({lang})", user.name),
    }
}

#[cached(key = "tags:<tag>", ttl = 60)]
async fn by_tag(tag: &String) -> Vec<u64> {
    vec![tag.len() as u64]
}

fn main() {}
