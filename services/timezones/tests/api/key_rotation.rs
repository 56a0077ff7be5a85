//! The admin key of timezones follows the same policy as items' write key: a minimum length,
//! wrong keys refused, and a second key so it rotates without a restart or a refusal.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use platform::Env;
use timezones::configuration::Settings;

use crate::helpers::{TestApp, expect_problem, spawn_app_with};

const OLD: &str = "timezones-old-admin-key-01";
const NEW: &str = "timezones-new-admin-key-02";
const DEADLINE: Duration = Duration::from_secs(10);

fn key_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "meridian-tz-keys-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Replaces a key file in one step (write aside, rename over), as a Secret volume update is
/// atomic; `None` removes it.
fn put_key(path: &std::path::Path, key: Option<&str>) {
    match key {
        Some(key) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, key).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        None => std::fs::remove_file(path).unwrap(),
    }
}

async fn admin_status(app: &TestApp, key: &str) -> u16 {
    app.client
        .get(format!("{}/admin/faults", app.address))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `key` gets `want`, asserting every round that `steady` is still accepted.
async fn wait_for(app: &TestApp, key: &str, want: u16, steady: &str) {
    let started = Instant::now();
    loop {
        assert_eq!(admin_status(app, steady).await, 200, "the steady key");
        if admin_status(app, key).await == want {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "no reload within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_admin_key_rotates_without_a_restart_or_a_refusal() {
    let dir = key_dir();
    let (current, next) = (dir.join("dummy-api-key"), dir.join("dummy-api-key-next"));
    put_key(&current, Some(OLD));
    let app = spawn_app_with(&[
        ("DUMMY_API_KEY_FILE", current.to_str().unwrap()),
        ("DUMMY_API_KEY_NEXT_FILE", next.to_str().unwrap()),
        ("API_KEY_RELOAD_MS", "50"),
    ])
    .await;
    assert_eq!(admin_status(&app, OLD).await, 200);
    let wrong = app
        .client
        .put(format!("{}/admin/faults", app.address))
        .header("x-api-key", NEW)
        .json(&serde_json::json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap();
    expect_problem(wrong, 403).await;

    put_key(&next, Some(NEW));
    wait_for(&app, NEW, 200, OLD).await;
    put_key(&current, Some(NEW));
    put_key(&next, Some(OLD));
    assert_eq!(admin_status(&app, NEW).await, 200);
    put_key(&next, None);
    wait_for(&app, OLD, 403, NEW).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_admin_key_stops_the_start_without_echoing_it() {
    // Before this policy, timezones took any key, however short, and it unlocked the switch.
    for (name, value) in [
        ("DUMMY_API_KEY", "letmein"),
        ("DUMMY_API_KEY_NEXT", "letmein"),
    ] {
        let env = Env::from_pairs([("DUMMY_API_KEY", OLD), (name, value)]);
        let err = Settings::from_env(&env).unwrap_err();
        assert_eq!(err.setting, name);
        assert!(err.reason.contains("at least 16"), "{err}");
        assert!(!err.to_string().contains("letmein"), "{err}");
    }
}
