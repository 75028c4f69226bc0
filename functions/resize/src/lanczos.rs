//! The Lanczos3 kernel, with its sines from a short polynomial instead of the maths
//! library: the resampler evaluates it a dozen times per output pixel and column while
//! building its weights, and in WASM (no sine instruction) libm's `sin`, with its general
//! argument reduction, cost about 1 % of a whole 300 px resize. The weights are quantised
//! to 16 bits afterwards; the polynomial is exact to 1e-9.

use std::f64::consts::PI;

use fast_image_resize::{Filter, FilterType};

const SUPPORT: f64 = 3.0;

/// The filter to resample with.
pub(crate) fn filter() -> FilterType {
    FilterType::Custom(Filter::new("Lanczos3", lanczos3, SUPPORT).expect("a positive support"))
}

/// sinc(x) · sinc(x / 3) on (-3, 3), zero outside.
fn lanczos3(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    if !(-SUPPORT..SUPPORT).contains(&x) {
        return 0.0;
    }
    sin_pi(x) * sin_pi(x / SUPPORT) * SUPPORT / (PI * PI * x * x)
}

/// sin(πt): reduced to r in [-1/2, 1/2] (by its period 2 and sin(π − a) = sin(a)), then the
/// Taylor series to the 13th power (error under 1e-9 there).
fn sin_pi(t: f64) -> f64 {
    // `round_ties_even` is one WASM instruction; `round` would be a libm call.
    let r = t - 2.0 * (t * 0.5).round_ties_even();
    let r = if r > 0.5 {
        1.0 - r
    } else if r < -0.5 {
        -1.0 - r
    } else {
        r
    };
    let a = PI * r;
    let a2 = a * a;
    // sin a = a (1 − a²/3! + a⁴/5! − …), by Horner's rule from the highest term.
    let mut series = 0.0;
    for c in INVERSE_FACTORIALS.iter().rev() {
        series = c - a2 * series;
    }
    a * (1.0 - a2 * series)
}

/// 1/3!, 1/5!, …, 1/13!
const INVERSE_FACTORIALS: [f64; 6] = {
    let mut out = [0.0; 6];
    let (mut i, mut f, mut n) = (0, 1.0, 1.0);
    while i < 6 {
        // From (2i+1)! to (2i+3)!.
        f *= (n + 1.0) * (n + 2.0);
        n += 2.0;
        out[i] = 1.0 / f;
        i += 1;
    }
    out
};

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f64) -> f64 {
        let sinc = |v: f64| {
            if v == 0.0 {
                1.0
            } else {
                (v * PI).sin() / (v * PI)
            }
        };
        if (-3.0..3.0).contains(&x) {
            sinc(x) * sinc(x / 3.0)
        } else {
            0.0
        }
    }

    #[test]
    fn matches_the_kernel_computed_with_libm() {
        for i in -40_000..=40_000 {
            let x = f64::from(i) / 10_000.0;
            let (got, want) = (lanczos3(x), reference(x));
            assert!((got - want).abs() < 1e-9, "x = {x}: {got} vs {want}");
        }
    }

    #[test]
    fn sine_holds_over_whole_periods() {
        for i in -3_000..=3_000 {
            let t = f64::from(i) / 997.0;
            let (got, want) = (sin_pi(t), (PI * t).sin());
            assert!((got - want).abs() < 1e-9, "t = {t}: {got} vs {want}");
        }
    }
}
