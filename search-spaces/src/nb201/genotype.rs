//! A derived NAS-Bench-201 cell: the op of every edge, its JSON form
//! `{"space":"nb201","arch":"|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"}` with the benchmark's arch
//! string, and the derivation from α (arg-max per edge, `none` included, as the benchmark's
//! `genotype()` does).

use std::fmt;

use serde_json::{json, Value};

use super::edges::{edge_index, EDGES, NODES};
use super::ops::Nb201Op;
use crate::error::{Error, Result};

/// A derived NAS-Bench-201 cell: the op of every edge, in edge order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nb201Genotype {
    pub edges: [Nb201Op; EDGES],
}

impl Nb201Genotype {
    /// The benchmark's string form `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`.
    pub fn arch_string(&self) -> String {
        let node = |to: usize| -> String {
            (0..to).map(|from| format!("{}~{from}|", self.edges[edge_index(to, from)])).collect()
        };
        (1..NODES).map(|to| format!("|{}", node(to))).collect::<Vec<_>>().join("+")
    }

    /// Parses the string form; every node must list its inputs 0, 1, … in order.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |m: String| Error::Genotype(format!("nb201 arch `{s}`: {m}"));
        let nodes: Vec<&str> = s.split('+').collect();
        if nodes.len() != NODES - 1 {
            return Err(bad(format!("expected {} nodes separated by `+`, found {}", NODES - 1, nodes.len())));
        }
        let mut edges = [Nb201Op::None; EDGES];
        for (n, node) in nodes.iter().enumerate() {
            let to = n + 1;
            let inner = node
                .strip_prefix('|')
                .and_then(|x| x.strip_suffix('|'))
                .ok_or_else(|| bad(format!("node {to} must be written |op~j|…|")))?;
            let items: Vec<&str> = inner.split('|').collect();
            if items.len() != to {
                return Err(bad(format!("node {to} needs {to} inputs, found {}", items.len())));
            }
            for (from, item) in items.iter().enumerate() {
                let (op, j) = item.split_once('~').ok_or_else(|| bad(format!("`{item}` is not op~input")))?;
                let j: usize = j.parse().map_err(|_| bad(format!("`{j}` is not an input index")))?;
                if j != from {
                    return Err(bad(format!("node {to}: input {from} is written as {j}")));
                }
                edges[edge_index(to, from)] = op.parse::<Nb201Op>()?;
            }
        }
        Ok(Self { edges })
    }

    pub fn to_json(&self) -> Value {
        json!({"space": "nb201", "arch": self.arch_string()})
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| Error::Genotype("a genotype must be a JSON object".into()))?;
        for k in obj.keys() {
            if k != "space" && k != "arch" {
                return Err(Error::Genotype(format!("unknown field `{k}` in an nb201 genotype")));
            }
        }
        let arch = v
            .get("arch")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Genotype("an nb201 genotype needs `arch`, a string".into()))?;
        Self::parse(arch)
    }

    /// Arg-max per edge over all five ops (`none` included); ties go to the lower column.
    pub fn derive(weights: &[Vec<f32>]) -> Self {
        let mut edges = [Nb201Op::None; EDGES];
        for (e, row) in weights.iter().take(EDGES).enumerate() {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            edges[e] = Nb201Op::ALL[best.min(Nb201Op::ALL.len() - 1)];
        }
        Self { edges }
    }
}

impl fmt::Display for Nb201Genotype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nb201 cell {}", self.arch_string())?;
        for to in 1..NODES {
            let ins: Vec<String> =
                (0..to).map(|from| format!("{} <- node {from}", self.edges[edge_index(to, from)])).collect();
            writeln!(f, "  node {to}: {}", ins.join(", "))?;
        }
        Ok(())
    }
}
