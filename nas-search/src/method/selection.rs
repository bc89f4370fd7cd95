//! The genotype of ENAS and of random sampling: every epoch ends by sampling `select_samples`
//! children and keeping the most accurate on one search-valid batch (AutoDL-Projects' best of
//! 100 sampled children). The accuracies use batch statistics (training-mode batch norm, as
//! ENAS scores its children); the running statistics are restored afterwards. The choice is
//! kept in checkpoints as the `sampling_selection` metadata.

use nas_core::checkpoint::LoadedTensors;
use nas_core::hypergrad::WeightGuard;
use nas_core::settings::{self, Flag};
use nas_core::ConfigError;
use search_spaces::{Child, Genotype, Supernet};
use serde_json::{json, Map, Value};

use super::sampling::{child_accuracy, draw, SELECT_DRAW};
use super::Metadata;
use crate::step::Batch;
use crate::{Error, Result};

/// The checkpoint metadata of a selection.
const SELECTION_META: &str = "sampling_selection";

/// `--select-samples` (ENAS and random sampling, under `method`).
pub fn select_samples_flag() -> Flag {
    Flag::one("select-samples", "select_samples", "N", settings::parse::<usize>).help(
        "enas, random: children sampled after every epoch, the most accurate on a validation batch being \
         the genotype (100)",
    )
}

/// The chart of the selected child's accuracy (`select_acc`), with ENAS' controller entropy.
pub const SELECTION_CHART: super::RecordChart = super::RecordChart {
    title: "controller entropy · selected child",
    curves: &[("controller_entropy", "entropy"), ("select_acc", "selected acc")],
};

/// The children compared by default.
pub const SELECT_SAMPLES: usize = 100;

/// The config.json field the count had before the method section.
pub const SELECT_LEGACY: (&str, &str) = ("sampling.select_samples", "select_samples");

/// Checks the count of `method`.
pub fn validate_select_samples(method: &str, n: usize) -> std::result::Result<(), ConfigError> {
    super::positive(method, "select_samples", n)
}

/// The most accurate of the sampled children of an epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    pub genotype: Value,
    /// Its accuracy on the selection batch.
    pub acc: f64,
    /// How many children were compared.
    pub samples: usize,
}

/// The selection of a run: its seed, how many children to compare, and the last choice.
pub struct Selector {
    seed: u64,
    samples: usize,
    chosen: Option<Selection>,
}

impl Selector {
    pub fn new(seed: u64, samples: usize) -> Self {
        Self { seed, samples, chosen: None }
    }

    /// Samples the children of `epoch` with `child` and keeps the most accurate on `batch`,
    /// the batch-norm statistics restored afterwards.
    pub fn select(
        &mut self,
        net: &dyn Supernet,
        epoch: usize,
        batch: &Batch,
        child: &mut dyn FnMut(&mut nas_core::rng::Rng) -> Result<Child>,
    ) -> Result<()> {
        let buffers = net.weights().buffers();
        let _statistics = WeightGuard::restoring(&buffers)?;
        let mut best: Option<(f64, Child)> = None;
        for i in 0..self.samples {
            let mut rng = draw(self.seed, epoch, SELECT_DRAW + i as u64);
            let chosen = child(&mut rng)?;
            let acc = child_accuracy(net, &chosen, batch)?;
            if best.as_ref().is_none_or(|(b, _)| acc > *b) {
                best = Some((acc, chosen));
            }
        }
        if let Some((acc, chosen)) = best {
            let genotype = net.genotype_of(&chosen)?.to_json();
            tracing::info!(epoch, acc, genotype = %genotype, "selected the best sampled child");
            self.chosen = Some(Selection { genotype, acc, samples: self.samples });
        }
        Ok(())
    }

    /// The genotype of the last selection; before the first, the child `first` draws from the
    /// first selection's stream.
    pub fn genotype(
        &self,
        net: &dyn Supernet,
        first: &dyn Fn(&mut nas_core::rng::Rng) -> Result<Child>,
    ) -> Result<Genotype> {
        match &self.chosen {
            Some(s) => Genotype::from_json_value(&s.genotype)
                .map_err(|e| Error::Internal(format!("the selected genotype: {e}"))),
            None => Ok(net.genotype_of(&first(&mut draw(self.seed, 0, SELECT_DRAW))?)?),
        }
    }

    pub fn record_fields(&self, fields: &mut Map<String, Value>) {
        if let Some(s) = &self.chosen {
            fields.insert("select_acc".into(), json!(s.acc));
        }
    }

    /// The selection as checkpoint metadata.
    pub fn state(&self) -> Metadata {
        match &self.chosen {
            Some(s) => {
                let text = json!({"genotype": s.genotype, "acc": s.acc, "samples": s.samples}).to_string();
                vec![(SELECTION_META.to_string(), text)]
            }
            None => Vec::new(),
        }
    }

    /// Restores `state` from the checkpoint at `path`.
    pub fn restore(&mut self, ck: &LoadedTensors, path: &std::path::Path) -> Result<()> {
        self.chosen = match ck.meta(SELECTION_META) {
            Some(text) => Some(
                serde_json::from_str(text).map_err(|e| Error::checkpoint(path, format!("{SELECTION_META}: {e}")))?,
            ),
            None => None,
        };
        Ok(())
    }
}
