//! Architecture parameters start as 1e-3·N(0, 1), as in DARTS (`1e-3 * torch.randn(k, n)`),
//! PC-DARTS (β too) and NAS-Bench-201's search code: the pooled entries of many seeds have a
//! mean within a few standard errors of 0, a standard deviation within 10% of 1e-3 and the
//! normal's mass within one and two σ; the same seed draws the same α, another seed others.

use candle_core::{DType, Device, Tensor};
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};
use search_spaces::nb201::{Nb201Config, Nb201Network};

const SIGMA: f64 = 1e-3;

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

/// `x` looks like `n` draws of SIGMA·N(0, 1).
fn assert_scaled_standard_normal(x: &[f64], what: &str) {
    let n = x.len() as f64;
    // 10% on σ is at least four standard errors (≈ 1/√(2n) relative) from here on.
    assert!(n >= 800.0, "{what}: only {n} entries");
    let mean = x.iter().sum::<f64>() / n;
    let std = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!(mean.abs() < 4.0 * SIGMA / n.sqrt(), "{what}: mean {mean:e} over {n} entries");
    assert!((std / SIGMA - 1.0).abs() < 0.1, "{what}: std {std:e}");
    // The shape, not just the scale: a uniform law of the same σ puts 57.7% within 1σ.
    for (k, p) in [(1.0, 0.682_689_5), (2.0, 0.954_499_7)] {
        let inside = x.iter().filter(|v| v.abs() < k * SIGMA).count() as f64 / n;
        let tol = 5.0 * (p * (1.0 - p) / n).sqrt();
        assert!((inside - p).abs() < tol, "{what}: {inside} within {k}σ, want {p} ± {tol}");
    }
}

fn darts(seed: u64) -> DartsSupernet {
    // Edge normalisation adds PC-DARTS' β, drawn the same way.
    let cfg = DartsSupernetConfig { channels: 2, layers: 3, edge_norm: true, ..Default::default() };
    DartsSupernet::new(cfg, seed, DType::F32, &Device::Cpu).unwrap()
}

fn arch(net: &DartsSupernet, name: &str) -> Vec<f64> {
    values(&net.arch().get(name).unwrap().value().unwrap())
}

#[test]
fn darts_alphas_and_betas_are_1e_3_standard_normal() {
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    for seed in 0..30 {
        let net = darts(seed);
        let (normal, reduce) = (arch(&net, "alphas_normal"), arch(&net, "alphas_reduce"));
        assert_eq!((normal.len(), reduce.len()), (14 * 8, 14 * 8));
        // Two draws, not one reused for both cell types.
        assert!(normal.iter().zip(&reduce).all(|(a, b)| a != b), "seed {seed}");
        alphas.extend(normal.into_iter().chain(reduce));
        betas.extend(arch(&net, "betas_normal").into_iter().chain(arch(&net, "betas_reduce")));
    }
    assert_scaled_standard_normal(&alphas, "DARTS α");
    assert_scaled_standard_normal(&betas, "PC-DARTS β");
}

#[test]
fn darts_alphas_follow_the_seed() {
    let (a, b, c) = (darts(7), darts(7), darts(8));
    for name in ["alphas_normal", "alphas_reduce", "betas_normal", "betas_reduce"] {
        assert_eq!(arch(&a, name), arch(&b, name), "{name}: same seed");
        assert!(arch(&a, name).iter().zip(&arch(&c, name)).all(|(x, y)| x != y), "{name}: another seed");
    }
}

fn nb201(seed: u64) -> Vec<f64> {
    let cfg = Nb201Config { channels: 2, cells_per_stage: 1, ..Default::default() };
    let net = Nb201Network::search(cfg, seed, DType::F32, &Device::Cpu).unwrap();
    values(&net.arch().get("arch_parameters").unwrap().value().unwrap())
}

#[test]
fn nb201_alphas_are_1e_3_standard_normal() {
    let mut alphas = Vec::new();
    for seed in 0..200 {
        let a = nb201(seed);
        assert_eq!(a.len(), 6 * 5);
        alphas.extend(a);
    }
    assert_scaled_standard_normal(&alphas, "NB201 α");
    assert_eq!(nb201(3), nb201(3));
    assert!(nb201(3).iter().zip(&nb201(4)).all(|(x, y)| x != y));
}
