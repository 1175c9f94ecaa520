//! The sales report as `GET /reports/sales` must answer it, added up from
//! the rows themselves rather than by the app's query: shared by the app's
//! tests on SQLite (`app.rs`) and on Postgres (`app_postgres.rs`).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::any::install_default_drivers;

/// The report the database at `database_url` should give.
pub async fn expected_sales_report(database_url: &str) -> Value {
    install_default_drivers();
    let pool = AnyPool::connect(database_url).await.unwrap();
    let orgs: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM orgs ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let org_of: HashMap<i64, i64> = sqlx::query_as("SELECT id, org_id FROM users")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let orders: Vec<(i64, i64)> = sqlx::query_as("SELECT user_id, amount_cents FROM orders")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    // Per organisation: orders, revenue, the users who ordered.
    let mut sales: HashMap<i64, (i64, i64, HashSet<i64>)> = HashMap::new();
    for (user_id, amount_cents) in orders {
        let line = sales.entry(org_of[&user_id]).or_default();
        line.0 += 1;
        line.1 += amount_cents;
        line.2.insert(user_id);
    }
    let lines: Vec<Value> = orgs
        .into_iter()
        .map(|(org_id, name)| {
            let (orders, revenue_cents, customers) = sales.remove(&org_id).unwrap_or_default();
            json!({
                "org_id": org_id,
                "name": name,
                "orders": orders,
                "revenue_cents": revenue_cents,
                "customers": customers.len(),
            })
        })
        .collect();
    json!({ "orgs": lines })
}
