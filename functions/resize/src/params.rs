//! Request parameters: parsed strictly so a typo is an error, not a silently ignored option.

use crate::error::ResizeError;

/// How the image is fitted into the `w`×`h` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Scale to fit inside the box, keep the aspect ratio; never enlarge unless asked.
    #[default]
    Inside,
    /// Scale to fit inside the box, keep the aspect ratio, pad to exactly `w`×`h`.
    Contain,
    /// Scale to cover the box, keep the aspect ratio, crop the overflow (centred).
    Cover,
    /// Stretch to exactly `w`×`h`, ignoring the aspect ratio.
    Fill,
}

impl Fit {
    fn parse(s: &str) -> Result<Self, ResizeError> {
        match s {
            "inside" => Ok(Self::Inside),
            "contain" => Ok(Self::Contain),
            "cover" => Ok(Self::Cover),
            "fill" => Ok(Self::Fill),
            _ => Err(ResizeError::invalid(
                "fit",
                format!("`{s}` is not one of contain, cover, fill, inside"),
            )),
        }
    }
}

/// Image formats imgfleet reads or writes (AVIF is written only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    Webp,
    Gif,
    Avif,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Gif => "gif",
            Self::Avif => "avif",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Webp => "image/webp",
            Self::Gif => "image/gif",
            Self::Avif => "image/avif",
        }
    }
}

/// The encodings imgfleet can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Jpeg,
    Png,
    /// Lossy at the request's quality (libwebp), alpha kept.
    Webp,
    /// AV1 still image (rav1e) at the request's quality and speed; alpha kept.
    Avif,
}

impl OutputFormat {
    pub fn as_image_format(self) -> ImageFormat {
        match self {
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Png => ImageFormat::Png,
            Self::Webp => ImageFormat::Webp,
            Self::Avif => ImageFormat::Avif,
        }
    }

    /// The output format used when the request does not name one: the input's own,
    /// except GIF, which is written as PNG (lossless, keeps transparency).
    pub fn same_as(input: ImageFormat) -> Self {
        match input {
            ImageFormat::Jpeg => Self::Jpeg,
            ImageFormat::Png | ImageFormat::Gif => Self::Png,
            ImageFormat::Webp => Self::Webp,
            ImageFormat::Avif => Self::Avif,
        }
    }
}

/// What the request asked for as the output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    /// Same as the input (GIF becomes PNG).
    #[default]
    Input,
    /// Negotiated from the `Accept` header, falling back to the input format.
    Auto,
    Fixed(OutputFormat),
}

pub const DEFAULT_QUALITY: u8 = 80;
/// AVIF encoder speed when the request names none: rav1e's 1 (smallest files, slowest) to
/// 10 (fastest). 8 keeps a 300 px AVIF within a few times a WebP's cost (docs/BENCHMARKS.md).
pub const DEFAULT_AVIF_SPEED: u8 = 8;

/// Every query parameter a resize takes; any other is refused by name.
pub const PARAMETERS: [&str; 7] = ["w", "h", "fit", "fmt", "q", "speed", "enlarge"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResizeParams {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
    pub format: FormatChoice,
    pub quality: u8,
    /// AVIF encoder speed, 1 to 10 (`speed`); used only when the output is AVIF.
    pub speed: u8,
    pub enlarge: bool,
}

impl Default for ResizeParams {
    fn default() -> Self {
        Self {
            width: None,
            height: None,
            fit: Fit::default(),
            format: FormatChoice::default(),
            quality: DEFAULT_QUALITY,
            speed: DEFAULT_AVIF_SPEED,
            enlarge: false,
        }
    }
}

impl ResizeParams {
    /// Parses a URL query string (`w=300&fit=cover`). Every key must be known and appear once.
    pub fn from_query(query: &str) -> Result<Self, ResizeError> {
        let mut params = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.trim_start_matches('?').as_bytes()) {
            if seen.iter().any(|k| *k == key) {
                return Err(ResizeError::invalid(&key, "given more than once"));
            }
            seen.push(key.to_string());
            let value = value.as_ref();
            match key.as_ref() {
                "w" => params.width = Some(parse_side("w", value)?),
                "h" => params.height = Some(parse_side("h", value)?),
                "fit" => params.fit = Fit::parse(value)?,
                "fmt" => params.format = parse_format(value)?,
                "q" => params.quality = parse_quality(value)?,
                "speed" => params.speed = parse_speed(value)?,
                "enlarge" => params.enlarge = parse_flag("enlarge", value)?,
                other => {
                    return Err(ResizeError::invalid(
                        other,
                        format!("unknown parameter (known: {})", PARAMETERS.join(", ")),
                    ));
                }
            }
        }
        if params.width.is_none() && params.height.is_none() {
            return Err(ResizeError::invalid("w", "give w, h or both"));
        }
        let avif_possible = matches!(
            params.format,
            FormatChoice::Auto | FormatChoice::Fixed(OutputFormat::Avif)
        );
        if seen.iter().any(|k| k == "speed") && !avif_possible {
            return Err(ResizeError::invalid(
                "speed",
                "applies to AVIF output only (fmt=avif or fmt=auto)",
            ));
        }
        Ok(params)
    }
}

impl ResizeParams {
    /// The one query that stands for these parameters: defaults left out, the rest in a
    /// fixed order (`w`, `h`, `fit`, `fmt`, `q`, `speed`, `enlarge`). Two queries asking
    /// for the same output have the same canonical form, so a cache keyed on it (a signed
    /// URL, a CDN) holds each output once.
    pub fn canonical_query(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        if let Some(w) = self.width {
            out.push(format!("w={w}"));
        }
        if let Some(h) = self.height {
            out.push(format!("h={h}"));
        }
        let fit = match self.fit {
            Fit::Inside => None,
            Fit::Contain => Some("contain"),
            Fit::Cover => Some("cover"),
            Fit::Fill => Some("fill"),
        };
        if let Some(fit) = fit {
            out.push(format!("fit={fit}"));
        }
        match self.format {
            FormatChoice::Input => {}
            FormatChoice::Auto => out.push("fmt=auto".into()),
            FormatChoice::Fixed(f) => out.push(format!("fmt={}", f.as_image_format().name())),
        }
        if self.quality != DEFAULT_QUALITY {
            out.push(format!("q={}", self.quality));
        }
        if self.speed != DEFAULT_AVIF_SPEED {
            out.push(format!("speed={}", self.speed));
        }
        if self.enlarge {
            out.push("enlarge=1".into());
        }
        out.join("&")
    }
}

fn parse_side(name: &str, value: &str) -> Result<u32, ResizeError> {
    match value.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ResizeError::invalid(
            name,
            format!("`{value}` is not a positive whole number of pixels"),
        )),
    }
}

fn parse_quality(value: &str) -> Result<u8, ResizeError> {
    parse_in("q", value, 1..=100, "a quality")
}

fn parse_speed(value: &str) -> Result<u8, ResizeError> {
    parse_in("speed", value, 1..=10, "an AVIF encoder speed")
}

/// A whole number in `range`; the error names the parameter and what it measures.
fn parse_in(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<u8>,
    what: &str,
) -> Result<u8, ResizeError> {
    match value.parse::<u8>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ResizeError::invalid(
            name,
            format!(
                "`{value}` is not {what} from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn parse_flag(name: &str, value: &str) -> Result<bool, ResizeError> {
    match value {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(ResizeError::invalid(
            name,
            format!("`{value}` is not 0 or 1"),
        )),
    }
}

fn parse_format(value: &str) -> Result<FormatChoice, ResizeError> {
    match value {
        "jpeg" | "jpg" => Ok(FormatChoice::Fixed(OutputFormat::Jpeg)),
        "png" => Ok(FormatChoice::Fixed(OutputFormat::Png)),
        "webp" => Ok(FormatChoice::Fixed(OutputFormat::Webp)),
        "avif" => Ok(FormatChoice::Fixed(OutputFormat::Avif)),
        "auto" => Ok(FormatChoice::Auto),
        _ => Err(ResizeError::invalid(
            "fmt",
            format!("`{value}` is not one of jpeg, png, webp, avif, auto"),
        )),
    }
}

/// Picks the output format for `fmt=auto`: WebP when the client names it (small files at a
/// JPEG-like cost), else AVIF when the client names that (smaller still, but it costs
/// several times the CPU, so a client offering both gets WebP; `fmt=avif` asks for it
/// outright), else the input's own format when accepted, else JPEG or PNG, whichever the
/// client accepts; with no usable `Accept` at all, the input's own format.
pub fn negotiate(accept: Option<&str>, input: ImageFormat) -> OutputFormat {
    let fallback = OutputFormat::same_as(input);
    let Some(accept) = accept else {
        return fallback;
    };
    let ranked = accepted_types(accept);
    let accepts = |mime: &str| {
        ranked
            .iter()
            .filter(|(range, _)| media_range_matches(range, mime))
            .map(|(_, q)| *q)
            // The most specific range decides; `max` is a close, simpler stand-in that
            // only differs for contradictory headers.
            .fold(None, |acc: Option<f32>, q| {
                Some(acc.map_or(q, |a| a.max(q)))
            })
            .is_some_and(|q| q > 0.0)
    };
    let explicit = |mime: &str| ranked.iter().any(|(range, q)| range == mime && *q > 0.0);
    if explicit("image/webp") {
        return OutputFormat::Webp;
    }
    if explicit("image/avif") {
        return OutputFormat::Avif;
    }
    for candidate in [
        fallback,
        OutputFormat::Jpeg,
        OutputFormat::Png,
        OutputFormat::Webp,
    ] {
        if accepts(candidate.as_image_format().mime()) {
            return candidate;
        }
    }
    fallback
}

fn accepted_types(accept: &str) -> Vec<(String, f32)> {
    accept
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let range = parts.next()?.trim().to_ascii_lowercase();
            if range.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((range, q))
        })
        .collect()
}

fn media_range_matches(range: &str, mime: &str) -> bool {
    range == "*/*" || range == mime || (range == "image/*" && mime.starts_with("image/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_parameter() {
        let p = ResizeParams::from_query("w=300&h=200&fit=cover&fmt=webp&q=70&enlarge=1").unwrap();
        assert_eq!(p.width, Some(300));
        assert_eq!(p.height, Some(200));
        assert_eq!(p.fit, Fit::Cover);
        assert_eq!(p.format, FormatChoice::Fixed(OutputFormat::Webp));
        assert_eq!(p.quality, 70);
        assert!(p.enlarge);
        let p = ResizeParams::from_query("w=300&fmt=avif&speed=3").unwrap();
        assert_eq!(p.format, FormatChoice::Fixed(OutputFormat::Avif));
        assert_eq!(p.speed, 3);
        assert_eq!(
            ResizeParams::from_query("w=3&fmt=auto&speed=10")
                .unwrap()
                .speed,
            10
        );
    }

    #[test]
    fn equal_requests_have_one_canonical_query() {
        for (a, b) in [
            ("h=20&w=10", "w=10&h=20"),
            ("w=10&fit=inside&q=80&enlarge=0", "w=10"),
            ("w=10&fmt=jpg&enlarge=true", "w=10&fmt=jpeg&enlarge=1"),
            ("fmt=avif&speed=8&w=10", "w=10&fmt=avif"),
            ("q=070&w=010", "w=10&q=70"),
        ] {
            let canonical = ResizeParams::from_query(a).unwrap().canonical_query();
            assert_eq!(canonical, b, "{a}");
            // The canonical form parses to the same parameters and is its own canonical form.
            let again = ResizeParams::from_query(&canonical).unwrap();
            assert_eq!(again, ResizeParams::from_query(a).unwrap());
            assert_eq!(again.canonical_query(), canonical);
        }
        assert_eq!(
            ResizeParams::from_query("enlarge=1&speed=3&fmt=auto&q=55&fit=cover&h=2&w=1")
                .unwrap()
                .canonical_query(),
            "w=1&h=2&fit=cover&fmt=auto&q=55&speed=3&enlarge=1"
        );
    }

    #[test]
    fn defaults_apply() {
        let p = ResizeParams::from_query("w=10").unwrap();
        assert_eq!(p.fit, Fit::Inside);
        assert_eq!(p.format, FormatChoice::Input);
        assert_eq!(p.quality, DEFAULT_QUALITY);
        assert_eq!(p.speed, DEFAULT_AVIF_SPEED);
        assert!(!p.enlarge);
    }

    #[test]
    fn rejects_nonsense_with_the_parameter_named() {
        for (query, param) in [
            ("w=-1", "w"),
            ("w=0", "w"),
            ("w=abc", "w"),
            ("w=10&fit=banana", "fit"),
            ("w=10&q=500", "q"),
            ("w=10&q=0", "q"),
            ("w=10&fmt=bmp", "fmt"),
            ("w=10&enlarge=yes", "enlarge"),
            ("w=10&fmt=avif&speed=0", "speed"),
            ("w=10&fmt=avif&speed=11", "speed"),
            ("w=10&speed=5", "speed"),
            ("w=10&fmt=jpeg&speed=5", "speed"),
            ("w=10&width=3", "width"),
            ("w=10&w=20", "w"),
            ("fit=cover", "w"),
        ] {
            let err = ResizeParams::from_query(query).unwrap_err();
            assert_eq!(err.code, crate::ErrorCode::InvalidParameter, "{query}");
            assert!(err.message.starts_with(param), "{query}: {}", err.message);
        }
    }

    #[test]
    fn accept_negotiation() {
        use ImageFormat::*;
        assert_eq!(negotiate(None, Jpeg), OutputFormat::Jpeg);
        assert_eq!(negotiate(None, Gif), OutputFormat::Png);
        assert_eq!(
            negotiate(Some("image/avif,image/webp,*/*;q=0.8"), Jpeg),
            OutputFormat::Webp
        );
        assert_eq!(negotiate(Some("image/webp;q=0"), Png), OutputFormat::Png);
        assert_eq!(
            negotiate(Some("image/avif,image/png;q=0.5"), Png),
            OutputFormat::Avif
        );
        assert_eq!(
            negotiate(Some("image/avif;q=0,image/webp;q=0,*/*"), Jpeg),
            OutputFormat::Jpeg
        );
        assert_eq!(negotiate(Some("image/png"), Jpeg), OutputFormat::Png);
        assert_eq!(
            negotiate(Some("image/jpeg, image/png;q=0.5"), Png),
            OutputFormat::Png
        );
        assert_eq!(negotiate(Some("text/html"), Jpeg), OutputFormat::Jpeg);
        assert_eq!(negotiate(Some("*/*"), Webp), OutputFormat::Webp);
    }
}
