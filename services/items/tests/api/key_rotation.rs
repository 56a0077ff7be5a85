//! Rotating the write key without a window of refusals: keys mounted as files the way a
//! Kubernetes Secret volume provides them, changed while the app runs, never restarted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use platform::auth::KeyId;
use platform::{Env, Secret};
use serde_json::json;

use crate::helpers::{Db, Options, Timezones, expect_problem, spawn_app_with};
use items::configuration::Settings;

const OLD: &str = "rotation-old-key-0123456789";
const NEW: &str = "rotation-new-key-9876543210";
const CURRENT_FILE: &str = "dummy-api-key";
const NEXT_FILE: &str = "dummy-api-key-next";
/// The deployment secret key ids are computed under, so the test can compute them too.
const ID_SECRET: &str = "rotation-id-secret-0123";
/// How long a reload may take to show; the app re-reads every 50 ms here.
const DEADLINE: Duration = Duration::from_secs(10);

/// A directory laid out as the kubelet lays out a Secret volume: each key is a symlink
/// `name -> ..data/name`, `..data` is a symlink to a versioned directory, and an update writes a
/// new versioned directory and renames a fresh symlink over `..data`, so readers see either the
/// old set of files or the new one, never a mix. (Layout as in Kubernetes'
/// pkg/volume/util/atomic_writer.go.) A key absent from the Secret leaves a dangling symlink
/// here, which the app must read as "no such key".
struct SecretVolume {
    dir: PathBuf,
    version: u32,
}

impl SecretVolume {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("meridian-rotation-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in [CURRENT_FILE, NEXT_FILE] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        let mut volume = Self { dir, version: 0 };
        volume.update(files);
        volume
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    /// Replaces the whole content at once, as the kubelet does when the Secret changes.
    fn update(&mut self, files: &[(&str, &str)]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        std::fs::create_dir(self.dir.join(&version)).unwrap();
        for (name, content) in files {
            std::fs::write(self.dir.join(&version).join(name), content).unwrap();
        }
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&version, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }
}

impl Drop for SecretVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn secret_status(app: &crate::helpers::TestApp, key: &str) -> u16 {
    app.client
        .get(app.url("/v1/secret"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `key` gets `want` from `/v1/secret`, asserting on every round that `steady`
/// (the key clients rely on meanwhile) is accepted: a refusal of it would be the 401/403
/// window a rotation must not have.
async fn wait_for(app: &crate::helpers::TestApp, key: &str, want: u16, steady: &str) {
    let started = Instant::now();
    loop {
        assert_eq!(secret_status(app, steady).await, 200, "the steady key");
        if secret_status(app, key).await == want {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the key change was not picked up within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_with(app: &crate::helpers::TestApp, key: &str) -> u16 {
    app.client
        .post(app.url("/v1/items"))
        .header("x-api-key", key)
        .json(&json!({"name": "rotated"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_file_mounted_key_rotates_without_a_restart_or_a_refusal() {
    let mut volume = SecretVolume::new(&[(CURRENT_FILE, OLD)]);
    let app = spawn_app_with(Options {
        db: Db::Sqlite,
        timezones: Timezones::Down,
        env: vec![
            ("DUMMY_API_KEY", String::new()),
            ("DUMMY_API_KEY_FILE", volume.path(CURRENT_FILE)),
            ("DUMMY_API_KEY_NEXT_FILE", volume.path(NEXT_FILE)),
            ("API_KEY_RELOAD_MS", "50".to_owned()),
            ("API_KEY_ID_SECRET", ID_SECRET.to_owned()),
        ],
    })
    .await;
    assert_eq!(secret_status(&app, OLD).await, 200);
    expect_problem(
        app.client
            .get(app.url("/v1/secret"))
            .header("x-api-key", NEW)
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;

    // 1. The next key is added to the Secret: both keys work, the old one throughout.
    volume.update(&[(CURRENT_FILE, OLD), (NEXT_FILE, NEW)]);
    wait_for(&app, NEW, 200, OLD).await;
    assert_eq!(create_with(&app, OLD).await, 201);
    assert_eq!(create_with(&app, NEW).await, 201);

    // 2. Clients have moved; the keys are swapped: the old key is now the previous one.
    volume.update(&[(CURRENT_FILE, NEW), (NEXT_FILE, OLD)]);
    for _ in 0..5 {
        assert_eq!(secret_status(&app, NEW).await, 200);
        assert_eq!(secret_status(&app, OLD).await, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 3. The previous key is removed: it is refused, the new one works throughout.
    volume.update(&[(CURRENT_FILE, NEW)]);
    wait_for(&app, OLD, 403, NEW).await;
    assert_eq!(create_with(&app, OLD).await, 403);
    assert_eq!(create_with(&app, NEW).await, 201);

    // Each key's uses are counted under its fingerprint (what the runbook watches before
    // removing a key); neither the metrics nor anything else shows the key itself.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for key in [OLD, NEW] {
        let label = format!("key_id=\"{}\"", KeyId::of(key, &Secret::new(ID_SECRET)));
        let uses: f64 = metrics
            .lines()
            .find(|l| l.starts_with("api_key_requests_total{") && l.contains(&label))
            .unwrap_or_else(|| panic!("no api_key_requests_total with {label}:\n{metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(uses >= 3.0, "{label}: {uses}");
        assert!(!metrics.contains(key), "the metrics never show a key");
    }

    app.stop().await;
}

#[tokio::test]
async fn an_unusable_key_file_keeps_the_keys_in_force() {
    let mut volume = SecretVolume::new(&[(CURRENT_FILE, OLD)]);
    let app = spawn_app_with(Options {
        db: Db::Sqlite,
        timezones: Timezones::Down,
        env: vec![
            ("DUMMY_API_KEY", String::new()),
            ("DUMMY_API_KEY_FILE", volume.path(CURRENT_FILE)),
            ("DUMMY_API_KEY_NEXT_FILE", volume.path(NEXT_FILE)),
            ("API_KEY_RELOAD_MS", "50".to_owned()),
        ],
    })
    .await;
    // A short current key arrives together with a valid next key. The whole update is refused
    // (the current key would break the policy), so the next key is not taken either, and the
    // old key still works. That the update was looked at is shown by what follows: once the
    // current key is fixed, the next key is taken within the deadline.
    volume.update(&[(CURRENT_FILE, "too-short"), (NEXT_FILE, NEW)]);
    for _ in 0..5 {
        assert_eq!(secret_status(&app, OLD).await, 200);
        assert_eq!(secret_status(&app, NEW).await, 403);
        assert_eq!(secret_status(&app, "too-short").await, 403);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    volume.update(&[(CURRENT_FILE, OLD), (NEXT_FILE, NEW)]);
    wait_for(&app, NEW, 200, OLD).await;
    app.stop().await;
}

#[test]
fn every_key_is_held_to_the_minimum_length_at_start() {
    let volume = SecretVolume::new(&[(CURRENT_FILE, OLD), (NEXT_FILE, "short-next-key")]);
    let base = [("SECRET_MESSAGE", "s")];
    let next_file = volume.path(NEXT_FILE);
    let cases = [
        (vec![("DUMMY_API_KEY", "short-key")], "DUMMY_API_KEY"),
        (
            vec![("DUMMY_API_KEY", OLD), ("DUMMY_API_KEY_NEXT", "short-key")],
            "DUMMY_API_KEY_NEXT",
        ),
        (
            vec![
                ("DUMMY_API_KEY", OLD),
                ("DUMMY_API_KEY_NEXT_FILE", &next_file),
            ],
            "DUMMY_API_KEY_NEXT_FILE",
        ),
    ];
    for (pairs, setting) in cases {
        let env = Env::from_pairs(base.iter().copied().chain(pairs));
        let err = Settings::from_env(&env).unwrap_err();
        assert_eq!(err.setting, setting);
        assert!(
            !err.to_string().contains("short-"),
            "never the value: {err}"
        );
    }
}
