//! Seeds an items database with generated items, through the same store code the service
//! writes with (so the indexes and counts are the real ones). For benchmarks and trying
//! filters at scale: `DATABASE_URL=sqlite://data/items.db seed-items 100000`. With `--tag T`
//! every item also carries tag `T` (scripts/smoke-run.sh gives a k6 run's tag 30,000 items
//! for its cleanup to delete).
//!
//! The data has known shapes, so a benchmark knows what it asks for:
//! - every item has tag `group-<i % 100>`; even items also have tag `common`;
//! - every 10,000th item (i % 10000 == 0) has tag `rare` and the word `zebracorn` in its name;
//! - names are `<adjective> <noun> <i>`, so `?name=lamp` matches 1 item in 16.
//!
//! Prints one JSON line: how many items, how long, how many per second.

use std::time::{Duration, Instant};

use items::domain::{ItemFields, Tag};
use items::store::{Store, StoreConfig};

const ADJECTIVES: [&str; 16] = [
    "red", "green", "blue", "amber", "quiet", "loud", "small", "large", "old", "new", "warm",
    "cold", "bright", "dark", "soft", "sharp",
];
const NOUNS: [&str; 16] = [
    "lamp", "chair", "table", "kettle", "clock", "mirror", "shelf", "radio", "bottle", "basket",
    "candle", "ladder", "pillow", "bucket", "drawer", "window",
];
const CHUNK: usize = 5_000;

fn item(i: usize, extra_tag: Option<&str>) -> ItemFields {
    let rare = i.is_multiple_of(10_000);
    let mut name = format!("{} {} {i}", ADJECTIVES[i % 16], NOUNS[(i / 16) % 16]);
    let mut tags = vec![format!("group-{}", i % 100)];
    if i.is_multiple_of(2) {
        tags.push("common".to_owned());
    }
    if rare {
        name.push_str(" zebracorn");
        tags.push("rare".to_owned());
    }
    tags.extend(extra_tag.map(str::to_owned));
    let description = i
        .is_multiple_of(10)
        .then(|| format!("seeded item number {i}"));
    ItemFields::parse(&name, description.as_deref(), &tags).expect("generated fields are valid")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let usage = "usage: DATABASE_URL=<sqlite:… or postgres:…> seed-items <count> [--tag <tag>]";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let extra_tag = match args.get(1..) {
        Some([]) | None => None,
        Some([flag, tag]) if flag == "--tag" => match Tag::parse(tag, "--tag") {
            Ok(_) => Some(tag.as_str()),
            Err(e) => {
                eprintln!("seed-items: --tag: {}", e.message);
                return std::process::ExitCode::from(2);
            }
        },
        Some(_) => {
            eprintln!("{usage}");
            return std::process::ExitCode::from(2);
        }
    };
    let (Some(count), Ok(url)) = (
        args.first().and_then(|n| n.parse::<usize>().ok()),
        std::env::var("DATABASE_URL"),
    ) else {
        eprintln!("{usage}");
        return std::process::ExitCode::from(2);
    };
    let config = StoreConfig {
        url,
        max_connections: 2,
        max_readers: 2,
        acquire_timeout: Duration::from_secs(30),
        idempotency_ttl: Duration::from_secs(86_400),
        // No request waits on seeding; a batch may take long on a busy database.
        request_timeout: Duration::from_secs(600),
    };
    let store = match Store::connect(&config).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("seed-items: cannot open the database (DATABASE_URL): {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut seeded = 0;
    while seeded < count {
        let end = (seeded + CHUNK).min(count);
        let batch: Vec<ItemFields> = (seeded..end).map(|i| item(i, extra_tag)).collect();
        if let Err(e) = store.create_many(batch).await {
            eprintln!("seed-items: writing items {seeded}..{end} failed: {e}");
            return std::process::ExitCode::FAILURE;
        }
        seeded = end;
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await;
    println!(
        "{}",
        serde_json::json!({
            "seeded": seeded,
            "seconds": seconds,
            "per_second": seeded as f64 / seconds,
            "backend": format!("{:?}", store.backend()).to_lowercase(),
        })
    );
    std::process::ExitCode::SUCCESS
}
