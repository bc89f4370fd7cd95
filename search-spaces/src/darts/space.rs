//! The darts space as the registry (`SearchSpace`) sees it: its genotypes, the supernet and
//! the retraining network a run's settings build, what those settings must satisfy here, and
//! the shapes of its pictures.

use candle_core::{DType, Device};
use nas_core::config_error::{brief, field, require_positive};
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::edges::{edge_label, state_label};
use super::genotype::{DartsGenotype, Edge};
use super::network::{DerivedNetwork, DerivedNetworkConfig};
use super::op_sets::{rdarts_space, DartsOpSets, PRIMITIVES};
use super::supernet::{DartsSupernet, DartsSupernetConfig};
use crate::diagram::{self, ArchTable, CellGraph, Node, NodeKind};
use crate::error::Result;
use crate::eval_network::EvalNetwork;
use crate::model_config::{EvalModelConfig, NetKind, OpsConfig, SearchModelConfig, TaskShape};
use crate::registry::SearchSpace;
use crate::supernet::Supernet;

/// The DARTS CNN cell space (see the module).
pub struct Darts;

/// The darts space's own supernet settings (`model` in config.json, next to `channels` and
/// `layers`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DartsSearchModel {
    /// Intermediate nodes per cell.
    pub steps: usize,
    /// PC-DARTS channel fraction 1/K (1 = all channels).
    pub partial_channels: usize,
    /// PC-DARTS edge normalisation (β).
    pub edge_norm: bool,
    /// Optional cap on skip connections in the derived normal cell (P-DARTS style).
    pub max_skip_connect: Option<usize>,
    /// The candidate ops of the edges; None: every op of the space on every edge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<OpsConfig>,
    /// The stem: `model_search.py`'s CIFAR stem or PC-DARTS' ImageNet stems
    /// (`model_search_imagenet.py`). Left out of config.json when CIFAR.
    #[serde(skip_serializing_if = "NetKind::is_cifar")]
    pub net: NetKind,
}

impl Default for DartsSearchModel {
    /// DARTS' supernet: four nodes, every op on every channel of every edge.
    fn default() -> Self {
        Self { steps: 4, partial_channels: 1, edge_norm: false, max_skip_connect: None, ops: None, net: NetKind::Cifar }
    }
}

impl SearchSpace for Darts {
    const NAME: &'static str = "darts";
    const AUXILIARY_HEAD: bool = true;
    const DROP_PATH: bool = true;

    type Genotype = DartsGenotype;

    fn genotype_to_json(g: &DartsGenotype) -> Value {
        g.to_json()
    }

    fn genotype_from_json(v: &Value) -> Result<DartsGenotype> {
        DartsGenotype::from_json(v)
    }

    fn named_genotype(name: &str) -> Option<Result<DartsGenotype>> {
        DartsGenotype::builtin(name).map(Ok)
    }

    fn builtin_names() -> Vec<&'static str> {
        DartsGenotype::builtin_names()
    }

    fn cell_graphs(g: &DartsGenotype) -> Vec<CellGraph> {
        vec![
            cell_graph("normal", "normal cell", &g.normal, &g.normal_concat),
            cell_graph("reduce", "reduction cell", &g.reduce, &g.reduce_concat),
        ]
    }

    /// The supernet of the DARTS paper (C=16, L=8); C=8, L=5 for the demo.
    fn search_sizes(quick: bool) -> (usize, usize) {
        if quick {
            (8, 5)
        } else {
            (16, 8)
        }
    }

    type SearchModel = DartsSearchModel;

    fn search_model_flags() -> Vec<Flag> {
        vec![
            Flag::one("ops", "ops", "OPS", settings::text)
                .help(
                    "Candidate ops of every edge (darts), comma-separated: a subset of none, max_pool_3x3, \
                 avg_pool_3x3, skip_connect, sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5 and \
                 noise; replaces the op sets of s1–s4. Per-edge sets: `model.ops` in a --config file",
                )
                .list(),
            Flag::one("partial-channels", "partial_channels", "K", settings::parse::<usize>)
                .help("PC-DARTS: operate on 1/K of the channels of every edge"),
            Flag::switch("edge-norm", "edge_norm")
                .help("PC-DARTS edge normalisation (β weights on the edges into each node)"),
            Flag::one("max-skip-connect", "max_skip_connect", "N", settings::parse::<usize>)
                .help("Cap the skip connections of the derived normal cell"),
            crate::model_config::net_flag(),
        ]
    }

    fn aliases() -> Vec<(&'static str, Value)> {
        ["s1", "s2", "s3", "s4"]
            .into_iter()
            .filter_map(|name| rdarts_space(name).map(|sets| (name, json!({ "ops": sets.to_config() }))))
            .collect()
    }

    fn net(own: &DartsSearchModel) -> NetKind {
        own.net
    }

    fn needs_every_op(own: &DartsSearchModel) -> Option<String> {
        (own.partial_channels != 1 || own.edge_norm).then(|| {
            format!("{} must be 1 and {} off (PC-DARTS)", field("model.partial_channels"), field("model.edge_norm"))
        })
    }

    const STAGES: bool = true;

    /// The first stage searches the op sets as given: every edge needs `first_ops` ops.
    fn validate_stages(own: &DartsSearchModel, first_ops: usize) -> Result<(), ConfigError> {
        let sets = DartsOpSets::from_config(own.ops.as_ref(), own.steps)
            .map_err(|e| ConfigError::new(format!("{}: {e}", field("model.ops"))))?;
        if sets.normal.iter().chain(&sets.reduce).any(|r| r.len() != first_ops) {
            return Err(ConfigError::new(format!(
                "{} starts at {first_ops} ops per edge, but {} does not give every edge {first_ops} ops",
                field("progressive.ops_per_edge"),
                brief("model.ops")
            )));
        }
        Ok(())
    }

    fn stage_model(
        own: &DartsSearchModel,
        ops: Option<OpsConfig>,
        partial_channels: Option<usize>,
    ) -> DartsSearchModel {
        DartsSearchModel {
            max_skip_connect: None,
            ops: ops.or_else(|| own.ops.clone()),
            partial_channels: partial_channels.unwrap_or(own.partial_channels),
            ..own.clone()
        }
    }

    fn skip_cap(own: &DartsSearchModel) -> Option<usize> {
        own.max_skip_connect
    }

    fn validate_search(m: &SearchModelConfig) -> Result<(), ConfigError> {
        let own = own(m)?;
        require_positive(&[("model.steps", own.steps), ("model.partial_channels", own.partial_channels)])?;
        let k = own.partial_channels;
        if !m.channels.is_multiple_of(k) {
            return Err(ConfigError::new(format!(
                "{} K={k} must divide {} C={} (PC-DARTS splits every edge's channels K ways)",
                brief("model.partial_channels"),
                brief("model.channels"),
                m.channels
            )));
        }
        DartsOpSets::from_config(own.ops.as_ref(), own.steps)
            .map_err(|e| ConfigError::new(format!("{}: {e}", field("model.ops"))))?;
        if own.net == NetKind::ImageNet && !m.channels.is_multiple_of(2) {
            return Err(ConfigError::new(format!(
                "{} must be even with {} imagenet (the first cell's factorized reduction halves them), got {}",
                field("model.channels"),
                brief("model.net"),
                m.channels
            )));
        }
        Ok(())
    }

    /// CIFAR stem: the two reductions halve the sides evenly where a factorized reduction
    /// halves them (sides divisible by 4). ImageNet stems: the three stride-2 stem convs and the
    /// two reductions halve them five times, as in the retraining network (divisible by 32).
    fn check_search_input_size(m: &SearchModelConfig, height: usize, width: usize) -> Result<(), ConfigError> {
        let own = own(m)?;
        let (halvings, times) =
            if own.net == NetKind::ImageNet { (32, "five halvings") } else { (4, "two reductions") };
        if height == 0 || width == 0 || !height.is_multiple_of(halvings) || !width.is_multiple_of(halvings) {
            return Err(ConfigError::plain(format!(
                "{} darts supernets need image sides divisible by {halvings} ({times}), got {height}x{width}",
                own.net
            )));
        }
        Ok(())
    }

    fn build_supernet(m: &SearchModelConfig, task: TaskShape, seed: u64, device: &Device) -> Result<Box<dyn Supernet>> {
        let own = own(m).map_err(|e| crate::Error::Config(e.to_string()))?;
        let cfg = DartsSupernetConfig {
            channels: m.channels,
            layers: m.layers,
            num_classes: task.num_classes,
            steps: own.steps,
            multiplier: own.steps,
            stem_multiplier: 3,
            in_channels: task.in_channels,
            partial_channels: own.partial_channels,
            edge_norm: own.edge_norm,
            max_skip_connect: own.max_skip_connect,
            ops: own.ops.clone(),
            net: own.net,
        };
        Ok(Box::new(DartsSupernet::new(cfg, seed, DType::F32, device)?))
    }

    fn arch_tables() -> Vec<ArchTable> {
        let ops: Vec<&'static str> = PRIMITIVES.iter().map(|o| o.name()).collect();
        let table = |key, title| ArchTable { key, title, ops: ops.clone(), edge_label };
        vec![table("alphas_normal", "normal cell"), table("alphas_reduce", "reduction cell")]
    }

    /// DARTS' retraining recipe (`train.py`): C=36, L=20, auxiliary weight 0.4, drop path 0.2.
    fn eval_defaults() -> EvalModelConfig {
        EvalModelConfig { channels: 36, layers: 20, auxiliary_weight: 0.4, drop_path: 0.2, net: NetKind::Cifar }
    }

    fn validate_eval(m: &EvalModelConfig) -> Result<(), ConfigError> {
        if !m.channels.is_multiple_of(2) {
            return Err(ConfigError::new(format!(
                "{} must be even (factorized reductions halve them), got {}",
                field("model.channels"),
                m.channels
            )));
        }
        if m.auxiliary_weight > 0.0 && m.layers < 3 {
            return Err(ConfigError::new(format!(
                "the auxiliary head needs {} 3 or more (or {} 0)",
                brief("model.layers"),
                brief("model.auxiliary_weight")
            )));
        }
        Ok(())
    }

    /// CIFAR: the two reductions halve even sizes, and the auxiliary head (avg-pool 5/3, then a
    /// 2×2 conv to one pixel) is made for 32×32 inputs (8×8 after the reductions; 32 to 40
    /// pixels work). ImageNet: the three stride-2 stem convs and the two reductions halve the
    /// sides five times, evenly where a factorized reduction halves them; the auxiliary head
    /// (avg-pool 5/2, then the 2×2 conv) needs 7×7 or 8×8 final maps (224 or 256 pixels).
    fn check_input_size(m: &EvalModelConfig, height: usize, width: usize) -> Result<(), ConfigError> {
        if m.net == NetKind::ImageNet {
            if !height.is_multiple_of(32) || !width.is_multiple_of(32) || height == 0 || width == 0 {
                return Err(ConfigError::plain(format!(
                    "imagenet darts networks need image sides divisible by 32 (five halvings), got {height}x{width}"
                )));
            }
            if m.auxiliary_weight > 0.0 && !([7, 8].contains(&(height / 32)) && [7, 8].contains(&(width / 32))) {
                return Err(ConfigError::plain(format!(
                    "the imagenet auxiliary head needs 224x224 or 256x256 images, got {height}x{width}; set the auxiliary weight to 0 for other sizes"
                )));
            }
            return Ok(());
        }
        if !height.is_multiple_of(4) || !width.is_multiple_of(4) {
            return Err(ConfigError::plain(format!(
                "darts networks need image sides divisible by 4 (two reductions), got {height}x{width}"
            )));
        }
        let ok = |s: usize| (8..=10).contains(&(s / 4));
        if m.auxiliary_weight > 0.0 && !(ok(height) && ok(width)) {
            return Err(ConfigError::plain(format!(
                "the auxiliary head needs 32x32 images (32 to 40 pixels a side), got {height}x{width}; set the auxiliary weight to 0 for other sizes"
            )));
        }
        Ok(())
    }

    fn build_eval_network(
        g: &DartsGenotype,
        m: &EvalModelConfig,
        task: TaskShape,
        seed: u64,
        device: &Device,
    ) -> Result<Box<dyn EvalNetwork>> {
        let cfg = DerivedNetworkConfig {
            channels: m.channels,
            layers: m.layers,
            num_classes: task.num_classes,
            auxiliary: m.auxiliary_weight > 0.0,
            in_channels: task.in_channels,
            net: m.net,
        };
        Ok(Box::new(DerivedNetwork::new(g, cfg, seed, DType::F32, device)?))
    }

    fn describe_size(m: &EvalModelConfig) -> String {
        match m.net {
            NetKind::Cifar => format!("C={}, L={}, without auxiliary head", m.channels, m.layers),
            NetKind::ImageNet => format!("C={}, L={}, imagenet network, without auxiliary head", m.channels, m.layers),
        }
    }
}

/// The darts settings of `m` (the registry hands a space only its own).
fn own(m: &SearchModelConfig) -> Result<&DartsSearchModel, ConfigError> {
    m.darts().ok_or_else(|| ConfigError::plain(format!("{} model settings for a darts search", m.kind())))
}

/// A cell: the inputs c_{k-2} and c_{k-1}, the intermediate nodes with one labelled edge per
/// op, and the output c_{k} fed by the concatenated nodes.
fn cell_graph(name: &str, title: &str, edges: &[Edge], concat: &[usize]) -> CellGraph {
    let steps = edges.len() / 2;
    let mut nodes: Vec<Node> = (0..2).map(|j| Node { label: state_label(j), kind: NodeKind::Input }).collect();
    nodes.extend((2..2 + steps).map(|j| Node { label: state_label(j), kind: NodeKind::Inner }));
    nodes.push(Node { label: "c_{k}".into(), kind: NodeKind::Output });
    let out = nodes.len() - 1;
    let mut graph_edges: Vec<diagram::Edge> = edges
        .iter()
        .enumerate()
        .map(|(e, (op, input))| diagram::Edge { from: *input, to: 2 + e / 2, op: Some(op.to_string()) })
        .collect();
    graph_edges.extend(concat.iter().map(|&c| diagram::Edge { from: c, to: out, op: None }));
    CellGraph { name: name.into(), title: title.into(), nodes, edges: graph_edges }
}
