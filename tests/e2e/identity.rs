//! Identity end to end: per-tenant keys, isolation between tenants, revocation within the
//! SLA, the identity store going away, bad credentials, scopes, rate limits, quotas, audit.

use std::process::Command;
use std::time::{Duration, Instant};

use imgfleet_tests::host::{ADMIN_TOKEN, Host, binary, get, post, request};
use imgfleet_tests::images;

fn small_jpeg() -> Vec<u8> {
    images::jpeg(&images::photo(64, 48, 1), 80)
}

/// Runs an operator command on the host's data directory (another process, like an
/// operator's shell would).
fn operator(h: &Host, args: &[&str]) -> serde_json::Value {
    let out = Command::new(binary())
        .arg(args[0])
        .arg("--data-dir")
        .arg(h.data.path())
        .args(&args[1..])
        .output()
        .expect("running imgfleet");
    assert!(
        out.status.success(),
        "imgfleet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Sends `attempt` until it returns `want` or `within` passes; returns how long it took.
fn until(within: Duration, want: (u16, &str), attempt: impl Fn() -> (u16, String)) -> Duration {
    let started = Instant::now();
    loop {
        let got = attempt();
        if (got.0, got.1.as_str()) == want {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "still {got:?} after {within:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn code(r: &imgfleet_tests::host::Reply) -> String {
    if r.status < 400 {
        String::new()
    } else {
        r.error_code()
    }
}

#[test]
fn no_tenant_can_reach_another_tenants_jobs_outputs_or_usage() {
    let h = Host::start("spin.toml", &[]);
    let other = h.tenant_key("tenant-b");
    let src = small_jpeg();

    let r = h.post("/v1/jobs?w=16", &src, &[]);
    assert_eq!(r.status, 202);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.get(&format!("/v1/jobs/{id}")).json()["status"] == "queued" {
        assert!(Instant::now() < deadline, "job never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(h.get(&format!("/v1/jobs/{id}/output")).status, 200);
    assert_eq!(h.post("/v1/resize?w=8", &src, &[]).status, 200);

    // The other tenant sees exactly what it would see for a job that does not exist.
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/output")] {
        let theirs = h.get_as(&other, &path);
        let missing = h.get_as(
            &other,
            &path.replace(&id, "01a2227f-0000-7000-8000-000000000000"),
        );
        assert_eq!(
            (theirs.status, code(&theirs)),
            (404, "not_found".into()),
            "{path}"
        );
        assert_eq!(theirs.status, missing.status);
        assert!(!String::from_utf8_lossy(&theirs.body).contains("done"));
    }
    // Usage is always the caller's own (it shows up once its batch is folded: seconds).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mine = loop {
        let mine = h.get("/v1/usage?granularity=hour").json();
        let requests: u64 = mine["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["requests"].as_u64().unwrap())
            .sum();
        if requests >= 2 {
            break mine;
        }
        assert!(Instant::now() < deadline, "no usage yet: {mine}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(mine["tenant"], "tenant-a");
    let theirs = h.get_as(&other, "/v1/usage").json();
    assert_eq!(theirs["tenant"], "tenant-b");
    // tenant-b has made only status and output requests, all refused: nothing of tenant-a's.
    let bytes_in: u64 = theirs["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bytes_in"].as_u64().unwrap())
        .sum();
    assert_eq!(bytes_in, 0, "{theirs}");
    let sneaky = h.get_as(&other, "/v1/usage?tenant=tenant-a");
    assert_eq!(
        (sneaky.status, code(&sneaky)),
        (400, "invalid_request".into())
    );
    // A client-chosen request id cannot name or collide with another tenant's job.
    let r = h.post_as(&other, "/v1/jobs?w=16", &src, &[("x-request-id", &id)]);
    assert_eq!(r.status, 202);
    assert_ne!(r.json()["id"].as_str().unwrap(), id);
}

#[test]
fn revocation_and_disabling_are_enforced_within_the_sla() {
    let h = Host::start("spin.toml", &[]);
    let src = small_jpeg();
    let resize = |key: &str| {
        let r = h.post_as(key, "/v1/resize?w=8", &src, &[]);
        (r.status, code(&r))
    };
    // Changes made by an operator in another process reach the running host through the
    // change log.
    let key = h.tenant_key("tenant-r");
    assert_eq!(resize(&key).0, 200);
    let key_id = key.split('_').nth(1).unwrap();
    operator(&h, &["keys", "revoke", key_id]);
    let took = until(Duration::from_secs(5), (401, "key_revoked"), || {
        resize(&key)
    });
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");

    let key = h.tenant_key("tenant-d");
    assert_eq!(resize(&key).0, 200);
    operator(&h, &["tenants", "disable", "tenant-d"]);
    let took = until(Duration::from_secs(5), (403, "tenant_disabled"), || {
        resize(&key)
    });
    assert!(took < Duration::from_secs(1), "disabling took {took:?}");
    operator(&h, &["tenants", "enable", "tenant-d"]);
    until(Duration::from_secs(5), (200, ""), || resize(&key));

    // Through the admin API the change is in force on this host before the answer.
    let key = h.tenant_key("tenant-x");
    let key_id = key.split('_').nth(1).unwrap();
    let r = h.admin("POST", &format!("/admin/keys/{key_id}/revoke"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["revoked"], true);
    assert_eq!(resize(&key), (401, "key_revoked".into()));
    // The other tenants are untouched.
    assert_eq!(resize(&h.key).0, 200);
}

#[test]
fn with_the_identity_store_gone_cached_keys_work_and_admin_writes_fail_clearly() {
    let h = Host::start("spin.toml", &["--auth-sla-ms", "500"]);
    let src = small_jpeg();
    assert_eq!(h.post("/v1/resize?w=8", &src, &[]).status, 200);

    // The store's file is taken away (as by an operator or a failed volume).
    let store = h.data.path().join("identity.sqlite");
    let aside = h.data.path().join("identity.sqlite.away");
    std::fs::rename(&store, &aside).unwrap();

    let r = h.admin(
        "POST",
        "/admin/tenants",
        Some(serde_json::json!({ "id": "late" })),
    );
    assert_eq!(
        (r.status, code(&r)),
        (503, "identity_store_unavailable".into())
    );
    assert!(r.header("retry-after").is_some());
    let r = h.admin("POST", "/admin/tenants/tenant-a/keys", None);
    assert_eq!(
        (r.status, code(&r)),
        (503, "identity_store_unavailable".into())
    );
    // Requests keep being served from the cache, which reports itself stale.
    until(Duration::from_secs(5), (503, ""), || {
        (get(&h.url("/readyz")).status, String::new())
    });
    assert_eq!(h.post("/v1/resize?w=8", &src, &[]).status, 200);
    let health = get(&h.url("/healthz")).json();
    assert_eq!(health["auth_cache"]["stale"], true, "{health}");
    let metrics = String::from_utf8(get(&h.url("/metrics")).body).unwrap();
    assert!(metrics.contains("imgfleet_auth_cache_stale 1"), "{metrics}");
    let unknown = h.post_as(
        &format!("ifk_{}_{}", "0".repeat(16), "0".repeat(64)),
        "/v1/resize?w=8",
        &src,
        &[],
    );
    assert_eq!(
        (unknown.status, code(&unknown)),
        (401, "key_unknown".into())
    );

    // The store returns: writes work again and the cache catches up.
    std::fs::rename(&aside, &store).unwrap();
    until(Duration::from_secs(5), (200, ""), || {
        (get(&h.url("/readyz")).status, String::new())
    });
    let key = h.tenant_key("late");
    assert_eq!(h.post_as(&key, "/v1/resize?w=8", &src, &[]).status, 200);
}

#[test]
fn bad_credentials_get_401_with_a_code_and_admin_takes_only_its_token() {
    let h = Host::start("spin.toml", &[]);
    let src = small_jpeg();
    let url = h.url("/v1/resize?w=8");
    let valid_shape = format!("ifk_{}_{}", "a".repeat(16), "b".repeat(64));
    let wrong_secret = {
        let (id, _) = h.key.rsplit_once('_').unwrap();
        format!("{id}_{}", "c".repeat(64))
    };
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "credential_missing"),
        (Some("".into()), "credential_missing"),
        (Some("Basic dXNlcjpwYXNz".into()), "credential_scheme"),
        (Some(h.key.clone()), "credential_scheme"),
        (Some("Bearer".into()), "credential_malformed"),
        (Some("Bearer not-a-key".into()), "credential_malformed"),
        (
            Some(format!("Bearer {}", "x".repeat(600))),
            "credential_malformed",
        ),
        (Some(format!("Bearer {valid_shape}")), "key_unknown"),
        (Some(format!("Bearer {wrong_secret}")), "key_unknown"),
    ];
    for (header, want) in cases {
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|v| vec![("authorization", v)])
            .unwrap_or_default();
        let r = post(&url, &src, &headers);
        assert_eq!(
            (r.status, r.error_code()),
            (401, want.to_string()),
            "{header:?}"
        );
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"imgfleet\"")
        );
    }
    // Nothing under /v1 answers without a key.
    assert_eq!(get(&h.url("/v1/jobs/x")).status, 401);
    assert_eq!(get(&h.url("/v1/usage")).status, 401);

    let admin = h.url("/admin/tenants");
    let tenant_key = format!("Bearer {}", h.key);
    let r = request("GET", &admin, b"", &[("authorization", &tenant_key)]);
    assert_eq!(
        (r.status, r.error_code()),
        (403, "admin_credential_required".into())
    );
    let r = request("GET", &admin, b"", &[]);
    assert_eq!(
        (r.status, r.error_code()),
        (401, "credential_missing".into())
    );
    let r = request("GET", &admin, b"", &[("authorization", "Bearer wrong")]);
    assert_eq!(
        (r.status, r.error_code()),
        (401, "admin_credential_invalid".into())
    );
    let r = request(
        "GET",
        &admin,
        b"",
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(r.status, 200);
    // The admin token is no tenant key either.
    let r = post(
        &url,
        &src,
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(
        (r.status, r.error_code()),
        (401, "credential_malformed".into())
    );
    // Keys are never listed with their secret or its hash.
    let listed =
        String::from_utf8(h.admin("GET", "/admin/tenants/tenant-a/keys", None).body).unwrap();
    let secret = h.key.rsplit('_').next().unwrap();
    assert!(
        !listed.contains(secret) && !listed.contains("hash"),
        "{listed}"
    );
    // Bad admin input is a 400 with a code, not a 500.
    let r = h.admin(
        "POST",
        "/admin/tenants",
        Some(serde_json::json!({ "id": "Not Valid" })),
    );
    assert_eq!((r.status, r.error_code()), (400, "invalid_request".into()));
    let r = h.admin(
        "PUT",
        "/admin/tenants/tenant-a/quota",
        Some(serde_json::json!({ "rps": 1 })),
    );
    assert_eq!((r.status, r.error_code()), (400, "invalid_request".into()));
    let r = h.admin("POST", "/admin/tenants/nobody/keys", None);
    assert_eq!((r.status, r.error_code()), (404, "not_found".into()));
}

#[test]
fn scopes_rate_limits_and_monthly_quotas_are_enforced_per_tenant() {
    let h = Host::start("spin.toml", &[]);
    let src = small_jpeg();

    h.tenant_key("scoped");
    let r = h.admin(
        "POST",
        "/admin/tenants/scoped/keys",
        Some(serde_json::json!({ "scopes": ["jobs"] })),
    );
    let jobs_only = r.json()["api_key"].as_str().unwrap().to_string();
    let r = h.post_as(&jobs_only, "/v1/resize?w=8", &src, &[]);
    assert_eq!((r.status, code(&r)), (403, "scope_denied".into()));
    assert_eq!(h.post_as(&jobs_only, "/v1/jobs?w=8", &src, &[]).status, 202);

    let slow = h.tenant_key("slow");
    let r = h.admin(
        "PUT",
        "/admin/tenants/slow/quota",
        Some(serde_json::json!({ "requests_per_second": 2 })),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let statuses: Vec<(u16, Option<String>)> = (0..6)
        .map(|_| {
            let r = h.post_as(&slow, "/v1/resize?w=8", &src, &[]);
            (r.status, r.header("retry-after").map(str::to_string))
        })
        .collect();
    let limited: Vec<_> = statuses.iter().filter(|s| s.0 == 429).collect();
    assert!(!limited.is_empty(), "{statuses:?}");
    assert!(
        limited.iter().all(|s| s.1.as_deref() == Some("1")),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| s.0 == 200).count() >= 2,
        "{statuses:?}"
    );
    // Another tenant is not slowed down by it.
    for _ in 0..6 {
        assert_eq!(h.post("/v1/resize?w=8", &src, &[]).status, 200);
    }

    let capped = h.tenant_key("capped");
    let r = h.admin(
        "PUT",
        "/admin/tenants/capped/quota",
        Some(serde_json::json!({ "monthly_bytes": src.len() })),
    );
    assert_eq!(r.status, 200);
    assert_eq!(h.post_as(&capped, "/v1/resize?w=8", &src, &[]).status, 200);
    let r = h.post_as(&capped, "/v1/resize?w=8", &src, &[]);
    assert_eq!((r.status, code(&r)), (429, "quota_exceeded".into()));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=31 * 86_400).contains(&retry), "{retry}");

    // Pixel quota: output pixels count.
    let pixels = h.tenant_key("pixels");
    h.admin(
        "PUT",
        "/admin/tenants/pixels/quota",
        Some(serde_json::json!({ "monthly_pixels": 100 })),
    );
    assert_eq!(h.post_as(&pixels, "/v1/resize?w=16", &src, &[]).status, 200);
    let r = h.post_as(&pixels, "/v1/resize?w=16", &src, &[]);
    assert_eq!((r.status, code(&r)), (429, "quota_exceeded".into()));
}

#[test]
fn every_request_is_audited_durably_and_queryable_by_admins() {
    let h = Host::start("spin.toml", &[]);
    let src = small_jpeg();
    let started = h.admin("GET", "/admin/tenants", None);
    assert_eq!(started.status, 200);
    let other = h.tenant_key("tenant-b");

    let ok = h.post("/v1/resize?w=8&fmt=png", &src, &[]);
    assert_eq!(ok.status, 200);
    let bad = h.post("/v1/resize?w=8&fit=banana", &src, &[]);
    assert_eq!(bad.status, 400);
    let theirs = h.post_as(&other, "/v1/resize?w=4", &src, &[]);
    let anonymous = post(&h.url("/v1/resize?w=8"), &src, &[]);
    assert_eq!(anonymous.status, 401);
    let ids: Vec<String> = [&ok, &bad, &theirs, &anonymous]
        .iter()
        .map(|r| r.header("x-request-id").unwrap().to_string())
        .collect();

    // Records survive the host being killed.
    let data = h.kill_9();
    let h = Host::start_in(data, "spin.toml", &[], &[]);
    let all = h.admin("GET", "/admin/audit", None).json();
    let find = |id: &str| {
        all["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no audit record for {id}: {all}"))
            .clone()
    };
    let rec = find(&ids[0]);
    assert_eq!(rec["tenant"], "tenant-a");
    assert_eq!(rec["status"], 200);
    assert_eq!(rec["query"], "w=8&fmt=png");
    assert_eq!(rec["input_bytes"], src.len() as u64);
    assert_eq!(rec["output_bytes"], ok.body.len() as u64);
    assert_eq!(rec["pixels"], 8 * 6);
    assert!(rec["key_id"].as_str().unwrap().len() == 16);
    let rec = find(&ids[1]);
    assert_eq!(
        (rec["status"].as_u64(), rec["code"].as_str()),
        (Some(400), Some("invalid_parameter"))
    );
    assert_eq!(find(&ids[2])["tenant"], "tenant-b");
    let rec = find(&ids[3]);
    assert_eq!(
        (rec["tenant"].is_null(), rec["code"].as_str()),
        (true, Some("credential_missing"))
    );

    // Filtered by tenant and time.
    let at = find(&ids[0])["at_ms"].as_u64().unwrap();
    let mine = h
        .admin(
            "GET",
            &format!("/admin/audit?tenant=tenant-a&from={at}&to={}", at + 60_000),
            None,
        )
        .json();
    let mine: Vec<&str> = mine["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["tenant"], "tenant-a");
            r["request_id"].as_str().unwrap()
        })
        .collect();
    assert!(
        mine.contains(&ids[0].as_str()) && mine.contains(&ids[1].as_str()),
        "{mine:?}"
    );
    assert!(!mine.contains(&ids[2].as_str()));
    let none = h
        .admin("GET", &format!("/admin/audit?to={}", at), None)
        .json();
    assert!(
        none["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["at_ms"].as_u64() < Some(at))
    );
    let r = h.admin("GET", "/admin/audit?from=yesterday", None);
    assert_eq!((r.status, r.error_code()), (400, "invalid_request".into()));
}
