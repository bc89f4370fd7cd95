//! A derived DARTS-space architecture, compatible with DARTS' `genotypes.py`: a normal and a
//! reduction cell, each listing 2 edges per intermediate node in node order as (op, input),
//! input 0 being c_{k−2}, 1 c_{k−1} and j ≥ 2 intermediate node j−2, and the nodes the cell
//! concatenates. JSON form: `{"space":"darts","normal":[["sep_conv_3x3",0],…],
//! "normal_concat":[2,3,4,5],"reduce":[…],"reduce_concat":[2,3,4,5]}`. Built-in genotypes:
//! DARTS_V1, DARTS_V2 (DARTS paper), PC_DARTS (PC-DARTS paper, searched on CIFAR-10),
//! PC_DARTS_IMAGENET (PC-DARTS paper, searched on ImageNet) and PDARTS (P-DARTS paper).

use std::fmt;

use serde_json::{json, Value};

use super::edges::state_label;
use super::ops::DartsOp;
use crate::error::{Error, Result};

/// One edge of a derived cell: the op and the index of its input state.
pub type Edge = (DartsOp, usize);

/// A derived DARTS-space architecture: a normal and a reduction cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DartsGenotype {
    pub normal: Vec<Edge>,
    pub normal_concat: Vec<usize>,
    pub reduce: Vec<Edge>,
    pub reduce_concat: Vec<usize>,
}

/// (name, [normal, reduce]) with every cell as 8 (op, input) pairs.
type BuiltinCells = [[(&'static str, usize); 8]; 2];

const BUILTIN: [(&str, BuiltinCells); 5] = [
    (
        "DARTS_V1",
        [
            [
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0),
                ("skip_connect", 0),
                ("sep_conv_3x3", 1),
                ("skip_connect", 0),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0),
                ("skip_connect", 2),
            ],
            [
                ("max_pool_3x3", 0),
                ("max_pool_3x3", 1),
                ("skip_connect", 2),
                ("max_pool_3x3", 0),
                ("max_pool_3x3", 0),
                ("skip_connect", 2),
                ("skip_connect", 2),
                ("avg_pool_3x3", 0),
            ],
        ],
    ),
    (
        "DARTS_V2",
        [
            [
                ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1),
                ("skip_connect", 0),
                ("skip_connect", 0),
                ("dil_conv_3x3", 2),
            ],
            [
                ("max_pool_3x3", 0),
                ("max_pool_3x3", 1),
                ("skip_connect", 2),
                ("max_pool_3x3", 1),
                ("max_pool_3x3", 0),
                ("skip_connect", 2),
                ("skip_connect", 2),
                ("max_pool_3x3", 1),
            ],
        ],
    ),
    (
        "PC_DARTS",
        [
            [
                ("sep_conv_3x3", 1),
                ("skip_connect", 0),
                ("sep_conv_3x3", 0),
                ("dil_conv_3x3", 1),
                ("sep_conv_5x5", 0),
                ("sep_conv_3x3", 1),
                ("avg_pool_3x3", 0),
                ("dil_conv_3x3", 1),
            ],
            [
                ("sep_conv_5x5", 1),
                ("max_pool_3x3", 0),
                ("sep_conv_5x5", 1),
                ("sep_conv_5x5", 2),
                ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 3),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 2),
            ],
        ],
    ),
    (
        // The cell PC-DARTS (Xu et al. 2020) searched directly on ImageNet (its §4.3, 5.3M
        // parameters and 597M mult-adds in the mobile setting): yuhuixu1993/PC-DARTS
        // `genotypes.py`, `PC_DARTS_image`.
        "PC_DARTS_IMAGENET",
        [
            [
                ("skip_connect", 1),
                ("sep_conv_3x3", 0),
                ("sep_conv_3x3", 0),
                ("skip_connect", 1),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 3),
                ("sep_conv_3x3", 1),
                ("dil_conv_5x5", 4),
            ],
            [
                ("sep_conv_3x3", 0),
                ("skip_connect", 1),
                ("dil_conv_5x5", 2),
                ("max_pool_3x3", 1),
                ("sep_conv_3x3", 2),
                ("sep_conv_3x3", 1),
                ("sep_conv_5x5", 0),
                ("sep_conv_3x3", 3),
            ],
        ],
    ),
    (
        // P-DARTS (Chen et al. 2019), chenxin061/pdarts `genotypes.py`.
        "PDARTS",
        [
            [
                ("skip_connect", 0),
                ("dil_conv_3x3", 1),
                ("skip_connect", 0),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 3),
                ("sep_conv_3x3", 0),
                ("dil_conv_5x5", 4),
            ],
            [
                ("avg_pool_3x3", 0),
                ("sep_conv_5x5", 1),
                ("sep_conv_3x3", 0),
                ("dil_conv_5x5", 2),
                ("max_pool_3x3", 0),
                ("dil_conv_3x3", 1),
                ("dil_conv_3x3", 1),
                ("dil_conv_5x5", 3),
            ],
        ],
    ),
];

impl DartsGenotype {
    /// Number of intermediate nodes of the normal cell.
    pub fn steps(&self) -> usize {
        self.normal.len() / 2
    }

    /// Checks edge counts, input indices and concat lists of both cells.
    pub fn validate(&self) -> Result<()> {
        for (name, edges, concat) in
            [("normal", &self.normal, &self.normal_concat), ("reduce", &self.reduce, &self.reduce_concat)]
        {
            if edges.is_empty() || edges.len() % 2 != 0 {
                return Err(Error::Genotype(format!(
                    "`{name}` has {} edges; a cell needs 2 edges per intermediate node",
                    edges.len()
                )));
            }
            let steps = edges.len() / 2;
            for (e, &(op, input)) in edges.iter().enumerate() {
                let node = e / 2;
                if input >= steps + 2 {
                    return Err(Error::Genotype(format!(
                        "`{name}` edge {e} ({op}, {input}): input {input} out of range (the cell's states are 0..={})",
                        steps + 1
                    )));
                }
                if input >= node + 2 {
                    return Err(Error::Genotype(format!(
                        "`{name}` edge {e} ({op}, {input}): node {node} can only take inputs 0..={} (inputs may not point forward)",
                        node + 1
                    )));
                }
            }
            if concat.is_empty() {
                return Err(Error::Genotype(format!("`{name}_concat` is empty")));
            }
            for (i, &c) in concat.iter().enumerate() {
                if !(2..2 + steps).contains(&c) {
                    return Err(Error::Genotype(format!(
                        "`{name}_concat` entry {c} out of range (intermediate nodes are 2..={})",
                        steps + 1
                    )));
                }
                if concat[..i].contains(&c) {
                    return Err(Error::Genotype(format!("`{name}_concat` lists node {c} twice")));
                }
            }
        }
        if self.normal.len() != self.reduce.len() {
            return Err(Error::Genotype(format!(
                "`normal` has {} edges but `reduce` has {}; both cells need the same number of nodes",
                self.normal.len(),
                self.reduce.len()
            )));
        }
        Ok(())
    }

    /// A built-in genotype by name (DARTS_V1, DARTS_V2, PC_DARTS, PC_DARTS_IMAGENET, PDARTS).
    pub fn builtin(name: &str) -> Option<DartsGenotype> {
        let (_, [normal, reduce]) = BUILTIN.iter().find(|(n, _)| *n == name)?;
        let conv = |cell: &[(&str, usize); 8]| -> Option<Vec<Edge>> {
            cell.iter().map(|&(op, i)| op.parse().ok().map(|op| (op, i))).collect()
        };
        Some(DartsGenotype {
            normal: conv(normal)?,
            normal_concat: vec![2, 3, 4, 5],
            reduce: conv(reduce)?,
            reduce_concat: vec![2, 3, 4, 5],
        })
    }

    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    pub fn to_json(&self) -> Value {
        let cell = |edges: &[Edge]| -> Value { edges.iter().map(|(op, i)| json!([op.name(), i])).collect() };
        json!({
            "space": "darts",
            "normal": cell(&self.normal),
            "normal_concat": self.normal_concat,
            "reduce": cell(&self.reduce),
            "reduce_concat": self.reduce_concat,
        })
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| Error::Genotype("expected a JSON object".into()))?;
        for key in obj.keys() {
            if !["space", "normal", "normal_concat", "reduce", "reduce_concat"].contains(&key.as_str()) {
                return Err(Error::Genotype(format!("unknown field `{key}`")));
            }
        }
        let edges = |key: &str| -> Result<Vec<Edge>> {
            let arr = obj
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| Error::Genotype(format!("missing or non-list field `{key}`")))?;
            arr.iter()
                .enumerate()
                .map(|(e, item)| {
                    let bad = || {
                        Error::Genotype(format!("`{key}` edge {e}: expected [\"op_name\", input_index], got {item}"))
                    };
                    let pair = item.as_array().filter(|p| p.len() == 2).ok_or_else(bad)?;
                    let op_name = pair[0].as_str().ok_or_else(bad)?;
                    let op: DartsOp = op_name.parse().map_err(|err| match err {
                        Error::Genotype(m) => Error::Genotype(format!("`{key}` edge {e}: {m}")),
                        other => other,
                    })?;
                    let input = pair[1].as_u64().ok_or_else(bad)? as usize;
                    Ok((op, input))
                })
                .collect()
        };
        let concat = |key: &str, steps: usize| -> Result<Vec<usize>> {
            match obj.get(key) {
                None => Ok((2..2 + steps).collect()),
                Some(v) => v
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
                    .ok_or_else(|| Error::Genotype(format!("`{key}` must be a list of node indices"))),
            }
        };
        let normal = edges("normal")?;
        let reduce = edges("reduce")?;
        let g = DartsGenotype {
            normal_concat: concat("normal_concat", normal.len() / 2)?,
            reduce_concat: concat("reduce_concat", reduce.len() / 2)?,
            normal,
            reduce,
        };
        g.validate()?;
        Ok(g)
    }
}

impl fmt::Display for DartsGenotype {
    /// Multi-line text: one line per node of each cell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, edges, concat) in
            [("normal", &self.normal, &self.normal_concat), ("reduce", &self.reduce, &self.reduce_concat)]
        {
            writeln!(f, "{name} cell (concat {concat:?}):")?;
            for (node, pair) in edges.chunks(2).enumerate() {
                let ins: Vec<String> = pair.iter().map(|(op, i)| format!("{op} <- {}", state_name(*i))).collect();
                writeln!(f, "  node {node}: {}", ins.join(", "))?;
            }
        }
        Ok(())
    }
}

/// c_{k-2}, c_{k-1} or the intermediate node number.
pub fn state_name(i: usize) -> String {
    if i < 2 {
        state_label(i)
    } else {
        format!("node {}", i - 2)
    }
}
