//! An OpenTelemetry collector's OTLP/HTTP trace endpoint on 127.0.0.1, as much of it as the
//! trace tests need: it takes `POST /v1/traces` in the JSON encoding, answers 200, and keeps
//! every span it was sent with the `service.name` of its sender.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_id: String,
    /// String and integer attributes (the span's `tracing` fields).
    pub attributes: Vec<(String, String)>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Collector {
    pub base: String,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the collector");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let kept = spans.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let kept = kept.clone();
                std::thread::spawn(move || serve(conn, &kept));
            }
        });
        Self { base, spans }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// Answers every request on the connection (clients keep it alive) until it closes.
fn serve(conn: TcpStream, kept: &Mutex<Vec<Span>>) {
    let mut reader = BufReader::new(conn.try_clone().expect("a second handle"));
    let mut conn = conn;
    loop {
        let mut length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() && !first {
                break;
            }
            first = false;
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) {
            kept.lock().unwrap().extend(spans_of(&doc));
        }
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if conn.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn value_text(v: &serde_json::Value) -> Option<String> {
    v["stringValue"]
        .as_str()
        .map(str::to_string)
        .or_else(|| v["intValue"].as_str().map(str::to_string))
        .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
        .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
}

fn attributes(list: &serde_json::Value) -> Vec<(String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["key"].as_str()?.to_string(), value_text(&a["value"])?)))
        .collect()
}

fn spans_of(doc: &serde_json::Value) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
        let resource = attributes(&rs["resource"]["attributes"]);
        let service = resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for s in ss["spans"].as_array().into_iter().flatten() {
                out.push(Span {
                    service: service.clone(),
                    name: s["name"].as_str().unwrap_or_default().to_string(),
                    trace_id: s["traceId"].as_str().unwrap_or_default().to_string(),
                    span_id: s["spanId"].as_str().unwrap_or_default().to_string(),
                    parent_id: s["parentSpanId"].as_str().unwrap_or_default().to_string(),
                    attributes: attributes(&s["attributes"]),
                });
            }
        }
    }
    out
}
