//! The layout the sliding-window kernels (depthwise convolution, 3×3 pooling) work in.
//!
//! A plane is zero- (or −∞-) padded and split into s×s stride phases, phase (a, b) holding
//! padded pixels (s·i + a, s·j + b) in rows of `ws` = ⌈Wp/s⌉. In that layout the tap (kh, kw)
//! of every output pixel is the same phase element shifted by one constant offset, so a whole
//! tap is one contiguous multiply-add over `oh·ws` elements (the `ws − ow` extra columns per
//! row are scratch, zero on the gradient side), long loops that vectorise, instead of short
//! per-row loops with border checks.

#[cfg(test)]
use super::simd::dot;
use super::simd::relu_rows;
use super::{put_all, Float, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub d: usize,
    pub p: usize,
    pub oh: usize,
    pub ow: usize,
    ws: usize,
    phase_len: usize,
}

impl Window {
    /// k×k window, stride s, dilation d, padding p over an h×w plane; None when the window
    /// does not fit the padded plane.
    pub fn new(h: usize, w: usize, k: usize, s: usize, d: usize, p: usize) -> Option<Self> {
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let span = d * (k.max(1) - 1) + 1;
        if k == 0 || s == 0 || d == 0 || hp < span || wp < span || h == 0 || w == 0 {
            return None;
        }
        let (oh, ow) = ((hp - span) / s + 1, (wp - span) / s + 1);
        let (hs, ws) = (hp.div_ceil(s), wp.div_ceil(s));
        // Reads of the scratch columns of the last rows run past the phase's rows.
        let phase_len = (hs + 1) * ws + span;
        Some(Self { h, w, k, s, d, p, oh, ow, ws, phase_len })
    }

    pub fn phases_len(&self) -> usize {
        self.s * self.s * self.phase_len
    }

    /// Length of one of the s×s phases.
    pub fn phase_len(&self) -> usize {
        self.phase_len
    }

    /// Length of the output in the phase layout (`oh` rows of `ws`).
    pub fn full_len(&self) -> usize {
        self.oh * self.ws
    }

    /// Start, in the phases buffer, of tap (kh, kw) for output pixel 0.
    #[inline]
    pub fn tap(&self, kh: usize, kw: usize) -> usize {
        let (r, c) = (kh * self.d, kw * self.d);
        ((r % self.s) * self.s + c % self.s) * self.phase_len + (r / self.s) * self.ws + c / self.s
    }

    /// Where image row `iy` starts in `phases` when s = 1 (the row is stored whole).
    #[inline]
    fn row_start(&self, iy: usize) -> usize {
        (iy + self.p) * self.ws + self.p
    }

    /// With s > 1, calls `f(iy, ix0, start)` for every run of the image in the phase layout:
    /// image row `iy`'s columns ix0, ix0 + s, ix0 + 2s, … (one column phase) are stored one
    /// after another from `start` in `phases`. No division per row or run: the row's phase
    /// and phase row are counted up, and column phase b holds image columns from (b − p) mod s,
    /// at phase column ⌈(p − b)/s⌉.
    #[inline]
    fn for_strided_runs(&self, mut f: impl FnMut(usize, usize, usize)) {
        let (s, pm, pq) = (self.s, self.p % self.s, self.p / self.s);
        // Padded row y = iy + p: phase y mod s, row y / s of that phase.
        let (mut r, mut q) = (pm, pq);
        for iy in 0..self.h {
            let base = r * s * self.phase_len + q * self.ws;
            for b in 0..s {
                let ix0 = if b >= pm { b - pm } else { b + s - pm };
                if ix0 < self.w {
                    f(iy, ix0, base + b * self.phase_len + pq + usize::from(b < pm));
                }
            }
            r += 1;
            if r == s {
                r = 0;
                q += 1;
            }
        }
    }

    /// Writes plane `x` (h×w) into the interior of `phases`; the border keeps its fill.
    pub fn split<T: Float>(&self, x: &[T], phases: &mut [T]) {
        let (w, s) = (self.w, self.s);
        if s == 1 {
            for (iy, row) in x.chunks_exact(w).take(self.h).enumerate() {
                let start = self.row_start(iy);
                phases[start..start + w].copy_from_slice(row);
            }
            return;
        }
        self.for_strided_runs(|iy, ix0, start| {
            for (d, &v) in phases[start..].iter_mut().zip(x[iy * w + ix0..(iy + 1) * w].iter().step_by(s)) {
                *d = v;
            }
        });
    }

    /// `split` of ReLU(x): the same layout, negative pixels written as 0 (NaN kept, as
    /// `relu_into`).
    pub fn split_relu<T: Float>(&self, x: &[T], phases: &mut [T]) {
        let (w, s) = (self.w, self.s);
        if s == 1 {
            relu_rows(phases, self.row_start(0), self.ws, &x[..self.h * w], w);
            return;
        }
        self.for_strided_runs(|iy, ix0, start| {
            for (d, &v) in phases[start..].iter_mut().zip(x[iy * w + ix0..(iy + 1) * w].iter().step_by(s)) {
                *d = if v < T::zero() { T::zero() } else { v };
            }
        });
    }

    /// Reads the interior of `phases` back into plane `x` (h×w), writing every element.
    pub fn merge<T: Float, S: Slot<T>>(&self, phases: &[T], x: &mut [S]) {
        let (w, s) = (self.w, self.s);
        if s == 1 {
            for (iy, row) in x.chunks_exact_mut(w).take(self.h).enumerate() {
                let start = self.row_start(iy);
                put_all(row, &phases[start..start + w]);
            }
            return;
        }
        self.for_strided_runs(|iy, ix0, start| {
            for (v, &p) in x[iy * w + ix0..(iy + 1) * w].iter_mut().step_by(s).zip(&phases[start..]) {
                v.put(p);
            }
        });
    }

    /// o (oh×ow) from the valid columns of `full`, writing every element.
    pub fn extract<T: Float, S: Slot<T>>(&self, full: &[T], o: &mut [S]) {
        for oy in 0..self.oh {
            put_all(&mut o[oy * self.ow..(oy + 1) * self.ow], &full[oy * self.ws..oy * self.ws + self.ow]);
        }
    }

    /// `full` from o (oh×ow); the scratch columns must already be zero and stay so.
    pub fn embed<T: Float>(&self, o: &[T], full: &mut [T]) {
        for oy in 0..self.oh {
            full[oy * self.ws..oy * self.ws + self.ow].copy_from_slice(&o[oy * self.ow..(oy + 1) * self.ow]);
        }
    }

    /// 1/(number of in-image pixels) of every output window (average pooling without the
    /// padding), in the phase layout, zero in the scratch columns.
    pub fn inv_counts<T: Float>(&self) -> Vec<T> {
        let mut v = vec![T::zero(); self.full_len()];
        let span = self.d * (self.k - 1) + 1;
        let count = |o: usize, n: usize| {
            let lo = (o * self.s).max(self.p);
            let hi = (o * self.s + span).min(self.p + n);
            hi.saturating_sub(lo)
        };
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let c = count(oy, self.h) * count(ox, self.w);
                v[oy * self.ws + ox] = if c > 0 { T::from_f64(1.0 / c as f64) } else { T::zero() };
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct evaluation of one tap against the phase layout, all stride/dilation/padding
    /// combinations of the DARTS ops and odd sizes.
    #[test]
    fn taps_address_the_padded_input() {
        for (k, s, d, p) in
            [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 1, 2), (5, 2, 1, 2), (3, 1, 2, 2), (3, 2, 2, 2), (5, 2, 2, 4)]
        {
            for (h, w) in [(7, 7), (8, 6), (5, 9)] {
                let win = Window::new(h, w, k, s, d, p).unwrap();
                let x: Vec<f64> = (0..h * w).map(|i| i as f64 + 1.0).collect();
                let mut ph = vec![0.0; win.phases_len()];
                win.split(&x, &mut ph);
                let mut back = vec![0.0; h * w];
                win.merge(&ph, &mut back);
                assert_eq!(back, x);
                let shifted: Vec<f64> = x.iter().map(|v| v - 20.0).collect();
                let mut ph_relu = vec![0.0; win.phases_len()];
                win.split_relu(&shifted, &mut ph_relu);
                win.merge(&ph_relu, &mut back);
                assert_eq!(back, shifted.iter().map(|v| v.max(0.0)).collect::<Vec<_>>());
                for kh in 0..k {
                    for kw in 0..k {
                        let t = win.tap(kh, kw);
                        for oy in 0..win.oh {
                            for ox in 0..win.ow {
                                let (y, xx) =
                                    ((oy * s + kh * d) as isize - p as isize, (ox * s + kw * d) as isize - p as isize);
                                let want = if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                    x[y as usize * w + xx as usize]
                                } else {
                                    0.0
                                };
                                assert_eq!(ph[t + oy * win.ws + ox], want, "k{k} s{s} d{d} p{p} {h}x{w}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn dot_matches_naive_sum() {
        let a: Vec<f64> = (0..37).map(|i| i as f64 * 0.5).collect();
        let b: Vec<f64> = (0..37).map(|i| 1.0 - i as f64).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-9);
    }
}
