//! An HTTP origin on 127.0.0.1 for the delivery tests: serves generated photos (with and
//! without validators, answering conditional requests) and misbehaves on purpose on named
//! paths — slow, dribbling, huge, redirect loops, HTML, 500s, resets — counting what it was
//! asked.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct Counts {
    /// Requests per path.
    pub requests: Mutex<HashMap<String, u64>>,
    /// Conditional requests answered 304.
    pub not_modified: AtomicU64,
}

pub struct Origin {
    pub base: String,
    pub port: u16,
    pub counts: Arc<Counts>,
    /// Bodies by path (under `/img/` with an ETag, elsewhere without validators; `.html`
    /// as pages).
    images: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// How long answers for a path are held back (a slow origin, for requests to overlap).
    delays: Arc<Mutex<HashMap<String, Duration>>>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the origin");
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let images: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let delays: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, i, d, s) = (counts.clone(), images.clone(), delays.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (c, i, d) = (c.clone(), i.clone(), d.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &c, &i, &d, port);
                });
            }
        });
        Self {
            base: format!("http://127.0.0.1:{port}"),
            port,
            counts,
            images,
            delays,
            stop,
        }
    }

    /// Holds every answer for `path` back by `delay`.
    pub fn delay(&self, path: &str, delay: Duration) {
        self.delays.lock().unwrap().insert(path.to_string(), delay);
    }

    /// Serves `body` at `path` (e.g. `/img/cat.jpg`); replacing it changes its ETag.
    pub fn put(&self, path: &str, body: Vec<u8>) {
        self.images.lock().unwrap().insert(path.to_string(), body);
    }

    pub fn requests(&self, path: &str) -> u64 {
        self.counts
            .requests
            .lock()
            .unwrap()
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn etag_of(body: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

fn serve(
    mut conn: TcpStream,
    counts: &Counts,
    images: &Mutex<HashMap<String, Vec<u8>>>,
    delays: &Mutex<HashMap<String, Duration>>,
    port: u16,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Responses go out in several writes; Nagle would hold the last small one back for
    // the client's delayed ACK (40 ms), which no real origin makes its clients wait.
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut if_none_match = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':')
                && name.eq_ignore_ascii_case("if-none-match")
            {
                if_none_match = Some(value.trim().to_string());
            }
        }
        *counts
            .requests
            .lock()
            .unwrap()
            .entry(path.clone())
            .or_default() += 1;
        let delay = delays.lock().unwrap().get(&path).copied();
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let body = images.lock().unwrap().get(&path).cloned();
        match (path.as_str(), body) {
            (p, Some(body)) if p.starts_with("/img/") => {
                let tag = etag_of(&body);
                if if_none_match.as_deref() == Some(tag.as_str()) {
                    counts.not_modified.fetch_add(1, Ordering::Relaxed);
                    write!(
                        conn,
                        "HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nContent-Length: 0\r\n\r\n"
                    )?;
                } else {
                    write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nETag: {tag}\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )?;
                    conn.write_all(&body)?;
                }
            }
            (p, Some(body)) => {
                let content_type = if p.ends_with(".html") {
                    "text/html; charset=utf-8"
                } else {
                    "image/jpeg"
                };
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )?;
                conn.write_all(&body)?;
            }
            ("/bad/slow.jpg", None) => {
                std::thread::sleep(Duration::from_secs(20));
                return Ok(());
            }
            ("/bad/dribble.jpg", None) => {
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n"
                )?;
                for _ in 0..30 {
                    conn.write_all(&[0xff])?;
                    conn.flush()?;
                    std::thread::sleep(Duration::from_millis(700));
                }
                return Ok(());
            }
            ("/bad/huge.jpg", None) => {
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000000000\r\n\r\n"
                )?;
                return Ok(());
            }
            ("/bad/endless.jpg", None) => {
                // No length: the cap must hold while the bytes stream in.
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n"
                )?;
                let chunk = vec![0u8; 64 * 1024];
                for _ in 0..2000 {
                    if conn.write_all(&chunk).is_err() {
                        break;
                    }
                }
                return Ok(());
            }
            ("/bad/loop.jpg", None) => {
                write!(
                    conn,
                    "HTTP/1.1 302 Found\r\nLocation: /bad/loop.jpg\r\nContent-Length: 0\r\n\r\n"
                )?;
            }
            ("/bad/away.jpg", None) => {
                write!(
                    conn,
                    "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\n\r\n"
                )?;
            }
            ("/bad/escape.jpg", None) => {
                write!(
                    conn,
                    "HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:{port}/elsewhere/x.jpg\r\nContent-Length: 0\r\n\r\n"
                )?;
            }
            ("/bad/page.jpg", None) => {
                let page = "<html><body>not an image</body></html>";
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
                    page.len()
                )?;
            }
            ("/bad/error.jpg", None) => {
                write!(
                    conn,
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
                )?;
            }
            ("/bad/reset.jpg", None) => {
                // Close with unread data pending: the peer sees a reset.
                let mut rest = [0u8; 1];
                let _ = conn.set_nonblocking(true).map(|_| conn.read(&mut rest));
                return Ok(());
            }
            _ => {
                write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            }
        }
        conn.flush()?;
    }
}

/// Puts `body` at `key` in `bucket` on an S3 API that takes unsigned path-style calls
/// (moto), making the bucket first.
pub fn put_s3_object(endpoint: &str, bucket: &str, key: &str, body: &[u8]) {
    use crate::host::request;
    let made = request("PUT", &format!("{endpoint}/{bucket}"), b"", &[]);
    assert!(
        made.status < 300,
        "creating bucket {bucket}: {}",
        made.status
    );
    let put = request(
        "PUT",
        &format!("{endpoint}/{bucket}/{key}"),
        body,
        &[("content-type", "image/jpeg")],
    );
    assert!(put.status < 300, "uploading {key}: {}", put.status);
}
