//! The resize function as an HTTP exchange, independent of any runtime: the Spin
//! component, the Lambda and native tests all call [`handle`].

use crate::error::{ErrorCode, ResizeError};
use crate::limits::Limits;
use crate::params::{ImageFormat, ResizeParams};
use crate::pipeline::{ImageFacts, Resized, resize};

/// Response header carrying the cost facts to the host (which strips it before replying).
pub const FACTS_HEADER: &str = "imgfleet-facts";

#[derive(Debug, Clone, Copy, Default)]
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub query: &'a str,
    pub accept: Option<&'a str>,
    /// Value of the `imgfleet-limits` header, if the host set one.
    pub limits: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn error(err: &ResizeError) -> Self {
        let mut headers = vec![("content-type", "application/json".to_string())];
        // RFC 9110: a 405 names the methods the resource takes.
        if err.code == ErrorCode::MethodNotAllowed {
            headers.push(("allow", "POST".to_string()));
        }
        Self {
            status: err.status(),
            headers,
            body: err.to_json(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn handle(req: HttpRequest<'_>) -> HttpResponse {
    match run(req) {
        Ok(r) => ok_response(r),
        Err(e) => HttpResponse::error(&e),
    }
}

fn run(req: HttpRequest<'_>) -> Result<Resized, ResizeError> {
    if req.method != "POST" {
        return Err(ResizeError::new(
            ErrorCode::MethodNotAllowed,
            "use POST with the image as the body",
        ));
    }
    let limits = match req.limits {
        Some(h) => Limits::from_header(h)?,
        None => Limits::default(),
    };
    let params = ResizeParams::from_query(req.query)?;
    resize(req.body, &params, req.accept, &limits)
}

fn ok_response(r: Resized) -> HttpResponse {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let timing = format!(
        "decode;dur={:.3}, resize;dur={:.3}, encode;dur={:.3}",
        ms(r.timings.decode),
        ms(r.timings.resize),
        ms(r.timings.encode)
    );
    HttpResponse {
        status: 200,
        headers: vec![
            (
                "content-type",
                r.format.as_image_format().mime().to_string(),
            ),
            ("server-timing", timing),
            (
                FACTS_HEADER,
                Facts {
                    input: r.input,
                    output: r.output,
                }
                .to_header(),
            ),
        ],
        body: r.bytes,
    }
}

/// Input and output facts of one resize, as carried in [`FACTS_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub input: ImageFacts,
    pub output: ImageFacts,
}

impl Facts {
    pub fn to_header(&self) -> String {
        let side = |p: &str, f: &ImageFacts| {
            format!(
                "{p}fmt={};{p}w={};{p}h={};{p}bytes={}",
                f.format.name(),
                f.width,
                f.height,
                f.bytes
            )
        };
        format!(
            "{};{}",
            side("in_", &self.input),
            side("out_", &self.output)
        )
    }

    pub fn parse(header: &str) -> Option<Self> {
        let get = |key: &str| {
            header
                .split(';')
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        };
        let side = |p: &str| -> Option<ImageFacts> {
            Some(ImageFacts {
                format: parse_format(get(&format!("{p}fmt"))?)?,
                width: get(&format!("{p}w"))?.parse().ok()?,
                height: get(&format!("{p}h"))?.parse().ok()?,
                bytes: get(&format!("{p}bytes"))?.parse().ok()?,
            })
        };
        Some(Self {
            input: side("in_")?,
            output: side("out_")?,
        })
    }
}

fn parse_format(name: &str) -> Option<ImageFormat> {
    [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Webp,
        ImageFormat::Gif,
    ]
    .into_iter()
    .find(|f| f.name() == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_round_trip() {
        let facts = Facts {
            input: ImageFacts {
                format: ImageFormat::Gif,
                width: 1,
                height: 2,
                bytes: 3,
            },
            output: ImageFacts {
                format: ImageFormat::Webp,
                width: 4,
                height: 5,
                bytes: 6,
            },
        };
        assert_eq!(Facts::parse(&facts.to_header()), Some(facts));
        assert_eq!(Facts::parse("in_fmt=tiff"), None);
    }

    #[test]
    fn wrong_method_is_405_json() {
        let resp = handle(HttpRequest {
            method: "GET",
            query: "w=1",
            ..Default::default()
        });
        assert_eq!(resp.status, 405);
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed");
    }
}
