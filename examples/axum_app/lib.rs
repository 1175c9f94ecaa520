//! The example app's modules (see `examples/axum_app.rs`), as the root
//! package's library `axum_app`: the example binary (`cargo run --example
//! axum_app`), the load test (`examples/load.rs`) and the end-to-end test
//! (`tests/app.rs`) all start the app through [`app::App::start`].

pub mod app;
pub mod db;
pub mod repo;
pub mod routes;
pub mod serve;
pub mod warm;
