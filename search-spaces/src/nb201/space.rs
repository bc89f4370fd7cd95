//! The nb201 space as the registry (`SearchSpace`) sees it: its genotypes (also written as
//! arch strings), the search and the derived network a run's settings build, what those
//! settings must satisfy here (no PC-DARTS options, no auxiliary head, no drop path), and the
//! shapes of its pictures.

use candle_core::{DType, Device};
use nas_core::config_error::brief;
use nas_core::settings::Flag;
use nas_core::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::edges::{edge_nodes, NODES};
use super::genotype::Nb201Genotype;
use super::network::{Nb201Config, Nb201Network};
use super::ops::Nb201Op;
use crate::diagram::{ArchTable, CellGraph, Edge, Node, NodeKind};
use crate::error::Result;
use crate::eval_network::EvalNetwork;
use crate::model_config::{EvalModelConfig, NetKind, SearchModelConfig, TaskShape};
use crate::registry::SearchSpace;
use crate::supernet::Supernet;

/// The NAS-Bench-201 cell space (see the module).
pub struct Nb201;

/// The nb201 space's own supernet settings: the benchmark has one skeleton, so only `net`,
/// which must stay cifar.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Nb201SearchModel {
    #[serde(skip_serializing_if = "NetKind::is_cifar")]
    pub net: NetKind,
}

impl Nb201 {
    fn network_config(channels: usize, layers: usize, task: TaskShape) -> Nb201Config {
        Nb201Config { channels, cells_per_stage: layers, num_classes: task.num_classes, in_channels: task.in_channels }
    }
}

impl SearchSpace for Nb201 {
    const NAME: &'static str = "nb201";
    const AUXILIARY_HEAD: bool = false;
    const DROP_PATH: bool = false;

    type Genotype = Nb201Genotype;

    fn genotype_to_json(g: &Nb201Genotype) -> Value {
        g.to_json()
    }

    fn genotype_from_json(v: &Value) -> Result<Nb201Genotype> {
        Nb201Genotype::from_json(v)
    }

    /// An arch string `|op~0|+|…|`.
    fn named_genotype(name: &str) -> Option<Result<Nb201Genotype>> {
        name.starts_with('|').then(|| Nb201Genotype::parse(name))
    }

    fn builtin_names() -> Vec<&'static str> {
        Vec::new()
    }

    /// Nodes 0 (input) to 3 (output), one edge per op that is not `none`.
    fn cell_graphs(g: &Nb201Genotype) -> Vec<CellGraph> {
        let nodes = (0..NODES)
            .map(|i| Node {
                label: i.to_string(),
                kind: match i {
                    0 => NodeKind::Input,
                    i if i == NODES - 1 => NodeKind::Output,
                    _ => NodeKind::Inner,
                },
            })
            .collect();
        let edges = g
            .edges
            .iter()
            .enumerate()
            .filter(|(_, op)| **op != Nb201Op::None)
            .map(|(e, op)| {
                let (to, from) = edge_nodes(e);
                Edge { from, to, op: Some(op.to_string()) }
            })
            .collect();
        vec![CellGraph { name: "cell".into(), title: "NAS-Bench-201 cell".into(), nodes, edges }]
    }

    /// The benchmark's network (C=16, 5 cells per stage); C=8 and 2 cells for the demo.
    fn search_sizes(quick: bool) -> (usize, usize) {
        if quick {
            (8, 2)
        } else {
            (16, 5)
        }
    }

    type SearchModel = Nb201SearchModel;

    fn search_model_flags() -> Vec<Flag> {
        vec![crate::model_config::net_flag()]
    }

    /// Written into every space's `model` before the settings were per space; these values
    /// changed nothing here.
    fn legacy_model_fields() -> Vec<(&'static str, Value)> {
        vec![
            ("steps", json!(4)),
            ("partial_channels", json!(1)),
            ("edge_norm", json!(false)),
            ("max_skip_connect", Value::Null),
        ]
    }

    fn net(own: &Nb201SearchModel) -> NetKind {
        own.net
    }

    fn validate_search(m: &SearchModelConfig) -> Result<(), ConfigError> {
        if m.net() != NetKind::Cifar {
            return Err(ConfigError::new(format!(
                "{} supernets have one stem ({} must be cifar; the imagenet stems are the darts space's)",
                Self::NAME,
                brief("model.net")
            )));
        }
        Ok(())
    }

    fn check_search_input_size(_: &SearchModelConfig, _: usize, _: usize) -> Result<(), ConfigError> {
        Ok(())
    }

    fn build_supernet(m: &SearchModelConfig, task: TaskShape, seed: u64, device: &Device) -> Result<Box<dyn Supernet>> {
        let cfg = Self::network_config(m.channels, m.layers, task);
        Ok(Box::new(Nb201Network::search(cfg, seed, DType::F32, device)?))
    }

    fn arch_tables() -> Vec<ArchTable> {
        let edge_label = |e| {
            let (to, from) = edge_nodes(e);
            format!("{from} → {to}")
        };
        let ops = Nb201Op::ALL.iter().map(|o| o.name()).collect();
        vec![ArchTable { key: "arch_parameters", title: "cell", ops, edge_label }]
    }

    /// The benchmark's network: C=16, 5 cells per stage.
    fn eval_defaults() -> EvalModelConfig {
        EvalModelConfig { channels: 16, layers: 5, auxiliary_weight: 0.0, drop_path: 0.0, net: NetKind::Cifar }
    }

    /// No auxiliary head, one skeleton, no drop path.
    fn validate_eval(m: &EvalModelConfig) -> Result<(), ConfigError> {
        let refused = [
            (m.auxiliary_weight != 0.0, "have no auxiliary head", "model.auxiliary_weight", "0"),
            (m.net != NetKind::Cifar, "have one skeleton", "model.net", "cifar"),
            (m.drop_path != 0.0, "do not use drop path", "model.drop_path", "0"),
        ];
        match refused.iter().find(|(bad, ..)| *bad) {
            Some((_, what, field, value)) => {
                Err(ConfigError::new(format!("{} networks {what} ({} must be {value})", Self::NAME, brief(field))))
            }
            None => Ok(()),
        }
    }

    fn check_input_size(_: &EvalModelConfig, _: usize, _: usize) -> Result<(), ConfigError> {
        Ok(())
    }

    fn build_eval_network(
        g: &Nb201Genotype,
        m: &EvalModelConfig,
        task: TaskShape,
        seed: u64,
        device: &Device,
    ) -> Result<Box<dyn EvalNetwork>> {
        let cfg = Self::network_config(m.channels, m.layers, task);
        Ok(Box::new(Nb201Network::derived(cfg, g, seed, DType::F32, device)?))
    }

    fn describe_size(m: &EvalModelConfig) -> String {
        format!("C={}, {} cells per stage", m.channels, m.layers)
    }
}
