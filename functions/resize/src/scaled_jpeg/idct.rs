//! Reduced inverse DCTs: an 8×8 block's lowest `n × m` frequencies (n, m in 1, 2, 4, 8)
//! transformed back to `n × m` pixels, each the block's average over its share of the
//! block. This is the decode-time downscale: a 1/8 decode needs only each block's DC.

use std::f32::consts::PI;

/// Per size n (index log2 n): `basis[x][u]` = the orthonormal n-point DCT basis at x,
/// scaled by √(n/8) so that a truncated 8-point spectrum keeps its brightness.
pub(super) struct Bases {
    basis: [[[f32; 8]; 8]; 4],
}

impl Bases {
    pub(super) fn new() -> Self {
        let mut basis = [[[0f32; 8]; 8]; 4];
        for (level, table) in basis.iter_mut().enumerate() {
            let n = 1usize << level;
            let scale = (n as f32 / 8.0).sqrt();
            for (x, row) in table.iter_mut().enumerate().take(n) {
                for (u, b) in row.iter_mut().enumerate().take(n) {
                    let c = if u == 0 {
                        (1.0 / n as f32).sqrt()
                    } else {
                        (2.0 / n as f32).sqrt()
                    };
                    *b = scale * c * ((2 * x + 1) as f32 * u as f32 * PI / (2 * n) as f32).cos();
                }
            }
        }
        Self { basis }
    }

    fn of(&self, n: usize) -> &[[f32; 8]; 8] {
        &self.basis[n.trailing_zeros() as usize]
    }

    /// Writes the `nx × ny` pixels of `coefficients` (natural order, dequantized) at
    /// `out[0]`, rows `stride` apart. Only the top-left `nx × ny` coefficients are read.
    #[inline(always)]
    pub(super) fn transform(
        &self,
        coefficients: &[i32; 64],
        nx: usize,
        ny: usize,
        out: &mut [u8],
        stride: usize,
        only_dc: bool,
    ) {
        if (nx == 1 && ny == 1) || (only_dc && !always_transformed(nx, ny)) {
            // Flat block: the DC term alone, its average.
            fill(
                clamp(coefficients[0] as f32 / 8.0 + 128.0),
                nx,
                ny,
                out,
                stride,
            );
            return;
        }
        match (nx, ny) {
            (2, 2) => two_by_two(coefficients, out, stride),
            (4, 4) => four_by_four(coefficients, out, stride),
            _ => self.generic(coefficients, nx, ny, out, stride),
        }
    }

    /// Any size, from the basis tables. Kept out of line: its scratch space would
    /// otherwise be set up on every call of the small transforms that run per block.
    #[inline(never)]
    fn generic(
        &self,
        coefficients: &[i32; 64],
        nx: usize,
        ny: usize,
        out: &mut [u8],
        stride: usize,
    ) {
        let (bx, by) = (self.of(nx), self.of(ny));
        // Rows of frequencies v into columns x, then columns into pixels.
        let mut rows = [[0f32; 8]; 8];
        for v in 0..ny {
            let f = &coefficients[v * 8..v * 8 + nx];
            for x in 0..nx {
                let mut sum = 0.0;
                for u in 0..nx {
                    sum += bx[x][u] * f[u] as f32;
                }
                rows[v][x] = sum;
            }
        }
        for (y, row) in out.chunks_mut(stride).take(ny).enumerate() {
            for x in 0..nx {
                let mut sum = 0.0;
                for (v, r) in rows.iter().enumerate().take(ny) {
                    sum += by[y][v] * r[x];
                }
                row[x] = clamp(sum + 128.0);
            }
        }
    }
}

/// Whether blocks of this size are transformed even when flat: a 2×2 transform costs less
/// than a mispredicted branch (whether a chroma block at 1/8 has AC terms comes
/// unpredictably).
#[inline(always)]
pub(super) fn always_transformed(nx: usize, ny: usize) -> bool {
    nx == 2 && ny == 2
}

/// Fills the top-left `nx × ny` of a block stored `stride` apart with `v` (pixels of a flat
/// block, or coefficients cleared for the next one), in fixed-size stores for the usual
/// widths: a `memset` call for two to eight elements costs more than the block's transform,
/// and in WASM it is a call out to the runtime.
#[inline]
pub(super) fn fill<T: Copy>(v: T, nx: usize, ny: usize, out: &mut [T], stride: usize) {
    for y in 0..ny {
        let row = &mut out[y * stride..];
        match nx {
            1 => row[0] = v,
            2 => row[..2].copy_from_slice(&[v; 2]),
            4 => row[..4].copy_from_slice(&[v; 4]),
            8 => row[..8].copy_from_slice(&[v; 8]),
            _ => row[..nx].fill(v),
        }
    }
}

/// 2×2: every basis value is ±1/(2√2), so each pixel is (F00 ± F01 ± F10 ± F11) / 8.
#[inline]
fn two_by_two(f: &[i32; 64], out: &mut [u8], stride: usize) {
    // Wide enough that damaged data's huge coefficients cannot overflow.
    let (a, b, c, d) = (
        i64::from(f[0]),
        i64::from(f[1]),
        i64::from(f[8]),
        i64::from(f[9]),
    );
    let px = |sum: i64| (((sum + 4) >> 3) + 128).clamp(0, 255) as u8;
    out[0] = px(a + b + c + d);
    out[1] = px(a - b + c - d);
    out[stride] = px(a + b - c - d);
    out[stride + 1] = px(a - b - c + d);
}

type Lanes = [f32; 4];

#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> Lanes {
    [f(0), f(1), f(2), f(3)]
}

/// The 4-point inverse DCT scaled by √(4/8), split into even and odd halves; four at a
/// time (one per lane), which compilers turn into vector instructions.
#[inline(always)]
fn four_point(g: [Lanes; 4]) -> [Lanes; 4] {
    const DC: f32 = 0.353_553_4; // √(1/2) · 1/2
    const C2: f32 = 0.353_553_4; // 1/2 · cos(π/4)
    const C1: f32 = 0.461_939_8; // 1/2 · cos(π/8)
    const C3: f32 = 0.191_341_7; // 1/2 · cos(3π/8)
    let e0 = lanes(|i| DC * g[0][i] + C2 * g[2][i]);
    let e1 = lanes(|i| DC * g[0][i] - C2 * g[2][i]);
    let o0 = lanes(|i| C1 * g[1][i] + C3 * g[3][i]);
    let o1 = lanes(|i| C3 * g[1][i] - C1 * g[3][i]);
    [
        lanes(|i| e0[i] + o0[i]),
        lanes(|i| e1[i] + o1[i]),
        lanes(|i| e1[i] - o1[i]),
        lanes(|i| e0[i] - o0[i]),
    ]
}

#[inline]
fn four_by_four(f: &[i32; 64], out: &mut [u8], stride: usize) {
    // Down the columns (lanes: horizontal frequency), then across the rows (lanes: row).
    let rows: [Lanes; 4] = std::array::from_fn(|v| lanes(|u| f[v * 8 + u] as f32));
    let by_row = four_point(rows);
    let by_column: [Lanes; 4] = std::array::from_fn(|u| lanes(|y| by_row[y][u]));
    let pixels = four_point(by_column);
    for (y, row) in out.chunks_mut(stride).take(4).enumerate() {
        for (x, px) in row[..4].iter_mut().enumerate() {
            *px = clamp(pixels[x][y] + 128.0);
        }
    }
}

#[inline]
fn clamp(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::Bases;
    use std::f32::consts::PI;

    /// The exact 8×8 inverse DCT (JPEG's definition).
    fn full_idct(f: &[i32; 64]) -> [[f32; 8]; 8] {
        let mut out = [[0f32; 8]; 8];
        for (y, row) in out.iter_mut().enumerate() {
            for (x, px) in row.iter_mut().enumerate() {
                let mut sum = 0.0;
                for v in 0..8 {
                    for u in 0..8 {
                        let cu = if u == 0 { 1.0 / 2f32.sqrt() } else { 1.0 };
                        let cv = if v == 0 { 1.0 / 2f32.sqrt() } else { 1.0 };
                        sum += cu
                            * cv
                            * f[v * 8 + u] as f32
                            * ((2 * x + 1) as f32 * u as f32 * PI / 16.0).cos()
                            * ((2 * y + 1) as f32 * v as f32 * PI / 16.0).cos();
                    }
                }
                *px = sum / 4.0 + 128.0;
            }
        }
        out
    }

    #[test]
    fn the_full_size_transform_is_jpegs_inverse_dct() {
        let mut f = [0i32; 64];
        for (i, c) in f.iter_mut().enumerate() {
            *c = ((i as i32 * 37) % 61) - 30;
        }
        f[0] = 240;
        let want = full_idct(&f);
        let mut out = [0u8; 64];
        Bases::new().transform(&f, 8, 8, &mut out, 8, false);
        for y in 0..8 {
            for x in 0..8 {
                let w = want[y][x].round().clamp(0.0, 255.0);
                assert!(
                    (out[y * 8 + x] as f32 - w).abs() <= 1.0,
                    "({x},{y}) {} vs {w}",
                    out[y * 8 + x]
                );
            }
        }
    }

    #[test]
    fn the_fixed_small_transforms_agree_with_the_basis_tables() {
        let bases = Bases::new();
        for seed in 0..50i32 {
            let mut f = [0i32; 64];
            for (i, c) in f.iter_mut().enumerate() {
                *c = ((i as i32 * 7919 + seed * 104_729) % 301) - 150;
            }
            for n in [2, 4] {
                let (mut fixed, mut table) = ([0u8; 16], [0u8; 16]);
                bases.transform(&f, n, n, &mut fixed, n, false);
                bases.generic(&f, n, n, &mut table, n);
                for (a, b) in fixed.iter().zip(&table) {
                    assert!(a.abs_diff(*b) <= 1, "{n}x{n}: {fixed:?} vs {table:?}");
                }
            }
        }
    }

    #[test]
    fn a_reduced_transform_of_low_frequencies_gives_the_block_averages() {
        // Only low frequencies: the 2×2 decode equals the full block's 4×4 quadrant
        // averages up to the truncated terms' small share.
        let mut f = [0i32; 64];
        f[0] = -200;
        f[1] = 60;
        f[8] = -45;
        f[9] = 20;
        let full = full_idct(&f);
        let mut out = [0u8; 4];
        Bases::new().transform(&f, 2, 2, &mut out, 2, false);
        for qy in 0..2 {
            for qx in 0..2 {
                let mut avg = 0.0;
                for y in 0..4 {
                    for x in 0..4 {
                        avg += full[qy * 4 + y][qx * 4 + x];
                    }
                }
                avg /= 16.0;
                let got = out[qy * 2 + qx] as f32;
                assert!(
                    (got - avg).abs() <= 3.0,
                    "quadrant ({qx},{qy}): {got} vs {avg}"
                );
            }
        }
        let mut dc = [0u8; 1];
        Bases::new().transform(&f, 1, 1, &mut dc, 1, false);
        assert_eq!(dc[0], (128.0f32 - 200.0 / 8.0).round() as u8);
    }
}
