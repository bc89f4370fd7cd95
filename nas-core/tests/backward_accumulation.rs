//! The backward pass of the patched candle-core (vendor/candle-core/PATCHED.md) keeps a node's
//! first gradient as it is instead of adding it to a zero tensor. Closed forms where that could
//! go wrong: one tensor reached along several paths (its contributions summed, the first one
//! shared by both sides of an addition), later contributions added in place into a sum that
//! only the store holds and never into one that another gradient shares, a first gradient
//! that is a strided view, and a second backward pass over the same graph.

use candle_core::{DType, Device, Tensor, Var};

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn close(what: &str, got: &Tensor, want: &[f64]) {
    let got = values(got);
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn a_tensor_on_several_paths_sums_its_contributions() {
    let x = Var::from_vec(vec![1.0f64, -2.0, 0.5, 3.0], (2, 2), &Device::Cpu).unwrap();
    // L = Σ (x + x)·x + 3x = Σ 2x² + 3x: dL/dx = 4x + 3.
    let doubled = (x.as_tensor() + x.as_tensor()).unwrap();
    let loss = ((&doubled * x.as_tensor()).unwrap() + (x.as_tensor() * 3.0).unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    close("dL/dx", g.get(&x).unwrap(), &[7.0, -5.0, 5.0, 15.0]);
}

#[test]
fn two_variables_sharing_their_first_gradient_keep_their_own_sums() {
    let a = Var::from_vec(vec![1.0f64, 2.0, 3.0], 3, &Device::Cpu).unwrap();
    let b = Var::from_vec(vec![-1.0f64, 0.5, 4.0], 3, &Device::Cpu).unwrap();
    // L = Σ (a + b)·c + a²: dL/da = c + 2a, dL/db = c.
    let c = Tensor::new(&[2.0f64, -3.0, 0.25], &Device::Cpu).unwrap();
    let s = (a.as_tensor() + b.as_tensor()).unwrap();
    let loss = ((&s * &c).unwrap() + a.as_tensor().sqr().unwrap()).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    close("dL/da", g.get(&a).unwrap(), &[4.0, 1.0, 6.25]);
    close("dL/db", g.get(&b).unwrap(), &[2.0, -3.0, 0.25]);
    // A second pass over the same graph gives the same gradients (nothing was summed in place).
    let again = loss.backward().unwrap();
    close("dL/da again", again.get(&a).unwrap(), &[4.0, 1.0, 6.25]);
    close("dL/db again", again.get(&b).unwrap(), &[2.0, -3.0, 0.25]);
}

#[test]
fn a_strided_first_gradient_is_stored_contiguous_and_correct() {
    let w = Var::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3), &Device::Cpu).unwrap();
    let m = Tensor::new(&[[1.0f64, 0.0], [2.0, -1.0], [0.5, 3.0]], &Device::Cpu).unwrap();
    // L = Σ (wᵀ ⊙ m): dL/dw = mᵀ, reached through a transpose (a strided view of the gradient).
    let loss = w.as_tensor().t().unwrap().mul(&m).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    let gw = g.get(&w).unwrap();
    assert!(gw.is_contiguous(), "the stored gradient is contiguous");
    close("dL/dw", gw, &[1.0, 2.0, 0.5, 0.0, -1.0, 3.0]);
}

#[test]
fn sums_shared_with_another_gradient_are_not_added_into() {
    let x = Var::from_vec(vec![0.5f64, -1.0, 2.0, 4.0], 4, &Device::Cpu).unwrap();
    let w = Var::from_vec(vec![3.0f64, 1.0, -2.0, 0.0], 4, &Device::Cpu).unwrap();
    let a = Tensor::new(&[1.0f64, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
    let b = Tensor::new(&[-1.0f64, 0.5, 0.25, 2.0], &Device::Cpu).unwrap();
    let c = Tensor::new(&[10.0f64, 20.0, 30.0, 40.0], &Device::Cpu).unwrap();
    // L = Σ (x + w)·a + x·b + x·c: x and w first get one shared gradient a (from the sum);
    // x's later contributions b and c must not reach w's gradient, which stays a.
    let z = (x.as_tensor() + w.as_tensor()).unwrap();
    let terms = [(&z * &a).unwrap(), (x.as_tensor() * &b).unwrap(), (x.as_tensor() * &c).unwrap()];
    let loss = ((&terms[0] + &terms[1]).unwrap() + &terms[2]).unwrap().sum_all().unwrap();
    let g = loss.backward().unwrap();
    close("dL/dw", g.get(&w).unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    close("dL/dx", g.get(&x).unwrap(), &[10.0, 22.5, 33.25, 46.0]);
}

#[test]
fn many_contributions_sum_in_place_to_the_closed_form() {
    let x = Var::from_vec((0..90_000).map(|i| f64::from(i) * 1e-5).collect(), (3, 30_000), &Device::Cpu).unwrap();
    // L = Σ_k Σ x²·k for k = 1..6: dL/dx = 2x·21 (a buffer large enough for the threaded sum).
    let mut loss = Tensor::zeros((), DType::F64, &Device::Cpu).unwrap();
    for k in 1..=6 {
        loss = (loss + (x.as_tensor().sqr().unwrap() * f64::from(k)).unwrap().sum_all().unwrap()).unwrap();
    }
    let g = loss.backward().unwrap();
    let want: Vec<f64> = (0..90_000).map(|i| 42.0 * f64::from(i) * 1e-5).collect();
    close("dL/dx", g.get(&x).unwrap(), &want);
}

/// The input gradient of a convolution is skipped where no variable is behind its input (a
/// network's images); its weight gradient is the closed form Σ over batch and output positions
/// of the input patch, with or without a gradient for the input.
#[test]
fn a_convolution_on_constant_input_still_gets_its_weight_gradient() {
    let dev = Device::Cpu;
    let xs: Vec<f64> = (0..2 * 3 * 5 * 5).map(|i| ((i * 7) % 11) as f64 - 5.0).collect();
    let x = Tensor::from_vec(xs.clone(), (2, 3, 5, 5), &dev).unwrap();
    let w = Var::from_vec((0..4 * 3 * 3 * 3).map(|i| f64::from(i) * 0.01).collect(), (4, 3, 3, 3), &dev).unwrap();
    let g = x.conv2d(w.as_tensor(), 0, 1, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none(), "no gradient for the constant input");
    let mut want = vec![0.0; 4 * 27];
    for o in 0..4 {
        for c in 0..3 {
            for (i, j) in (0..3).flat_map(|i| (0..3).map(move |j| (i, j))) {
                let mut s = 0.0;
                for b in 0..2 {
                    for (y, xx) in (0..3).flat_map(|y| (0..3).map(move |xx| (y, xx))) {
                        s += xs[((b * 3 + c) * 5 + y + i) * 5 + xx + j];
                    }
                }
                want[((o * 3 + c) * 3 + i) * 3 + j] = s;
            }
        }
    }
    close("dL/dw", g.get(&w).unwrap(), &want);
    // With the input a variable, the same weight gradient, and the input's own: Σ of w over
    // the windows covering each pixel.
    let xv = Var::from_tensor(&x).unwrap();
    let g = xv.as_tensor().conv2d(w.as_tensor(), 0, 1, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
    close("dL/dw with a variable input", g.get(&w).unwrap(), &want);
    let wsum: Vec<f64> = (0..3 * 9).map(|k| (0..4).map(|o| f64::from((o * 27 + k) as u32) * 0.01).sum()).collect();
    let gx = values(g.get(&xv).unwrap());
    // The centre pixel (2, 2) of every plane is covered by all nine taps.
    for (b, c) in [(0, 0), (1, 2)] {
        let want_centre: f64 = (0..9).map(|t| wsum[c * 9 + t]).sum();
        let got = gx[((b * 3 + c) * 5 + 2) * 5 + 2];
        assert!((got - want_centre).abs() < 1e-12, "dL/dx centre: {got} vs {want_centre}");
    }
}

/// Copies of 2¹⁶ elements or more run their rows in parallel: a concatenation along channels
/// of (B, C, H, W) tensors and its inputs' gradients (narrowed views of the output gradient,
/// made contiguous), element by element against the index formula, on the default pool and on
/// a pool of three threads (more rows than threads, rows of unequal count per thread).
#[test]
fn large_concatenations_and_their_gradients_copy_every_row() {
    let run = || {
        let (b, hw) = (5usize, 32 * 32);
        let chans = [3usize, 16, 7];
        let total: usize = chans.iter().sum();
        let value = |i: usize, k: usize| (i * 7 + k * 1000) as f64 * 0.5 - 3.0;
        let xs: Vec<Var> = chans
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let v: Vec<f64> = (0..b * c * hw).map(|k| value(i, k)).collect();
                Var::from_vec(v, (b, c, 32, 32), &Device::Cpu).unwrap()
            })
            .collect();
        let refs: Vec<&Tensor> = xs.iter().map(|v| v.as_tensor()).collect();
        let y = Tensor::cat(&refs, 1).unwrap();
        assert!(y.elem_count() >= 1 << 16);
        let got = values(&y);
        let mut c0 = 0;
        for (i, &c) in chans.iter().enumerate() {
            for n in 0..b {
                for k in 0..c * hw {
                    assert_eq!(got[(n * total + c0) * hw + k], value(i, n * c * hw + k), "cat input {i}");
                }
            }
            c0 += c;
        }
        // L = Σ y·m with m[j] = j: each input's gradient is its slice of m.
        let m = Tensor::arange(0f64, y.elem_count() as f64, &Device::Cpu).unwrap().reshape(y.shape()).unwrap();
        let g = (&y * &m).unwrap().sum_all().unwrap().backward().unwrap();
        let mut c0 = 0;
        for (x, &c) in xs.iter().zip(&chans) {
            let want: Vec<f64> =
                (0..b * c * hw).map(|k| ((k / (c * hw) * total + c0) * hw + k % (c * hw)) as f64).collect();
            close("d/dx of a concatenated input", g.get(x).unwrap(), &want);
            c0 += c;
        }
    };
    run();
    rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
}
