//! `nas bilevel`: the hypergradient methods of the search on small bilevel problems with known
//! solutions (`nas_core::hypergrad::toys`), each with the same budget: the final distance to
//! the solution and F per method as JSON lines, and a picture of both over the iterations.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use nas_core::hypergrad::toys::{self, Budget, Toy, PROBLEMS};
use nas_search::{Method, MethodConfig};
use serde_json::{json, Map, Value};

use crate::config_flags::{self, ConfigFlags};
use crate::draw::{self, bilevel::BilevelTraces, ImageFormat};

#[derive(Args, Debug)]
#[command(allow_negative_numbers = true)]
pub struct BilevelArgs {
    /// Problem: non-singleton (BDA's counterexample), non-convex (IAPTT-GM's) or ridge
    #[arg(long, value_name = "P", default_value = "non-singleton")]
    problem: String,
    /// Methods of the hypergradient family, comma-separated [default: all of them]
    #[arg(long, value_name = "M,…", value_delimiter = ',')]
    methods: Vec<String>,
    /// Outer iterations (steps on x) [default: the problem's]
    #[arg(long, value_name = "N")]
    iters: Option<usize>,
    /// Lower-level gradient steps per outer iteration [default: the problem's]
    #[arg(long, value_name = "K")]
    inner: Option<usize>,
    /// Lower-level step size (also ξ of the virtual steps) [default: the problem's]
    #[arg(long, value_name = "LR")]
    lr_lower: Option<f64>,
    /// Upper-level step size [default: the problem's]
    #[arg(long, value_name = "LR")]
    lr_upper: Option<f64>,
    /// Dimension n of the non-singleton problem
    #[arg(long, value_name = "N", default_value_t = 100)]
    dim: usize,
    /// Picture of ‖x − x*‖ and F per iteration, .png or .svg [default: none]
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The methods' settings, as `nas search` takes them; each method takes its own
    #[command(flatten)]
    settings: ConfigFlags<config_flags::Bilevel>,
}

/// `method`'s settings: its defaults with the flags given for its own fields.
fn configured(method: Method, overlay: &Value) -> anyhow::Result<MethodConfig> {
    let mut own = Map::new();
    own.insert("name".into(), json!(method.name()));
    if let Some(Value::Object(given)) = overlay.get("method") {
        for (k, v) in given {
            if method.fields().contains(&k.as_str()) {
                own.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(MethodConfig::from_json(&Value::Object(own))?)
}

pub fn run(args: BilevelArgs) -> anyhow::Result<()> {
    if !PROBLEMS.contains(&args.problem.as_str()) {
        bail!("--problem: unknown problem `{}` (expected {})", args.problem, PROBLEMS.join(", "));
    }
    let format = args.out.as_deref().map(ImageFormat::of_path).transpose()?;
    let d = Budget::default_for(&args.problem);
    let budget = Budget {
        iters: args.iters.unwrap_or(d.iters),
        inner: args.inner.unwrap_or(d.inner),
        lr_lower: args.lr_lower.unwrap_or(d.lr_lower),
        lr_upper: args.lr_upper.unwrap_or(d.lr_upper),
    };
    if !(budget.lr_lower.is_finite() && budget.lr_lower > 0.0 && budget.lr_upper.is_finite() && budget.lr_upper > 0.0) {
        bail!("--lr-lower and --lr-upper must be finite and positive");
    }
    // The methods whose α step is their hypergradient rule alone: β-DARTS (a term of α) and
    // SDARTS (perturbed mixing weights) add what a toy problem has no counterpart for, on top
    // of another method's rule.
    let family: Vec<Method> = Method::ALL
        .iter()
        .copied()
        .filter(|m| *m != Method::Sdarts)
        .filter(|m| m.default_config().hypergradient().is_some() && m.default_config().arch_term().is_none())
        .collect();
    let names: Vec<&str> = family.iter().map(|m| m.name()).collect();
    let chosen: Vec<Method> = if args.methods.is_empty() {
        family.clone()
    } else {
        args.methods
            .iter()
            .map(|n| {
                family.iter().copied().find(|m| m.name() == n).with_context(|| {
                    format!("--methods: `{n}` is not a hypergradient method (expected one of {})", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let overlay = args.settings.overlay();
    let mut series = Vec::new();
    for m in chosen {
        let toy = Toy::new(&args.problem, args.dim)?;
        let Some(mut rule) = configured(m, &overlay)?.hypergradient() else { continue };
        let trace = toys::run(&toy, rule.as_mut(), budget).with_context(|| format!("{} on {}", m.name(), toy.name))?;
        let last = trace.last().copied().unwrap_or(toys::Point { distance: f64::NAN, upper: f64::NAN });
        let x = toy.x()?;
        crate::out(&format!(
            "{}\n",
            json!({
                "problem": toy.name,
                "method": m.name(),
                "distance": last.distance,
                "upper": last.upper,
                "x_head": &x[..x.len().min(3)],
                "iters": budget.iters,
                "inner": budget.inner,
            })
        ))?;
        series.push((
            m.name().to_string(),
            trace.iter().map(|p| p.distance).collect(),
            trace.iter().map(|p| p.upper).collect(),
        ));
    }
    if let (Some(out), Some(format)) = (&args.out, format) {
        let title =
            format!("{} problem: {} outer iterations of {} inner steps", args.problem, budget.iters, budget.inner);
        draw::save(out, &draw::render(&BilevelTraces { title, series }, format)?)?;
    }
    Ok(())
}
