//! The Lambda functions end to end without AWS: every handler runs in-process against a
//! real SQS, DynamoDB and S3 API (moto_server, which `./dev.sh test` and `.ci/run` start; its
//! address comes in `IMGFLEET_TEST_SQS_ENDPOINT`). The tests play SQS's event source: they
//! receive messages, hand them to a function as Lambda would (the same JSON), and delete
//! the ones the function did not report as failed.

use std::time::Duration;

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use imgfleet_auth::Scope;
use imgfleet_lambda::deps::{Deps, Names};
use imgfleet_stores::aws::{AwsOptions, sdk_config};
use imgfleet_stores::dynamodb::ensure_table;
use imgfleet_stores::identity::{IdentityStore, NewKey};
use imgfleet_stores::usage::UsageStore;
use lambda_http::{Body, Request, Response};

struct Stack {
    deps: Deps,
    jobs_dlq_url: String,
    /// API keys of tenants `acme` and `other`.
    acme: String,
    other: String,
}

fn endpoint() -> String {
    std::env::var("IMGFLEET_TEST_SQS_ENDPOINT").expect(
        "IMGFLEET_TEST_SQS_ENDPOINT is not set: run the tests with ./dev.sh test, which starts moto_server",
    )
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str, dlq: Option<&str>, fifo: bool) -> String {
    let mut create = sqs.create_queue().queue_name(name);
    if fifo {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    if let Some(dlq_url) = dlq {
        let arn = sqs
            .get_queue_attributes()
            .queue_url(dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        // Short visibility so a failed message comes back within the test; two receives
        // before the dead-letter queue.
        create = create
            .attributes(QueueAttributeName::VisibilityTimeout, "1")
            .attributes(
                QueueAttributeName::RedrivePolicy,
                format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"2"}}"#),
            );
    }
    create.send().await.unwrap().queue_url.unwrap()
}

async fn key_for(deps: &Deps, tenant: &str) -> String {
    deps.identity.create_tenant(tenant).await.unwrap();
    // A v7 UUID's last eight bytes are random: enough for test keys.
    let random = || -> [u8; 8] { uuid::Uuid::now_v7().as_bytes()[8..].try_into().unwrap() };
    let secret: Vec<u8> = (0..4).flat_map(|_| random()).collect();
    let (key_id, api_key) = imgfleet_auth::credential::mint(random(), secret.try_into().unwrap());
    let plain_secret = api_key.rsplit('_').next().unwrap();
    deps.identity
        .insert_key(NewKey {
            key_id,
            tenant: tenant.into(),
            secret_hash: imgfleet_auth::credential::secret_hash(plain_secret),
            scopes: Scope::ALL.to_vec(),
            label: None,
            created_ms: 1,
        })
        .await
        .unwrap();
    api_key
}

/// Fresh tables, queues and bucket (moto keeps everything for its whole life).
async fn stack() -> Stack {
    let config = sdk_config(&AwsOptions {
        endpoint: Some(endpoint()),
        region: Some("us-east-1".into()),
        static_credentials: Some(("test".into(), "test".into())),
        call_timeout: Some(Duration::from_secs(60)),
        max_attempts: Some(10),
    })
    .await;
    let p = format!("t{}", &uuid::Uuid::now_v7().simple().to_string()[20..]);
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    for t in ["identity", "usage", "audit", "jobs"] {
        ensure_table(&dynamodb, &format!("{p}-{t}")).await.unwrap();
    }
    let sqs = aws_sdk_sqs::Client::new(&config);
    let jobs_dlq_url = queue(&sqs, &format!("{p}-jobs-dlq.fifo"), None, true).await;
    let jobs_queue_url = queue(&sqs, &format!("{p}-jobs.fifo"), Some(&jobs_dlq_url), true).await;
    let usage_dlq_url = queue(&sqs, &format!("{p}-usage-dlq"), None, false).await;
    let usage_queue_url = queue(&sqs, &format!("{p}-usage"), Some(&usage_dlq_url), false).await;
    let deps = Deps::new(
        &config,
        Names {
            identity_table: format!("{p}-identity"),
            usage_table: format!("{p}-usage"),
            audit_table: format!("{p}-audit"),
            jobs_table: format!("{p}-jobs"),
            jobs_queue_url,
            usage_queue_url,
            staging_bucket: format!("{p}-staging"),
        },
    );
    deps.s3
        .create_bucket()
        .bucket(&deps.names.staging_bucket)
        .send()
        .await
        .unwrap();
    let acme = key_for(&deps, "acme").await;
    let other = key_for(&deps, "other").await;
    Stack {
        deps,
        jobs_dlq_url,
        acme,
        other,
    }
}

fn jpeg(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

fn request(method: &str, uri: &str, key: Option<&str>, body: Vec<u8>) -> Request {
    let mut b = http::Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        b = b.header("authorization", format!("Bearer {key}"));
    }
    b.body(if body.is_empty() {
        Body::Empty
    } else {
        Body::Binary(body)
    })
    .unwrap()
}

fn json_of(r: &Response<Body>) -> serde_json::Value {
    serde_json::from_slice(r.body().as_ref()).unwrap_or_else(|_| {
        panic!(
            "not JSON ({}): {}",
            r.status(),
            String::from_utf8_lossy(r.body().as_ref())
        )
    })
}

fn code_of(r: &Response<Body>) -> String {
    json_of(r)["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// One poll of SQS's event source: up to ten messages, delivered to `function` as Lambda
/// would, successes deleted. Returns how many were delivered and the failures reported.
async fn deliver<F, Fut>(deps: &Deps, queue_url: &str, function: F) -> (usize, Vec<String>)
where
    F: FnOnce(SqsEvent) -> Fut,
    Fut: std::future::Future<Output = SqsBatchResponse>,
{
    let received = deps
        .sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let messages = received.messages.unwrap_or_default();
    if messages.is_empty() {
        return (0, Vec::new());
    }
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let attributes: serde_json::Map<String, serde_json::Value> = m
                .attributes()
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.as_str().to_string(), v.clone().into()))
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    let event: SqsEvent =
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap();
    let response = function(event).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    for m in &messages {
        if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
            deps.sqs
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
    (messages.len(), failed)
}

/// Runs the metering function until the usage queue is empty.
async fn meter_all(deps: &Deps) {
    let url = deps.names.usage_queue_url.clone();
    loop {
        let (n, failed) = deliver(deps, &url, |e| {
            imgfleet_lambda::metering::handle_batch(deps, e)
        })
        .await;
        assert!(failed.is_empty(), "metering failed: {failed:?}");
        if n == 0 {
            return;
        }
    }
}

async fn audit_rows(deps: &Deps, tenant: &str) -> Vec<serde_json::Value> {
    let out = deps
        .dynamodb
        .query()
        .table_name(&deps.names.audit_table)
        .key_condition_expression("pk = :t")
        .expression_attribute_values(
            ":t",
            aws_sdk_dynamodb::types::AttributeValue::S(tenant.into()),
        )
        .send()
        .await
        .unwrap();
    out.items()
        .iter()
        .map(|i| serde_json::from_str(i["record"].as_s().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_resize_answers_the_image_and_is_metered_and_audited() {
    let s = stack().await;
    let input = jpeg(400, 300);
    let mut req = request(
        "POST",
        "/v1/resize?w=100&fmt=png",
        Some(&s.acme),
        input.clone(),
    );
    req.headers_mut()
        .insert("x-request-id", "req-1".parse().unwrap());
    let r = imgfleet_lambda::api::handle(&s.deps, req).await;
    assert_eq!(
        r.status(),
        200,
        "{}",
        String::from_utf8_lossy(r.body().as_ref())
    );
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["x-request-id"], "req-1");
    assert!(
        r.headers().get("imgfleet-facts").is_none(),
        "internal header leaked"
    );
    let out = image::load_from_memory(r.body().as_ref()).unwrap();
    assert_eq!((out.width(), out.height()), (100, 75));

    let audit = audit_rows(&s.deps, "acme").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0]["request_id"], "req-1");
    assert_eq!(audit[0]["status"], 200);

    meter_all(&s.deps).await;
    let rollups = s.deps.usage.rollups("acme", 0, u64::MAX).await.unwrap();
    assert_eq!(rollups.len(), 1);
    assert_eq!(rollups[0].requests, 1);
    assert_eq!(rollups[0].bytes_in, input.len() as u64);
    assert_eq!(rollups[0].pixels_out, 100 * 75);
    let records = s.deps.usage.records("acme", 0, u64::MAX).await.unwrap();
    assert_eq!(records[0].request_id, "req-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_through_the_queue_and_only_its_tenant_gets_the_output() {
    let s = stack().await;
    let d = &s.deps;
    let r = imgfleet_lambda::api::handle(
        d,
        request("POST", "/v1/jobs?w=50", Some(&s.acme), jpeg(200, 100)),
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = json_of(&r)["id"].as_str().unwrap().to_string();
    assert_eq!(r.headers()["location"], format!("/v1/jobs/{id}"));

    let status = |key: String| {
        let id = id.clone();
        async move {
            imgfleet_lambda::api::handle(
                d,
                request("GET", &format!("/v1/jobs/{id}"), Some(&key), vec![]),
            )
            .await
        }
    };
    assert_eq!(json_of(&status(s.acme.clone()).await)["status"], "queued");
    let early = imgfleet_lambda::api::handle(
        d,
        request(
            "GET",
            &format!("/v1/jobs/{id}/output"),
            Some(&s.acme),
            vec![],
        ),
    )
    .await;
    assert_eq!(
        (early.status().as_u16(), code_of(&early).as_str()),
        (409, "not_ready")
    );

    let (n, failed) = deliver(d, &d.names.jobs_queue_url, |e| {
        imgfleet_lambda::resize::handle_batch(d, e)
    })
    .await;
    assert_eq!((n, failed.len()), (1, 0));

    let done = json_of(&status(s.acme.clone()).await);
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["http_status"], 200);
    let output = imgfleet_lambda::api::handle(
        d,
        request(
            "GET",
            &format!("/v1/jobs/{id}/output"),
            Some(&s.acme),
            vec![],
        ),
    )
    .await;
    assert_eq!(output.status(), 200);
    assert_eq!(
        image::load_from_memory(output.body().as_ref())
            .unwrap()
            .width(),
        50
    );

    // Another tenant learns nothing, not even that the job exists.
    let theirs = status(s.other.clone()).await;
    assert_eq!(
        (theirs.status().as_u16(), code_of(&theirs).as_str()),
        (404, "not_found")
    );
    let theirs = imgfleet_lambda::api::handle(
        d,
        request(
            "GET",
            &format!("/v1/jobs/{id}/output"),
            Some(&s.other),
            vec![],
        ),
    )
    .await;
    assert_eq!(theirs.status(), 404);

    // The input is gone from staging once the job ran.
    let input =
        d.s3.get_object()
            .bucket(&d.names.staging_bucket)
            .key(format!("jobs/{id}/input"))
            .send()
            .await;
    assert!(input.is_err(), "the staged input outlived its job");

    // Submission, run, two status reads, two output reads for acme; one of each for other.
    meter_all(d).await;
    let acme: u64 = d
        .usage
        .rollups("acme", 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.requests)
        .sum();
    assert_eq!(acme, 6);
    let other: u64 = d
        .usage
        .rollups("other", 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.requests)
        .sum();
    assert_eq!(other, 2);
    let audit = audit_rows(d, "acme").await;
    assert_eq!(audit.len(), 6);
    assert!(audit.iter().any(|a| a["id"] == format!("{id}.run")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_batch_item_is_redelivered_alone_and_a_poison_message_is_dead_lettered() {
    let s = stack().await;
    let d = &s.deps;
    // A good job, then a message no function can read, in another group.
    let r = imgfleet_lambda::api::handle(
        d,
        request("POST", "/v1/jobs?w=20", Some(&s.acme), jpeg(64, 64)),
    )
    .await;
    assert_eq!(r.status(), 202);
    let id = json_of(&r)["id"].as_str().unwrap().to_string();
    d.sqs
        .send_message()
        .queue_url(&d.names.jobs_queue_url)
        .message_body("{not a job")
        .message_group_id("poison")
        .message_deduplication_id("poison-1")
        .send()
        .await
        .unwrap();

    let (n, failed) = deliver(d, &d.names.jobs_queue_url, |e| {
        imgfleet_lambda::resize::handle_batch(d, e)
    })
    .await;
    assert_eq!(
        (n, failed.len()),
        (2, 1),
        "only the poison message is reported"
    );
    let status = imgfleet_lambda::api::handle(
        d,
        request("GET", &format!("/v1/jobs/{id}"), Some(&s.acme), vec![]),
    )
    .await;
    assert_eq!(json_of(&status)["status"], "done");

    // Redelivered alone (the good job was not retried), then dead-lettered.
    let mut deliveries = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (n, failed) = deliver(d, &d.names.jobs_queue_url, |e| {
            imgfleet_lambda::resize::handle_batch(d, e)
        })
        .await;
        if n == 0 {
            break;
        }
        deliveries.push((n, failed.len()));
    }
    assert_eq!(
        deliveries,
        [(1, 1)],
        "one more delivery of the poison message, alone"
    );
    let dead = d
        .sqs
        .receive_message()
        .queue_url(&s.jobs_dlq_url)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let bodies: Vec<&str> = dead.iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, ["{not a job"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_group_holds_back_its_own_later_jobs_but_not_other_tenants() {
    let s = stack().await;
    let d = &s.deps;
    let mut ids = Vec::new();
    for key in [&s.acme, &s.acme, &s.other] {
        let r = imgfleet_lambda::api::handle(
            d,
            request("POST", "/v1/jobs?w=10", Some(key), jpeg(32, 32)),
        )
        .await;
        ids.push(json_of(&r)["id"].as_str().unwrap().to_string());
    }
    // acme's first job loses its input: its run fails (S3), so acme's second must wait.
    d.s3.delete_object()
        .bucket(&d.names.staging_bucket)
        .key(format!("jobs/{}/input", ids[0]))
        .send()
        .await
        .unwrap();
    let (n, failures) = deliver(d, &d.names.jobs_queue_url, |e| {
        imgfleet_lambda::resize::handle_batch(d, e)
    })
    .await;
    assert_eq!(n, 3, "all three jobs in one batch");
    let state = |i: usize, key: String| {
        let id = ids[i].clone();
        async move {
            json_of(
                &imgfleet_lambda::api::handle(
                    d,
                    request("GET", &format!("/v1/jobs/{id}"), Some(&key), vec![]),
                )
                .await,
            )["status"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(state(0, s.acme.clone()).await, "queued");
    assert_eq!(
        state(1, s.acme.clone()).await,
        "queued",
        "ran before the job ahead of it"
    );
    assert_eq!(
        state(2, s.other.clone()).await,
        "done",
        "another tenant was held up"
    );
    assert_eq!(
        failures.len(),
        2,
        "acme's two jobs handed back: {failures:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_codes_and_leave_nothing_behind() {
    let s = stack().await;
    let d = &s.deps;
    let cases: Vec<(Request, u16, &str)> = vec![
        (
            request("POST", "/v1/resize?w=10", None, jpeg(8, 8)),
            401,
            "credential_missing",
        ),
        (
            request(
                "POST",
                "/v1/resize?w=10",
                Some(
                    "ifk_0000000000000000_0000000000000000000000000000000000000000000000000000000000000000",
                ),
                jpeg(8, 8),
            ),
            401,
            "key_unknown",
        ),
        (
            request("POST", "/v1/resize?w=0", Some(&s.acme), jpeg(8, 8)),
            400,
            "invalid_parameter",
        ),
        (
            request(
                "POST",
                "/v1/resize?w=10",
                Some(&s.acme),
                jpeg(64, 64)[..300].to_vec(),
            ),
            422,
            "corrupt_image",
        ),
        (
            request("POST", "/v1/resize?w=10", Some(&s.acme), b"hello".to_vec()),
            415,
            "unsupported_format",
        ),
        (
            request("POST", "/v1/jobs?fit=sideways", Some(&s.acme), jpeg(8, 8)),
            400,
            "invalid_parameter",
        ),
        (
            request("POST", "/v1/jobs?w=10", Some(&s.acme), vec![]),
            400,
            "empty_body",
        ),
        (
            request("GET", "/v1/jobs/not-a-job", Some(&s.acme), vec![]),
            404,
            "not_found",
        ),
        (
            request("GET", "/v1/resize", Some(&s.acme), vec![]),
            405,
            "method_not_allowed",
        ),
        (
            request("GET", "/v2/anything", Some(&s.acme), vec![]),
            404,
            "not_found",
        ),
    ];
    for (req, status, code) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let r = imgfleet_lambda::api::handle(d, req).await;
        assert_eq!(
            (r.status().as_u16(), code_of(&r).as_str()),
            (status, code),
            "{what}"
        );
    }
    // No job was queued and nothing was staged by the refused submissions.
    let (n, _) = deliver(d, &d.names.jobs_queue_url, |e| {
        imgfleet_lambda::resize::handle_batch(d, e)
    })
    .await;
    assert_eq!(n, 0);
    let staged =
        d.s3.list_objects_v2()
            .bucket(&d.names.staging_bucket)
            .send()
            .await
            .unwrap();
    assert_eq!(staged.key_count(), Some(0));
    // A disabled tenant is refused.
    d.identity.set_disabled("acme", true).await.unwrap();
    let r = imgfleet_lambda::api::handle(
        d,
        request("POST", "/v1/resize?w=10", Some(&s.acme), jpeg(8, 8)),
    )
    .await;
    assert_eq!(
        (r.status().as_u16(), code_of(&r).as_str()),
        (403, "tenant_disabled")
    );
}

/// The path API Gateway takes: a REST API proxy event with a base64 body, through
/// lambda_http's adapter (as `lambda_http::run` calls it), to a base64 image answer.
#[tokio::test(flavor = "multi_thread")]
async fn an_api_gateway_event_carries_the_image_both_ways_as_base64() {
    use base64::Engine as _;
    use lambda_http::tower::ServiceExt as _;
    let s = stack().await;
    let d = &s.deps;
    let b64 = base64::engine::general_purpose::STANDARD;
    let event = serde_json::json!({
        "resource": "/{proxy+}",
        "path": "/v1/resize",
        "httpMethod": "POST",
        "headers": { "Authorization": format!("Bearer {}", s.acme), "Content-Type": "image/jpeg" },
        "multiValueHeaders": { "Authorization": [format!("Bearer {}", s.acme)], "Content-Type": ["image/jpeg"] },
        "queryStringParameters": { "w": "40" },
        "multiValueQueryStringParameters": { "w": ["40"] },
        "pathParameters": { "proxy": "v1/resize" },
        "stageVariables": null,
        "requestContext": {
            "resourcePath": "/{proxy+}", "httpMethod": "POST", "path": "/dev/v1/resize",
            "stage": "dev", "requestId": "r-1", "accountId": "123456789012", "apiId": "abc",
            "identity": { "sourceIp": "127.0.0.1" }, "protocol": "HTTP/1.1", "requestTimeEpoch": 0
        },
        "body": b64.encode(jpeg(80, 80)),
        "isBase64Encoded": true
    });
    let request: lambda_http::request::LambdaRequest = serde_json::from_value(event).unwrap();
    let adapter = lambda_http::Adapter::from(lambda_http::service_fn(|req: Request| async move {
        Ok::<_, lambda_http::Error>(imgfleet_lambda::api::handle(d, req).await)
    }));
    let response = adapter
        .oneshot(lambda_http::LambdaEvent::new(
            request,
            lambda_http::Context::default(),
        ))
        .await
        .unwrap();
    let response = serde_json::to_value(&response).unwrap();
    assert_eq!(response["statusCode"], 200, "{response}");
    assert_eq!(response["isBase64Encoded"], true);
    let image = b64.decode(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(image::load_from_memory(&image).unwrap().width(), 40);
}

/// A usage message that is not a batch fails alone: the good records delivered with it are
/// counted once, and the bad one is dead-lettered after its receives.
#[tokio::test(flavor = "multi_thread")]
async fn metering_counts_the_good_messages_of_a_batch_and_fails_only_the_bad_one() {
    let s = stack().await;
    let d = &s.deps;
    for w in [10, 20] {
        let r = imgfleet_lambda::api::handle(
            d,
            request(
                "POST",
                &format!("/v1/resize?w={w}"),
                Some(&s.acme),
                jpeg(40, 40),
            ),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    d.sqs
        .send_message()
        .queue_url(&d.names.usage_queue_url)
        .message_body(r#"{"id":"x","records":"not a list"}"#)
        .send()
        .await
        .unwrap();
    let url = d.names.usage_queue_url.clone();
    let mut failures = 0;
    let mut delivered = 0;
    for _ in 0..6 {
        let (n, failed) = deliver(d, &url, |e| imgfleet_lambda::metering::handle_batch(d, e)).await;
        delivered += n;
        failures += failed.len();
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
    }
    assert_eq!(failures, 2, "the bad message, once per receive");
    assert_eq!(delivered, 4, "two good messages once, the bad one twice");
    let requests: u64 = d
        .usage
        .rollups("acme", 0, u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|r| r.requests)
        .sum();
    assert_eq!(requests, 2);
    let dlq = d
        .sqs
        .get_queue_url()
        .queue_name(format!("{}-dlq", url.rsplit('/').next().unwrap()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dead = d
        .sqs
        .receive_message()
        .queue_url(dlq)
        .wait_time_seconds(2)
        .send()
        .await
        .unwrap();
    assert_eq!(dead.messages.unwrap_or_default().len(), 1);
}

/// The daily compaction packs old raw records into segments; they stay readable and counted.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_packs_old_records_and_keeps_them_readable() {
    let s = stack().await;
    let d = &s.deps;
    const DAY: u64 = 86_400_000;
    let now = imgfleet_lambda::deps::now_ms();
    let record = |i: u64, at_ms: u64| imgfleet_metering::UsageRecord {
        id: format!("r{i}"),
        request_id: format!("q{i}"),
        tenant: "acme".into(),
        key_id: "k".into(),
        at_ms,
        route: "/v1/resize".into(),
        status: 200,
        input: Default::default(),
        output: Default::default(),
        cpu_ns: 1,
        wall_ns: 1,
        queue_ns: 0,
        origin_bytes: 0,
        not_modified: false,
        cache: None,
    };
    // Three from ten days ago, two from today.
    let records: Vec<_> = (0..5)
        .map(|i| record(i, if i < 3 { now - 10 * DAY + i } else { now - i }))
        .collect();
    let folded = imgfleet_metering::fold(
        imgfleet_metering::Batch {
            id: "b".into(),
            records: records.clone(),
        },
        &[],
    );
    d.usage.apply(folded).await.unwrap();
    let packed = imgfleet_lambda::compact::run(d, now, 7).await.unwrap();
    assert_eq!(packed, 3);
    assert_eq!(
        imgfleet_lambda::compact::run(d, now, 7).await.unwrap(),
        0,
        "packed twice"
    );
    let read = d.usage.records("acme", 0, u64::MAX).await.unwrap();
    let ids: Vec<&str> = read.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["r0", "r1", "r2", "r4", "r3"]);
    // Packed records are still known: a late redelivery is not counted again.
    assert_eq!(d.usage.known(vec!["r0".into()]).await.unwrap(), ["r0"]);
}

/// Monthly allowances are checked against the metered usage in the usage table.
#[tokio::test(flavor = "multi_thread")]
async fn a_used_up_monthly_allowance_is_refused_until_next_month() {
    let s = stack().await;
    let d = &s.deps;
    let input = jpeg(64, 64);
    d.identity
        .set_quota(
            "acme",
            imgfleet_auth::Quota {
                monthly_bytes: Some(input.len() as u64 + 1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let resize = || {
        imgfleet_lambda::api::handle(
            d,
            request("POST", "/v1/resize?w=8", Some(&s.acme), input.clone()),
        )
    };
    assert_eq!(resize().await.status(), 200, "under the allowance");
    meter_all(d).await;
    assert_eq!(resize().await.status(), 200, "one byte left");
    meter_all(d).await;
    let refused = resize().await;
    assert_eq!(
        (refused.status().as_u16(), code_of(&refused).as_str()),
        (429, "quota_exceeded")
    );
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=31 * 86_400).contains(&wait), "Retry-After {wait}");
    // Another tenant is not affected.
    let theirs = imgfleet_lambda::api::handle(
        d,
        request("POST", "/v1/resize?w=8", Some(&s.other), input.clone()),
    )
    .await;
    assert_eq!(theirs.status(), 200);
    let anonymous =
        imgfleet_lambda::api::handle(d, request("POST", "/v1/resize?w=8", None, input.clone()))
            .await;
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
}

/// A signed GET on Lambda: the source read from the tenant's S3 origin (moto), resized in
/// the function, tagged and cached as on the host; revalidation answers 304; a tampered
/// URL 403, an unknown origin 404; each metered with its origin bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_get_serves_an_s3_origin_with_caching_and_304s() {
    use imgfleet_stores::identity::OriginSource;
    use imgfleet_stores::identity::admin::{NewOrigin, add_origin, create_url_key};
    let mut s = stack().await;
    s.deps.origins =
        imgfleet_stores::origins::s3::S3Origins::new(Some(("test".into(), "test".into())));
    let bucket = format!("{}-images", s.deps.names.staging_bucket);
    s.deps
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    s.deps
        .s3
        .put_object()
        .bucket(&bucket)
        .key("web/cat.jpg")
        .content_type("image/jpeg")
        .body(jpeg(400, 300).into())
        .send()
        .await
        .unwrap();
    let origin = NewOrigin {
        name: "archive".into(),
        source: OriginSource::S3 {
            bucket: bucket.clone(),
            prefix: "web/".into(),
            region: Some("us-east-1".into()),
            endpoint: Some(endpoint()),
        },
        max_age_secs: Some(600),
        immutable: false,
    };
    add_origin(&s.deps.identity, "acme", origin).await.unwrap();
    let key = create_url_key(&s.deps.identity, "acme", None)
        .await
        .unwrap();
    let (key_id, secret) = imgfleet_auth::signed_url::parse_url_key(&key.url_key).unwrap();
    let sign = |query: &str, origin: &str, file: &str| {
        imgfleet_auth::signed_url::sign(&secret, "acme", key_id, query, None, origin, file)
    };
    let path = sign("w=100&fmt=png", "archive", "cat.jpg");
    let r = imgfleet_lambda::api::handle(&s.deps, request("GET", &path, None, vec![])).await;
    assert_eq!(
        r.status(),
        200,
        "{}",
        String::from_utf8_lossy(r.body().as_ref())
    );
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["cache-control"], "public, max-age=600");
    let img = image::load_from_memory(r.body().as_ref()).unwrap();
    assert_eq!(img.width(), 100);
    let tag = r.headers()["etag"].to_str().unwrap().to_string();
    let mut again = request("GET", &path, None, vec![]);
    again
        .headers_mut()
        .insert("if-none-match", tag.parse().unwrap());
    let r = imgfleet_lambda::api::handle(&s.deps, again).await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), tag);

    // The result cache in the staging bucket: the same URL again is the same image,
    // not resized; a purge of the path makes it a miss.
    let made =
        r_body(&imgfleet_lambda::api::handle(&s.deps, request("GET", &path, None, vec![])).await);
    assert_eq!(made.0, "cache;desc=revalidated");
    assert_eq!(image::load_from_memory(&made.1).unwrap().width(), 100);
    // A damaged entry is a miss, made again.
    let keys = s
        .deps
        .s3
        .list_objects_v2()
        .bucket(&s.deps.names.staging_bucket)
        .prefix("results/")
        .send()
        .await
        .unwrap();
    let cached_key = keys.contents()[0].key().unwrap().to_string();
    s.deps
        .s3
        .put_object()
        .bucket(&s.deps.names.staging_bucket)
        .key(&cached_key)
        .body(made.1[..made.1.len() / 2].to_vec().into())
        .send()
        .await
        .unwrap();
    let again =
        r_body(&imgfleet_lambda::api::handle(&s.deps, request("GET", &path, None, vec![])).await);
    assert_eq!(again.0, "cache;desc=miss");
    assert_eq!(again.1, made.1);
    imgfleet_stores::identity::admin::purge(
        &s.deps.identity,
        "acme",
        imgfleet_stores::identity::admin::NewPurge {
            origin: "archive".into(),
            path: "cat".into(),
            prefix: true,
        },
    )
    .await
    .unwrap();
    let purged =
        r_body(&imgfleet_lambda::api::handle(&s.deps, request("GET", &path, None, vec![])).await);
    assert_eq!(purged.0, "cache;desc=miss");

    let tampered = path.replace("w=100", "w=101");
    let r = imgfleet_lambda::api::handle(&s.deps, request("GET", &tampered, None, vec![])).await;
    assert_eq!(
        (r.status().as_u16(), code_of(&r).as_str()),
        (403, "bad_signature")
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let elsewhere = sign("w=100", "nowhere", "cat.jpg");
    let r = imgfleet_lambda::api::handle(&s.deps, request("GET", &elsewhere, None, vec![])).await;
    assert_eq!(
        (r.status().as_u16(), code_of(&r).as_str()),
        (404, "unknown_origin")
    );
    let missing = sign("w=100", "archive", "dog.jpg");
    let r = imgfleet_lambda::api::handle(&s.deps, request("GET", &missing, None, vec![])).await;
    assert_eq!(
        (r.status().as_u16(), code_of(&r).as_str()),
        (404, "source_not_found")
    );
    // Metered: the 200 with the bytes it read, the 304 as such.
    meter_all(&s.deps).await;
    let records = s
        .deps
        .usage
        .records("acme", 0, imgfleet_lambda::deps::now_ms() + 3_600_000)
        .await
        .unwrap();
    let gets: Vec<_> = records
        .iter()
        .filter(|r| r.route == "/v1/img/{*rest}")
        .collect();
    assert!(
        gets.iter()
            .any(|r| r.status == 200 && r.origin_bytes > 1000 && r.key_id.starts_with("url:")),
        "{gets:?}"
    );
    assert!(
        gets.iter().any(|r| r.status == 304 && r.not_modified),
        "{gets:?}"
    );
    let cache = |c| gets.iter().filter(|r| r.cache == Some(c)).count();
    use imgfleet_metering::CacheUse;
    assert_eq!(
        (cache(CacheUse::Miss), cache(CacheUse::Revalidated)),
        (3, 1),
        "{gets:?}"
    );
}

/// Server-Timing's cache metric and the body of a 200.
fn r_body(r: &lambda_http::Response<lambda_http::Body>) -> (String, Vec<u8>) {
    assert_eq!(
        r.status(),
        200,
        "{}",
        String::from_utf8_lossy(r.body().as_ref())
    );
    let timing = r
        .headers()
        .get_all("server-timing")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("cache;"))
        .unwrap_or_default()
        .to_string();
    (timing, r.body().as_ref().to_vec())
}
