//! What the fuzz targets hold the code to. Shared, by path, with the test suite's replay of
//! the seed corpus and of every input a fuzzer ever found (tests/e2e/fuzz_replay.rs), so a
//! crash once found stays a regression test.

use imgfleet_resize::ResizeParams;
use imgfleet_resize::http::{HttpRequest, handle};
use imgfleet_resize::params::{ImageFormat, negotiate};

/// Small limits keep each run fast and inside libFuzzer's memory cap; the limits
/// themselves are part of what is exercised.
const LIMITS: &str = "max_input_bytes=1000000,max_input_pixels=4000000,max_output_side=2048,max_decode_alloc=64000000";

fn is_error_envelope(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v["error"]["code"].is_string())
}

/// The resize entry point with any bytes and any parameters: it must answer, never panic,
/// and never blame itself (a 500 means a bug in imgfleet, not a bad request).
///
/// Input: `<query>\n<accept>\n<body>`; the seeds are real images behind real queries, so
/// mutations start inside the decoders and the pipeline. Returns the status.
pub fn resize(data: &[u8]) -> u16 {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let query = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let accept = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or_default();
    let response = handle(HttpRequest {
        method: "POST",
        query: &query,
        accept: accept.as_deref().filter(|a| !a.is_empty()),
        limits: Some(LIMITS),
        body,
    });
    assert_ne!(
        response.status,
        500,
        "an internal error for query {query:?}: {}",
        String::from_utf8_lossy(&response.body)
    );
    if response.status != 200 {
        assert!(
            is_error_envelope(&response.body),
            "status {}",
            response.status
        );
    }
    response.status
}

const FORMATS: [ImageFormat; 4] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::Webp,
    ImageFormat::Gif,
];

/// Everything that parses what a client or a peer sends: resize query strings and Accept
/// headers, Authorization headers, and the JSON bodies of auth-check and metering. Each
/// must refuse cleanly and keep its promises on what it accepts.
///
/// Input: `<query> 0xFF <accept> 0xFF <authorization> 0xFF <auth-check body> 0xFF
/// <metering body>` (0xFF never occurs in UTF-8, so seeds stay readable).
pub fn request(data: &[u8]) {
    let mut parts = data.splitn(5, |&b| b == 0xFF);
    let mut next = || parts.next().unwrap_or_default();
    let (query, accept, authorization, auth_body, usage_body) =
        (next(), next(), next(), next(), next());

    let query = String::from_utf8_lossy(query);
    if let Err(e) = ResizeParams::from_query(&query) {
        assert_eq!(e.status(), 400, "a bad query is the client's fault: {e}");
    }
    let accept = String::from_utf8_lossy(accept);
    for format in FORMATS {
        negotiate(Some(&accept), format);
    }

    // An accepted key has exactly the documented shape, and reads back the same.
    if let Ok(c) = imgfleet_auth::parse_authorization(Some(authorization)) {
        assert_eq!((c.key_id.len(), c.secret.len()), (16, 64));
        let again = format!("Bearer ifk_{}_{}", c.key_id, c.secret);
        assert_eq!(
            imgfleet_auth::parse_authorization(Some(again.as_bytes())),
            Ok(c)
        );
    }

    let auth = imgfleet_auth::http::handle("POST", auth_body);
    assert!(
        auth.status == 200 || (auth.status == 400 && is_error_envelope(&auth.body)),
        "auth-check answered {}",
        auth.status
    );

    // Metering accounts for every record it is given: kept, duplicate or rejected.
    let usage = imgfleet_metering::http::handle("POST", usage_body);
    match serde_json::from_slice::<imgfleet_metering::http::FoldRequest>(usage_body) {
        Ok(req) => {
            assert_eq!(usage.status, 200);
            let folded: imgfleet_metering::Folded =
                serde_json::from_slice(&usage.body).expect("a fold reads back");
            let given = req.batch.records.len() as u64;
            let accounted =
                folded.accepted.len() as u64 + folded.duplicates + folded.rejected.len() as u64;
            assert_eq!(accounted, given, "records lost or invented");
            let requests: u64 = folded.rollups.iter().map(|r| r.requests).sum();
            assert_eq!(requests, folded.accepted.len() as u64);
        }
        Err(_) => assert!(usage.status == 400 && is_error_envelope(&usage.body)),
    }
}

/// The embedded queue's recovery with any bytes as its log: opening never panics and never
/// refuses, what it recovered can be received, deleted and added to, the store says it can
/// take writes, and the log it leaves behind holds no damage for the next start to meet.
pub fn queue_log(data: &[u8]) {
    use imgfleet_queue::embedded::EmbeddedStore;
    use imgfleet_queue::{OutgoingMessage, QueueSpec, ReceiveRequest};

    let dir = tempfile::tempdir().expect("a scratch directory");
    std::fs::write(dir.path().join("queue.log"), data).expect("writing the log");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let store = EmbeddedStore::open(dir.path()).expect("any log opens");
        assert!(store.health().is_ok(), "{:?}", store.health());
        let q = store
            .queue(QueueSpec::new("q"))
            .await
            .expect("a queue opens");
        for _ in 0..3 {
            let got = q
                .receive(ReceiveRequest {
                    max_messages: 10,
                    ..Default::default()
                })
                .await
                .expect("receive");
            for m in got {
                q.delete(&m.receipt)
                    .await
                    .expect("delete of a fresh receipt");
            }
        }
        q.send(OutgoingMessage::new("after recovery"))
            .await
            .expect("send after recovery");
        q.depth().await.expect("depth");
    });
    drop(rt);
    let again = EmbeddedStore::open(dir.path()).expect("the recovered log opens");
    let log = &again.recovery().log;
    assert_eq!(
        (log.damaged_bytes, log.torn_tail_bytes),
        (0, 0),
        "the recovered log is whole: {log:?}"
    );
}
