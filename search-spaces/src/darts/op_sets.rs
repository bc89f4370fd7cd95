//! The candidate ops of every edge of a DARTS supernet: by default the eight primitives on
//! every edge; `model.ops` restricts them to one list for all edges or gives each edge of each
//! cell type its own list, and the R-DARTS spaces S1–S4 (Zela et al., 2020, "Understanding and
//! Robustifying Differentiable Architecture Search", automl/RobustDARTS `src/spaces.py`) are
//! named sets of such lists. Each edge's ops are kept in the order of `DartsOp::ALL`; an edge's
//! row of α has one column per op of its list, in that order.

use super::edges::num_edges;
use super::ops::DartsOp;
use crate::error::Error;
use crate::model_config::OpsConfig;

/// The resolved op lists of both cell types: `normal[e]` are the ops of edge e of a normal
/// cell, in the order of `DartsOp::ALL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DartsOpSets {
    pub normal: Vec<Vec<DartsOp>>,
    pub reduce: Vec<Vec<DartsOp>>,
}

/// The primitives of the DARTS paper, the default set of every edge.
pub const PRIMITIVES: [DartsOp; 8] = [
    DartsOp::None,
    DartsOp::MaxPool3x3,
    DartsOp::AvgPool3x3,
    DartsOp::SkipConnect,
    DartsOp::SepConv3x3,
    DartsOp::SepConv5x5,
    DartsOp::DilConv3x3,
    DartsOp::DilConv5x5,
];

/// An edge's list checked and put in column order: known ops, no repeats, at least one op
/// that is not `none`. Errors say what is wrong, after `what` (the list's place).
fn edge_list(names: &[String], what: &str) -> Result<Vec<DartsOp>, String> {
    let mut ops = Vec::with_capacity(names.len());
    for n in names {
        let op: DartsOp = n.parse().map_err(|e| match e {
            // The parser's message without the "invalid genotype" of its error type.
            Error::Genotype(m) => format!("{what}{m}"),
            e => format!("{what}{e}"),
        })?;
        if ops.contains(&op) {
            return Err(format!("{what}op `{n}` is listed twice"));
        }
        ops.push(op);
    }
    if ops.is_empty() {
        return Err(format!("{what}the op set is empty"));
    }
    if ops.iter().all(|&o| o == DartsOp::None) {
        return Err(format!("{what}the op set needs an op other than `none`"));
    }
    ops.sort_by_key(|o| o.index());
    Ok(ops)
}

impl DartsOpSets {
    /// The eight primitives on every edge of a cell with `steps` nodes.
    pub fn all(steps: usize) -> Self {
        Self::uniform(&PRIMITIVES, steps)
    }

    fn uniform(ops: &[DartsOp], steps: usize) -> Self {
        let rows = vec![ops.to_vec(); num_edges(steps)];
        Self { normal: rows.clone(), reduce: rows }
    }

    /// Resolves `model.ops` (None: the default) for cells of `steps` nodes; an error says
    /// which list is wrong and how.
    pub fn from_config(cfg: Option<&OpsConfig>, steps: usize) -> Result<Self, String> {
        let edges = num_edges(steps);
        match cfg {
            None => Ok(Self::all(steps)),
            Some(OpsConfig::Uniform(names)) => Ok(Self::uniform(&edge_list(names, "")?, steps)),
            Some(OpsConfig::PerEdge { normal, reduce }) => {
                let cell = |rows: &[Vec<String>], name: &str| -> Result<Vec<Vec<DartsOp>>, String> {
                    if rows.len() != edges {
                        return Err(format!(
                            "`{name}` has {} edge lists; a cell of {steps} nodes has {edges} edges",
                            rows.len()
                        ));
                    }
                    rows.iter().enumerate().map(|(e, r)| edge_list(r, &format!("`{name}`, edge {e}: "))).collect()
                };
                Ok(Self { normal: cell(normal, "normal")?, reduce: cell(reduce, "reduce")? })
            }
        }
    }

    /// The config form of these sets: the per-edge lists by name.
    pub fn to_config(&self) -> OpsConfig {
        let names = |rows: &[Vec<DartsOp>]| -> Vec<Vec<String>> {
            rows.iter().map(|r| r.iter().map(|o| o.name().to_string()).collect()).collect()
        };
        OpsConfig::PerEdge { normal: names(&self.normal), reduce: names(&self.reduce) }
    }

    /// The lists of one cell type.
    pub fn cell(&self, reduction: bool) -> &[Vec<DartsOp>] {
        if reduction {
            &self.reduce
        } else {
            &self.normal
        }
    }

    /// Whether every edge of both cell types has the eight primitives.
    pub fn is_default(&self) -> bool {
        self.normal.iter().chain(&self.reduce).all(|r| r[..] == PRIMITIVES)
    }

    /// The widest edge list of a cell type: the column count of its α.
    pub fn width(&self, reduction: bool) -> usize {
        self.cell(reduction).iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Whether some edge of the cell type has fewer ops than the widest (its α row is then
    /// padded with columns that softmax never weights).
    pub fn ragged(&self, reduction: bool) -> bool {
        self.cell(reduction).iter().any(|r| r.len() != self.width(reduction))
    }
}

/// The R-DARTS search spaces S1–S4 by name (`s1`, …, `s4`), for cells of four nodes.
pub fn rdarts_space(name: &str) -> Option<DartsOpSets> {
    use DartsOp::*;
    let uniform = |ops: &[DartsOp]| DartsOpSets::uniform(ops, 4);
    Some(match name {
        "s1" => {
            // Per edge the two ops that DARTS weighted most in the authors' runs.
            let normal = [
                [SkipConnect, DilConv3x3],
                [SkipConnect, DilConv5x5],
                [SkipConnect, DilConv5x5],
                [SkipConnect, SepConv3x3],
                [SkipConnect, DilConv3x3],
                [MaxPool3x3, SkipConnect],
                [SkipConnect, SepConv3x3],
                [SkipConnect, SepConv3x3],
                [SkipConnect, DilConv3x3],
                [SkipConnect, SepConv3x3],
                [MaxPool3x3, SkipConnect],
                [SkipConnect, DilConv3x3],
                [DilConv3x3, DilConv5x5],
                [DilConv3x3, DilConv5x5],
            ];
            let reduce = [
                [MaxPool3x3, AvgPool3x3],
                [MaxPool3x3, DilConv3x3],
                [MaxPool3x3, AvgPool3x3],
                [MaxPool3x3, AvgPool3x3],
                [SkipConnect, DilConv5x5],
                [MaxPool3x3, AvgPool3x3],
                [MaxPool3x3, SepConv3x3],
                [SkipConnect, DilConv3x3],
                [SkipConnect, DilConv5x5],
                [MaxPool3x3, AvgPool3x3],
                [MaxPool3x3, AvgPool3x3],
                [SkipConnect, DilConv5x5],
                [SkipConnect, DilConv5x5],
                [SkipConnect, DilConv5x5],
            ];
            DartsOpSets {
                normal: normal.iter().map(|r| r.to_vec()).collect(),
                reduce: reduce.iter().map(|r| r.to_vec()).collect(),
            }
        }
        "s2" => uniform(&[SkipConnect, SepConv3x3]),
        "s3" => uniform(&[None, SkipConnect, SepConv3x3]),
        "s4" => uniform(&[Noise, SepConv3x3]),
        _ => return Option::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_are_sorted_into_column_order_and_checked() {
        let s = DartsOpSets::from_config(Some(&OpsConfig::Uniform(names(&["sep_conv_3x3", "none"]))), 4).unwrap();
        assert_eq!(s.normal[13], [DartsOp::None, DartsOp::SepConv3x3]);
        assert_eq!(s.reduce.len(), 14);
        for (bad, want) in [
            (vec![], "empty"),
            (vec!["none"], "other than `none`"),
            (vec!["skip_connect", "skip_connect"], "twice"),
            (vec!["conv_7x1_1x7"], "unknown op `conv_7x1_1x7`"),
        ] {
            let e = DartsOpSets::from_config(Some(&OpsConfig::Uniform(names(&bad))), 4).unwrap_err();
            assert!(e.contains(want), "{bad:?}: {e}");
        }
        let short = OpsConfig::PerEdge { normal: vec![names(&["none", "skip_connect"]); 3], reduce: vec![] };
        let e = DartsOpSets::from_config(Some(&short), 4).unwrap_err();
        assert!(e.contains("`normal` has 3 edge lists") && e.contains("14 edges"), "{e}");
    }

    #[test]
    fn config_form_round_trips_through_json() {
        let s = rdarts_space("s1").unwrap();
        let json = serde_json::to_value(s.to_config()).unwrap();
        let back: OpsConfig = serde_json::from_value(json).unwrap();
        assert_eq!(DartsOpSets::from_config(Some(&back), 4).unwrap(), s);
        let uniform: OpsConfig = serde_json::from_str(r#"["skip_connect", "sep_conv_3x3"]"#).unwrap();
        assert_eq!(DartsOpSets::from_config(Some(&uniform), 4).unwrap(), rdarts_space("s2").unwrap());
    }

    #[test]
    fn rdarts_spaces_have_the_published_sets() {
        for name in ["s1", "s2", "s3", "s4"] {
            let s = rdarts_space(name).unwrap();
            assert_eq!((s.normal.len(), s.reduce.len()), (14, 14), "{name}");
            assert!(!s.ragged(false) && !s.ragged(true), "{name}");
        }
        assert_eq!(rdarts_space("s3").unwrap().width(true), 3);
        let s4 = rdarts_space("s4").unwrap();
        assert!(s4.normal.iter().chain(&s4.reduce).all(|r| r.contains(&DartsOp::Noise)));
        let s1 = rdarts_space("s1").unwrap();
        assert_eq!(s1.normal[5], [DartsOp::MaxPool3x3, DartsOp::SkipConnect]);
        assert_eq!(s1.reduce[6], [DartsOp::MaxPool3x3, DartsOp::SepConv3x3]);
        assert!(DartsOpSets::all(4).is_default() && !s1.is_default());
        assert!(rdarts_space("s5").is_none());
    }
}
