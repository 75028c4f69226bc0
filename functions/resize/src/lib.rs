//! Pure image-resize logic: bytes and parameters in, bytes and cost facts out.
//!
//! No I/O and no clocks beyond `std::time::Instant`, so the same code runs in native
//! tests, inside the WASM component and in the Lambda binary.

pub mod error;
pub mod geometry;
pub mod http;
pub mod limits;
pub mod params;
pub mod pipeline;

mod cmyk_jpeg;
mod codec;
mod colour;
mod encode;
mod jpeg_rows;
mod lanczos;
mod scaled_jpeg;
mod shrink;
mod webp_decode;

pub use error::{ErrorCode, ResizeError};
pub use limits::{LIMITS_HEADER, Limits};
pub use params::{Fit, OutputFormat, ResizeParams};
pub use pipeline::{ImageFacts, Resized, Timings, resize};
