//! Fit arithmetic: from the (oriented) source size and the request to what is cropped,
//! what size the pixels are scaled to, and the canvas they land on. Pure integer/float
//! math, so every fit mode is testable without an image.

use crate::error::{ErrorCode, ResizeError};
use crate::params::{Fit, ResizeParams};

/// A rectangle of the source, in source pixels (fractional: the resampler handles it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Part of the source that is resampled; `None` means all of it.
    pub crop: Option<Crop>,
    /// Size the (cropped) source is resampled to.
    pub scaled: (u32, u32),
    /// Size of the output image; larger than `scaled` only for `contain` (padding).
    pub canvas: (u32, u32),
    /// Where the scaled image sits on the canvas.
    pub offset: (u32, u32),
}

impl Plan {
    /// Whether a source of this size must be resampled (cropped or scaled); padding to the
    /// canvas is a separate step.
    pub fn resamples(&self, source: (u32, u32)) -> bool {
        self.crop.is_some() || self.scaled != source
    }

    /// The same plan for a source decoded at another size than it was planned for (shrunk
    /// on load): the crop moves to the decoded pixels, the output stays as it was.
    pub fn for_source(&self, planned: (u32, u32), decoded: (u32, u32)) -> Plan {
        if planned == decoded {
            return *self;
        }
        let sx = f64::from(decoded.0) / f64::from(planned.0);
        let sy = f64::from(decoded.1) / f64::from(planned.1);
        Plan {
            crop: self.crop.map(|c| Crop {
                left: c.left * sx,
                top: c.top * sy,
                width: c.width * sx,
                height: c.height * sy,
            }),
            ..*self
        }
    }
}

fn round_side(x: f64) -> u32 {
    // Clamp so a degenerate ratio never produces a zero-pixel side.
    x.round().clamp(1.0, u32::MAX as f64) as u32
}

/// The largest size with the source's aspect ratio that fits the box (never larger than the
/// source for `inside` without `enlarge`). The limiting side takes the box's size exactly and
/// the other is rounded from an exact product, so `w=123` on 600x300 gives 123x62, not 61.
fn fit_inside(source: (u32, u32), params: &ResizeParams, boxed: (u32, u32)) -> (u32, u32) {
    let (sw, sh) = (u64::from(source.0), u64::from(source.1));
    let width_limits = match (params.width, params.height) {
        (Some(_), None) => true,
        (None, Some(_)) => false,
        // w/sw <= h/sh, compared exactly.
        _ => u64::from(boxed.0) * sh <= u64::from(boxed.1) * sw,
    };
    let (limit, src_limit) = if width_limits {
        (boxed.0, sw)
    } else {
        (boxed.1, sh)
    };
    if params.fit == Fit::Inside && !params.enlarge && u64::from(limit) >= src_limit {
        return source;
    }
    let other = |src_other: u64| round_side(src_other as f64 * f64::from(limit) / src_limit as f64);
    if width_limits {
        (limit, other(sh).min(boxed.1.max(1)))
    } else {
        (other(sw).min(boxed.0.max(1)), limit)
    }
}

/// Computes the plan, rejecting outputs larger than `max_side` on either axis.
pub fn plan(source: (u32, u32), params: &ResizeParams, max_side: u32) -> Result<Plan, ResizeError> {
    let (sw, sh) = (f64::from(source.0), f64::from(source.1));
    // A missing side is derived from the source aspect ratio.
    let box_w = params
        .width
        .map(f64::from)
        .unwrap_or_else(|| sw * f64::from(params.height.unwrap_or(1)) / sh);
    let box_h = params
        .height
        .map(f64::from)
        .unwrap_or_else(|| sh * f64::from(params.width.unwrap_or(1)) / sw);
    let boxed = (round_side(box_w), round_side(box_h));

    let plan = match params.fit {
        Fit::Inside | Fit::Contain => {
            let scaled = fit_inside(source, params, boxed);
            let canvas = if params.fit == Fit::Contain {
                boxed
            } else {
                scaled
            };
            Plan {
                crop: None,
                scaled,
                canvas,
                offset: ((canvas.0 - scaled.0) / 2, (canvas.1 - scaled.1) / 2),
            }
        }
        Fit::Cover => {
            let scale = (box_w / sw).max(box_h / sh);
            let (cw, ch) = (
                (f64::from(boxed.0) / scale).min(sw),
                (f64::from(boxed.1) / scale).min(sh),
            );
            let crop = Crop {
                left: (sw - cw) / 2.0,
                top: (sh - ch) / 2.0,
                width: cw,
                height: ch,
            };
            let full = crop.width == sw && crop.height == sh;
            Plan {
                crop: (!full).then_some(crop),
                scaled: boxed,
                canvas: boxed,
                offset: (0, 0),
            }
        }
        Fit::Fill => Plan {
            crop: None,
            scaled: boxed,
            canvas: boxed,
            offset: (0, 0),
        },
    };
    if plan.canvas.0 > max_side || plan.canvas.1 > max_side {
        return Err(ResizeError::new(
            ErrorCode::OutputTooLarge,
            format!(
                "output would be {}x{}; the largest side allowed is {max_side}",
                plan.canvas.0, plan.canvas.1
            ),
        ));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(w: Option<u32>, h: Option<u32>, fit: Fit, enlarge: bool) -> ResizeParams {
        ResizeParams {
            width: w,
            height: h,
            fit,
            enlarge,
            ..ResizeParams::default()
        }
    }

    #[test]
    fn inside_keeps_aspect_and_never_enlarges_by_default() {
        let plan = plan(
            (4000, 3000),
            &p(Some(400), Some(400), Fit::Inside, false),
            8192,
        )
        .unwrap();
        assert_eq!(plan.scaled, (400, 300));
        assert_eq!(plan.canvas, (400, 300));
        let small = plan_of((100, 50), Some(400), None, Fit::Inside, false);
        assert_eq!(small.canvas, (100, 50));
        assert!(!small.resamples((100, 50)));
        let enlarged = plan_of((100, 50), Some(400), None, Fit::Inside, true);
        assert_eq!(enlarged.canvas, (400, 200));
    }

    fn plan_of(src: (u32, u32), w: Option<u32>, h: Option<u32>, fit: Fit, enlarge: bool) -> Plan {
        plan(src, &p(w, h, fit, enlarge), 8192).unwrap()
    }

    #[test]
    fn one_side_derives_the_other() {
        assert_eq!(
            plan_of((4000, 3000), None, Some(300), Fit::Inside, false).canvas,
            (400, 300)
        );
        assert_eq!(
            plan_of((3000, 4000), Some(300), None, Fit::Fill, false).canvas,
            (300, 400)
        );
        assert_eq!(
            plan_of((3000, 4000), Some(300), None, Fit::Cover, false).canvas,
            (300, 400)
        );
    }

    #[test]
    fn contain_pads_to_the_box() {
        let plan = plan_of((4000, 2000), Some(300), Some(300), Fit::Contain, false);
        assert_eq!(plan.scaled, (300, 150));
        assert_eq!(plan.canvas, (300, 300));
        assert_eq!(plan.offset, (0, 75));
    }

    #[test]
    fn cover_crops_the_centre() {
        let plan = plan_of((4000, 2000), Some(300), Some(300), Fit::Cover, false);
        assert_eq!(plan.canvas, (300, 300));
        let crop = plan.crop.unwrap();
        assert_eq!(
            (crop.left, crop.top, crop.width, crop.height),
            (1000.0, 0.0, 2000.0, 2000.0)
        );
    }

    #[test]
    fn fill_stretches() {
        let plan = plan_of((4000, 2000), Some(300), Some(300), Fit::Fill, false);
        assert_eq!(
            (plan.scaled, plan.canvas, plan.crop),
            ((300, 300), (300, 300), None)
        );
    }

    #[test]
    fn the_derived_side_rounds_half_up_exactly() {
        assert_eq!(
            plan_of((600, 300), Some(123), None, Fit::Inside, false).canvas,
            (123, 62)
        );
        assert_eq!(
            plan_of((600, 300), Some(123), Some(1000), Fit::Inside, false).canvas,
            (123, 62)
        );
        assert_eq!(
            plan_of((300, 600), None, Some(123), Fit::Inside, false).canvas,
            (62, 123)
        );
    }

    #[test]
    fn extreme_ratios_never_give_zero_sides() {
        assert_eq!(
            plan_of((10000, 1), Some(10), None, Fit::Inside, false).canvas,
            (10, 1)
        );
    }

    #[test]
    fn too_large_outputs_are_rejected() {
        let err = plan((100, 1), &p(Some(8000), None, Fit::Fill, false), 8192);
        assert!(err.is_ok());
        let err = plan((1, 100), &p(Some(8000), None, Fit::Fill, false), 8192).unwrap_err();
        assert_eq!(err.code, ErrorCode::OutputTooLarge);
    }
}
