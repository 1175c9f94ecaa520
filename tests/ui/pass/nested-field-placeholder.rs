use cache_runtime::cached;

pub struct Address {
    pub city: String,
}

pub struct Customer {
    pub address: Address,
}

#[cached(key = "weather:<customer.address.city>:<day.0>", ttl = 60)]
async fn weather(customer: &Customer, day: (u16, u8)) -> String {
    format!("sunny in {} on day {}", customer.address.city, day.1)
}

fn main() {}
