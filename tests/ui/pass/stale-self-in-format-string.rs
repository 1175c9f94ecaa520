use std::fmt;
use std::fmt::Write as _;

use cache_runtime::cached;

#[derive(Clone, Debug)]
pub struct Repo {
    name: String,
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.name)
    }
}

impl Repo {
    // `self` captured by name inside format strings runs on the receiver's
    // copy in the background, like every other `self`.
    #[cached(key = "describe:<id>", ttl = 60, stale = 30)]
    pub async fn describe(&self, id: u64) -> String {
        let mut out = format!("{self:?}:{id}");
        write!(out, "|{self}|{{self}}|{}", self.name).unwrap();
        out
    }

    #[cached(key = "shout:<id>", ttl = 60, early)]
    pub async fn shout(&self, id: u64) -> String {
        assert!(id > 0, "{self} got {id}");
        format!("{self:>6}!")
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let repo = Repo {
        name: "users".to_owned(),
    };
    assert_eq!(
        repo.describe(1).await,
        "Repo { name: \"users\" }:1|users|{self}|users"
    );
    assert_eq!(repo.shout(2).await, " users!");
}
