//! The auth path on one core: `Authorization` header parse + auth-cache lookup + the
//! auth-check component (warm instance) + the rate limiter — exactly what every request
//! pays — next to the same decision made natively, and next to a fresh instance per check.
//!
//! `cargo bench -p imgfleet-tests --bench auth [-- --checks N --keys K]` (needs the
//! components: `./dev.sh build-wasm`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use imgfleet_auth::{CheckRequest, Scope};
use imgfleet_host::data_plane::auth_cache::AuthCache;
use imgfleet_host::data_plane::gate::Gate;
use imgfleet_host::execution::manifest::Manifest;
use imgfleet_host::execution::runtime::{InvokeRequest, Runtime, RuntimeConfig};
use imgfleet_stores::identity::IdentityStore;
use imgfleet_stores::identity::admin::create_key;
use imgfleet_stores::identity::sqlite::SqliteIdentityStore;
use imgfleet_tests::bench::arg;
use imgfleet_tests::host::repo_root;

struct Row {
    name: &'static str,
    micros: Vec<f64>,
    wall: Duration,
}

impl Row {
    fn print(&mut self) {
        self.micros.sort_by(f64::total_cmp);
        let p = |q: f64| self.micros[((self.micros.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} |",
            self.name,
            self.micros.len() as f64 / self.wall.as_secs_f64(),
            p(0.5),
            p(0.99),
            p(0.999)
        );
    }
}

async fn timed<F, Fut>(name: &'static str, n: usize, mut f: F) -> Row
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for i in 0..n / 10 {
        f(i).await; // warm-up
    }
    let mut micros = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i).await;
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Row {
        name,
        micros,
        wall: started.elapsed(),
    }
}

fn main() -> anyhow::Result<()> {
    let checks = arg("--checks", 50_000);
    let key_count = arg("--keys", 1000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let store = SqliteIdentityStore::open(&dir.path().join("identity.sqlite"))?;
        let mut keys = Vec::new();
        for t in 0..10 {
            store.create_tenant(&format!("tenant-{t}")).await?;
        }
        for i in 0..key_count {
            let k = create_key(&store, &format!("tenant-{}", i % 10), None, None).await?;
            keys.push(format!("Bearer {}", k.api_key));
        }
        let cache = AuthCache::new(Duration::from_secs(1));
        cache.sync(&store).await?;
        let manifest = Manifest::load(&repo_root().join("spin.toml"))?;
        let runtime = Runtime::new(
            &manifest,
            RuntimeConfig {
                deadline: Duration::from_secs(5),
                memory_limit_bytes: 256 << 20,
                max_instances: 8,
            },
        )?;
        let gate = Arc::new(Gate::new(runtime.clone(), cache.clone(), 1)?);

        println!("{checks} checks on one thread, {key_count} keys of 10 tenants in the cache");
        println!();
        println!("| path | checks/s | p50 µs | p99 µs | p99.9 µs |");
        println!("|---|---:|---:|---:|---:|");
        let mut rows = Vec::new();
        rows.push(
            timed(
                "allow: header + cache + auth-check (warm WASM instance)",
                checks,
                |i| {
                    let gate = gate.clone();
                    let header = keys[i % keys.len()].clone();
                    async move {
                        let grant = gate.check(Some(header.as_bytes()), Scope::Resize).await;
                        assert!(grant.is_ok(), "{grant:?}");
                    }
                },
            )
            .await,
        );
        let unknown = format!("Bearer ifk_{}_{}", "0".repeat(16), "1".repeat(64));
        rows.push(
            timed("deny (unknown key): same path", checks, |_| {
                let gate = gate.clone();
                let header = unknown.clone();
                async move {
                    assert!(
                        gate.check(Some(header.as_bytes()), Scope::Resize)
                            .await
                            .is_err()
                    );
                }
            })
            .await,
        );
        rows.push(
            timed("allow: same decision natively (no WASM)", checks, |i| {
                let header = keys[i % keys.len()].clone();
                let cache = cache.clone();
                async move {
                    let cred = imgfleet_auth::parse_authorization(Some(header.as_bytes())).unwrap();
                    let (key, tenant) = cache.lookup(cred.key_id);
                    let req = CheckRequest {
                        authorization: Some(header.clone()),
                        scope: Scope::Resize,
                        key,
                        tenant,
                        usage: Default::default(),
                    };
                    assert!(matches!(
                        imgfleet_auth::check(&req),
                        imgfleet_auth::Decision::Allow(_)
                    ));
                }
            })
            .await,
        );
        let fresh_n = (checks / 10).max(1000);
        rows.push(
            timed(
                "allow: fresh instance per check (for comparison)",
                fresh_n,
                |i| {
                    let runtime = runtime.clone();
                    let header = keys[i % keys.len()].clone();
                    let cache = cache.clone();
                    async move {
                        let cred =
                            imgfleet_auth::parse_authorization(Some(header.as_bytes())).unwrap();
                        let (key, tenant) = cache.lookup(cred.key_id);
                        let body = serde_json::to_vec(&CheckRequest {
                            authorization: Some(header.clone()),
                            scope: Scope::Resize,
                            key,
                            tenant,
                            usage: Default::default(),
                        })
                        .unwrap();
                        let inv = runtime
                            .invoke(
                                "auth-check",
                                InvokeRequest {
                                    method: http::Method::POST,
                                    path_and_query: "/".into(),
                                    headers: http::HeaderMap::new(),
                                    body: body.into(),
                                },
                            )
                            .await
                            .unwrap();
                        assert!(inv.body.starts_with(b"{\"decision\":\"allow\""));
                    }
                },
            )
            .await,
        );
        for row in &mut rows {
            row.print();
        }
        anyhow::Ok(())
    })
}
