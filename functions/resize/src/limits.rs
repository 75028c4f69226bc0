//! Resource limits, checked from the image header before any pixel is decoded.

use crate::error::ResizeError;

/// Limits for one resize. The defaults are also the ceilings: a host may lower them
/// (through [`Limits::from_header`]) but nothing a request carries can raise them, so a
/// component exposed directly (e.g. under `spin up`) is no weaker than one behind the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_input_bytes: u64,
    pub max_input_pixels: u64,
    pub max_output_side: u32,
    /// Budget for the decoder's allocations; keeps a decode inside the instance's memory cap
    /// so it fails with an error instead of trapping.
    pub max_decode_alloc: u64,
}

pub const LIMITS_HEADER: &str = "imgfleet-limits";

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 20 * 1000 * 1000,
            max_input_pixels: 50 * 1000 * 1000,
            max_output_side: 8192,
            max_decode_alloc: 200 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Parses `key=value` pairs separated by `,` and applies each as a lower bound of the
    /// defaults. Unknown keys are an error so a typo in host configuration is loud.
    pub fn from_header(value: &str) -> Result<Self, ResizeError> {
        let mut limits = Self::default();
        for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').ok_or_else(|| {
                ResizeError::invalid(LIMITS_HEADER, format!("`{pair}` is not key=value"))
            })?;
            let n: u64 = raw.trim().parse().map_err(|_| {
                ResizeError::invalid(LIMITS_HEADER, format!("`{raw}` is not a number"))
            })?;
            match key.trim() {
                "max_input_bytes" => limits.max_input_bytes = limits.max_input_bytes.min(n),
                "max_input_pixels" => limits.max_input_pixels = limits.max_input_pixels.min(n),
                "max_output_side" => {
                    limits.max_output_side = limits
                        .max_output_side
                        .min(u32::try_from(n).unwrap_or(u32::MAX))
                }
                "max_decode_alloc" => limits.max_decode_alloc = limits.max_decode_alloc.min(n),
                other => {
                    return Err(ResizeError::invalid(
                        LIMITS_HEADER,
                        format!("unknown limit `{other}`"),
                    ));
                }
            }
        }
        Ok(limits)
    }

    pub fn to_header(&self) -> String {
        format!(
            "max_input_bytes={},max_input_pixels={},max_output_side={},max_decode_alloc={}",
            self.max_input_bytes,
            self.max_input_pixels,
            self.max_output_side,
            self.max_decode_alloc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_lowered_limits() {
        let lowered = Limits {
            max_input_bytes: 1000,
            max_input_pixels: 2000,
            max_output_side: 300,
            max_decode_alloc: 4000,
        };
        assert_eq!(Limits::from_header(&lowered.to_header()).unwrap(), lowered);
    }

    #[test]
    fn header_cannot_raise_limits() {
        let l =
            Limits::from_header("max_input_pixels=999999999999,max_output_side=100000").unwrap();
        assert_eq!(l, Limits::default());
    }

    #[test]
    fn header_rejects_garbage() {
        assert!(Limits::from_header("max_input_pixels=lots").is_err());
        assert!(Limits::from_header("max_cats=3").is_err());
        assert!(Limits::from_header("nonsense").is_err());
    }
}
