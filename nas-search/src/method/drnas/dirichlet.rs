//! The Dirichlet distribution on the host, in f64: draws (Gamma variates by Marsaglia and
//! Tsang, normalised), the pathwise (implicit reparameterisation) gradient of a draw with
//! respect to its concentration, and the KL divergence to the flat Dirichlet.
//!
//! The pathwise gradient is PyTorch's (`torch.distributions.Dirichlet.rsample`, whose backward
//! is `_dirichlet_grad(x, β, Σβ) * (grad_output − (x·grad_output).sum(-1))`): each coordinate
//! x_k of x ~ Dir(β) is Beta(β_k, β₀ − β_k) distributed (β₀ = Σβ), and
//! g_k = −(∂F/∂β_k)/(f·(1 − x_k)) with F, f the Beta's CDF and density at x_k
//! (`dirichlet_grad_one`). It has no closed form; as ATen/native/Distributions.h does, it is
//! approximated by a Taylor series when x_k is near 0, by the series of the other Beta
//! parameter when x_k is near 1, by a Rice saddle-point expansion when both Beta parameters
//! exceed 6, and otherwise by a fitted rational correction of x_k(ψ(β₀) − ψ(β_k))/(β₀ − β_k)
//! (the fitted coefficients are PyTorch's, BSD-licensed, from Jankowiak and Obermeyer 2018,
//! "Pathwise Derivatives Beyond the Reparameterization Trick"). Everything runs in f64, as
//! PyTorch's double instantiation, whatever the network's dtype.

use nas_core::rng::Rng;
use rand::Rng as _;

/// The smallest coordinate of a draw: a Gamma variate of a small concentration underflows,
/// and PyTorch clamps the same way.
const TINY: f64 = f64::MIN_POSITIVE;

/// ψ(10), where the recurrence of `digamma` stops.
const PSI_10: f64 = 2.251_752_589_066_721;

/// The digamma function ψ(x) for x > 0: the recurrence ψ(x) = ψ(x + 1) − 1/x up to x ≥ 10,
/// then the asymptotic series ln x − 1/(2x) − Σ B₂ₖ/(2k x²ᵏ) to k = 7 (Cephes' method).
pub fn digamma(x: f64) -> f64 {
    if x == 0.0 {
        return f64::INFINITY;
    }
    let (mut x, mut acc) = (x, 0.0);
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    if x == 10.0 {
        return acc + PSI_10;
    }
    // B₂ₖ/(2k), k = 7 down to 1, for Horner's scheme in z = 1/x².
    const B: [f64; 7] =
        [1.0 / 12.0, -691.0 / 32760.0, 1.0 / 132.0, -1.0 / 240.0, 1.0 / 252.0, -1.0 / 120.0, 1.0 / 12.0];
    let series = if x < 1e17 {
        let z = 1.0 / (x * x);
        z * B.iter().fold(0.0, |s, &b| s * z + b)
    } else {
        0.0
    };
    acc + x.ln() - 0.5 / x - series
}

/// The trigamma function ψ′(x) for x > 0: ψ′(x) = ψ′(x + 1) + 1/x² up to x ≥ 10, then
/// 1/x + 1/(2x²) + Σ B₂ₖ/x²ᵏ⁺¹.
pub fn trigamma(x: f64) -> f64 {
    let (mut x, mut acc) = (x, 0.0);
    while x < 10.0 {
        acc += 1.0 / (x * x);
        x += 1.0;
    }
    // B₂ₖ, k = 6 down to 1, for Horner's scheme in z = 1/x².
    const B: [f64; 6] = [-691.0 / 2730.0, 5.0 / 66.0, -1.0 / 30.0, 1.0 / 42.0, -1.0 / 30.0, 1.0 / 6.0];
    let z = 1.0 / (x * x);
    acc + 1.0 / x + 0.5 * z + z / x * B.iter().fold(0.0, |s, &b| s * z + b)
}

/// ln Γ(x) for x > 0: ln Γ(x) = ln Γ(x + 1) − ln x up to x ≥ 10, then Stirling's series.
pub fn ln_gamma(x: f64) -> f64 {
    let (mut x, mut acc) = (x, 0.0);
    while x < 10.0 {
        acc -= x.ln();
        x += 1.0;
    }
    // B₂ₖ/(2k(2k − 1)), k = 6 down to 1, for Horner's scheme in z = 1/x².
    const B: [f64; 6] = [-691.0 / 360360.0, 1.0 / 1188.0, -1.0 / 1680.0, 1.0 / 1260.0, -1.0 / 360.0, 1.0 / 12.0];
    let z = 1.0 / (x * x);
    let half_ln_2pi = 0.5 * (2.0 * std::f64::consts::PI).ln();
    acc + (x - 0.5) * x.ln() - x + half_ln_2pi + B.iter().fold(0.0, |s, &b| s * z + b) / x
}

/// A standard normal variate (Box–Muller).
fn standard_normal(rng: &mut Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// A Gamma(a, 1) variate, a > 0: Marsaglia and Tsang's rejection method (2000), with
/// Gamma(a) = Gamma(a + 1)·U^{1/a} for a < 1.
pub fn sample_gamma(rng: &mut Rng, a: f64) -> f64 {
    let (a, scale) = if a < 1.0 { (a + 1.0, (1.0 - rng.random::<f64>()).powf(1.0 / a)) } else { (a, 1.0) };
    let d = a - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (z, v) = loop {
            let z = standard_normal(rng);
            let t = 1.0 + c * z;
            if t > 0.0 {
                break (z, t * t * t);
            }
        };
        let u = 1.0 - rng.random::<f64>();
        let z2 = z * z;
        if u < 1.0 - 0.0331 * z2 * z2 || u.ln() < 0.5 * z2 + d * (1.0 - v + v.ln()) {
            return (scale * d * v).max(TINY);
        }
    }
}

/// A draw of Dir(β): independent Gamma(β_k) variates over their sum, each coordinate kept in
/// [TINY, 1 − ε] as PyTorch's `_sample_dirichlet` does.
pub fn sample_dirichlet(rng: &mut Rng, beta: &[f64]) -> Vec<f64> {
    let gammas: Vec<f64> = beta.iter().map(|&b| sample_gamma(rng, b)).collect();
    let total: f64 = gammas.iter().sum();
    gammas.iter().map(|g| (g / total).clamp(TINY, 1.0 - f64::EPSILON)).collect()
}

/// The pathwise gradient of every coordinate of a draw `x` of Dir(`beta`) with respect to its
/// own concentration (`dirichlet_grad_one` of each, non-finite values as 0).
pub fn dirichlet_grad(x: &[f64], beta: &[f64]) -> Vec<f64> {
    let total: f64 = beta.iter().sum();
    x.iter()
        .zip(beta)
        .map(|(&x, &b)| {
            let g = dirichlet_grad_one(x, b, total);
            if g.is_finite() {
                g
            } else {
                0.0
            }
        })
        .collect()
}

/// The vector-Jacobian product of a draw `x` of Dir(`beta`) with `grad_out`: the gradient of
/// Σ grad_out·x with respect to β, g_k·(grad_out_k − Σ_j x_j·grad_out_j) — the backward of
/// PyTorch's `Dirichlet.rsample`.
pub fn dirichlet_vjp(x: &[f64], beta: &[f64], grad_out: &[f64]) -> Vec<f64> {
    let dot: f64 = x.iter().zip(grad_out).map(|(a, b)| a * b).sum();
    dirichlet_grad(x, beta).iter().zip(grad_out).map(|(g, o)| g * (o - dot)).collect()
}

/// The scaled pathwise gradient of a Beta(`alpha`, `total` − `alpha`) draw `x` with respect to
/// `alpha`: −(∂F/∂α)/(f·(1 − x)).
pub fn dirichlet_grad_one(x: f64, alpha: f64, total: f64) -> f64 {
    let beta = total - alpha;
    let boundary = total * x * (1.0 - x);
    if x <= 0.5 && boundary < 2.5 {
        return beta_grad_alpha_small(x, alpha, beta);
    }
    if x >= 0.5 && boundary < 0.75 {
        return -beta_grad_beta_small(1.0 - x, beta, alpha);
    }
    if alpha > 6.0 && beta > 6.0 {
        return beta_grad_alpha_mid(x, alpha, beta);
    }
    rational_correction(x, alpha, total) * x * (digamma(total) - digamma(alpha)) / beta
}

/// Near x = 0: the Taylor series of the Beta CDF's derivative in α, to x¹⁰.
fn beta_grad_alpha_small(x: f64, alpha: f64, beta: f64) -> f64 {
    let factor = digamma(alpha) - digamma(alpha + beta) - x.ln();
    let mut numer = 1.0;
    let mut series = numer / alpha * (factor + 1.0 / alpha);
    for i in 1..=10 {
        let i = i as f64;
        numer *= (i - beta) * x / i;
        let denom = alpha + i;
        series += numer / denom * (factor + 1.0 / denom);
    }
    let r = x * (1.0 - x).powf(-beta) * series;
    if r.is_nan() {
        0.0
    } else {
        r
    }
}

/// Near x = 0 (for the other coordinate): the Taylor series of the Beta CDF's derivative in β,
/// to x⁸.
fn beta_grad_beta_small(x: f64, alpha: f64, beta: f64) -> f64 {
    let factor = digamma(alpha + beta) - digamma(beta);
    let (mut numer, mut betas, mut dbetas) = (1.0, 1.0, 0.0);
    let mut series = factor / alpha;
    for i in 1..=8 {
        let i = i as f64;
        numer *= -x / i;
        dbetas = dbetas * (beta - i) + betas;
        betas *= beta - i;
        series += numer / (alpha + i) * (dbetas + factor * betas);
    }
    let r = -(1.0 - x).powf(1.0 - beta) * series;
    if r.is_nan() {
        0.0
    } else {
        r
    }
}

/// Both Beta parameters large: the Rice saddle-point expansion, with its polynomial form
/// within a tenth of a standard deviation of the mean where the expansion is singular.
fn beta_grad_alpha_mid(x: f64, alpha: f64, beta: f64) -> f64 {
    let total = alpha + beta;
    let mean = alpha / total;
    let std = (alpha * beta / (total + 1.0)).sqrt() / total;
    let (a2, b2) = (alpha * alpha, beta * beta);
    if (mean - 0.1 * std..=mean + 0.1 * std).contains(&x) {
        let poly = 47.0 * x * b2 * b2
            + alpha
                * ((43.0 + 20.0 * (16.0 + 27.0 * beta) * x) * b2 * beta
                    + alpha
                        * (3.0 * (59.0 + 180.0 * beta - 90.0 * x) * b2
                            + alpha
                                * ((453.0 + 1620.0 * beta * (1.0 - x) - 455.0 * x) * beta
                                    + alpha * (8.0 * (1.0 - x) * (135.0 * beta - 11.0)))));
        let prefactor_num = (1.0 + 12.0 * alpha) * (1.0 + 12.0 * beta) / (total * total);
        let prefactor_den = 12960.0 * a2 * alpha * b2 * (1.0 + 12.0 * total);
        return prefactor_num / (1.0 - x) * poly / prefactor_den;
    }
    let prefactor = -x / (2.0 * alpha * beta / total).sqrt();
    let stirling_of = |v: f64| 1.0 + 1.0 / (12.0 * v) + 1.0 / (288.0 * v * v);
    let stirling = stirling_of(alpha) * stirling_of(beta) / stirling_of(total);
    let axbx = alpha * (x - 1.0) + beta * x;
    let term1 = (2.0 * a2 * (x - 1.0) + alpha * beta * (x - 1.0) - x * b2)
        / ((2.0 * alpha / beta).sqrt() * total.powf(1.5) * axbx * axbx);
    let term2 = 0.5 * (alpha / (total * x)).ln();
    let term3 = (8.0 * alpha * beta / total).sqrt() / axbx;
    let term4 = (beta * (beta / (total * (1.0 - x))).ln() + alpha * (alpha / (total * x)).ln()).powf(-1.5);
    let term1234 = term1 + term2 * (term3 + if x < mean { term4 } else { -term4 });
    stirling * prefactor * term1234
}

/// The fitted rational function p/q of (ln x, ln α − ln x, ln Σβ − ln α + ln x) that corrects
/// x(ψ(Σβ) − ψ(α))/(Σβ − α) elsewhere: p and q are quadratic in the first two and cubic in
/// the third.
fn rational_correction(x: f64, alpha: f64, total: f64) -> f64 {
    // [p or q][power of u][power of a][power of b].
    const C: [[[[f64; 4]; 3]; 3]; 2] = [
        [
            [
                [1.003668233, -0.01061107488, -0.0657888334, 0.01201642863],
                [0.6336835991, -0.3557432599, 0.05486251648, -0.001465281033],
                [-0.03276231906, 0.004474107445, 0.002429354597, -0.0001557569013],
            ],
            [
                [0.221950385, -0.3187676331, 0.01799915743, 0.01074823814],
                [-0.2951249643, 0.06219954479, 0.01535556598, 0.001550077057],
                [0.02155310298, 0.004170831599, 0.001292462449, 6.976601077e-05],
            ],
            [
                [-0.05980841433, 0.008441916499, 0.01085618172, 0.002319392565],
                [0.02911413504, 0.01400243777, -0.002721828457, 0.000751041181],
                [0.005900514878, -0.001936558688, -9.495446725e-06, 5.385558597e-05],
            ],
        ],
        [
            [
                [1.0, -0.02924021934, -0.04438342661, 0.007285809825],
                [0.6357567472, -0.3473456711, 0.05454656494, -0.002407477521],
                [-0.03301322327, 0.004845219414, 0.00231480583, -0.0002307248149],
            ],
            [
                [0.5925320577, -0.1757678135, 0.01505928619, 0.000564515273],
                [0.1014815858, -0.06589186703, 0.01272886114, -0.0007316646956],
                [-0.007258481865, 0.001096195486, 0.0003934994223, -4.12701925e-05],
            ],
            [
                [0.06469649321, -0.0236701437, 0.002902096474, -5.896963079e-05],
                [0.001925008108, -0.002869809258, 0.0008000589141, -6.063713228e-05],
                [-0.0003477407336, 6.959756487e-05, 1.097287507e-05, -1.650964693e-06],
            ],
        ],
    ];
    let u = x.ln();
    let a = alpha.ln() - u;
    let b = total.ln() - a;
    let eval = |c: &[[[f64; 4]; 3]; 3]| {
        let mut s = 0.0;
        for (i, row) in c.iter().enumerate() {
            for (j, k) in row.iter().enumerate() {
                s += u.powi(i as i32) * a.powi(j as i32) * (k[0] + b * (k[1] + b * (k[2] + b * k[3])));
            }
        }
        s
    };
    eval(&C[0]) / eval(&C[1])
}

/// KL(Dir(β) ‖ Dir(1, …, 1)) = ln Γ(β₀) − ln Γ(K) − Σ ln Γ(β_k) + Σ (β_k − 1)(ψ(β_k) − ψ(β₀))
/// for the K concentrations β (β₀ = Σβ), as `torch.distributions.kl_divergence` computes it.
pub fn kl_to_flat(beta: &[f64]) -> f64 {
    let total: f64 = beta.iter().sum();
    let psi_total = digamma(total);
    ln_gamma(total) - ln_gamma(beta.len() as f64)
        + beta.iter().map(|&b| (b - 1.0) * (digamma(b) - psi_total) - ln_gamma(b)).sum::<f64>()
}

/// The gradient of `kl_to_flat` with respect to β: (β_k − 1)ψ′(β_k) − (β₀ − K)ψ′(β₀).
pub fn kl_to_flat_grad(beta: &[f64]) -> Vec<f64> {
    let total: f64 = beta.iter().sum();
    let common = (total - beta.len() as f64) * trigamma(total);
    beta.iter().map(|&b| (b - 1.0) * trigamma(b) - common).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known values: ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ′(1) = π²/6, ψ′(1/2) = π²/2,
    /// ln Γ(1/2) = ln √π, ln Γ(30) = ln 29!.
    #[test]
    fn special_functions_have_their_known_values() {
        let gamma = 0.577_215_664_901_532_9;
        let pi2 = std::f64::consts::PI.powi(2);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-13 * b.abs().max(1.0);
        assert!(close(digamma(1.0), -gamma), "{}", digamma(1.0));
        assert!(close(digamma(0.5), -gamma - 2.0 * 2f64.ln()));
        assert!(close(digamma(20.5), digamma(19.5) + 1.0 / 19.5));
        assert!(close(trigamma(1.0), pi2 / 6.0), "{}", trigamma(1.0));
        assert!(close(trigamma(0.5), pi2 / 2.0));
        assert!(close(ln_gamma(0.5), std::f64::consts::PI.sqrt().ln()));
        let ln_fact: f64 = (1..30).map(|k| (k as f64).ln()).sum();
        assert!(close(ln_gamma(30.0), ln_fact));
    }

    /// The KL gradient against central differences of the KL.
    #[test]
    fn the_kl_gradient_is_the_kls_derivative() {
        let beta = [0.3, 2.5, 7.0, 1.0];
        let g = kl_to_flat_grad(&beta);
        for k in 0..beta.len() {
            let h = 1e-6;
            let (mut p, mut m) = (beta, beta);
            p[k] += h;
            m[k] -= h;
            let fd = (kl_to_flat(&p) - kl_to_flat(&m)) / (2.0 * h);
            assert!((fd - g[k]).abs() < 1e-7 * g[k].abs().max(1.0), "{k}: {fd} vs {}", g[k]);
        }
    }
}
