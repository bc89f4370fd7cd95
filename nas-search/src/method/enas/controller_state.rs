//! The ENAS controller's part of a checkpoint: its parameters and Adam moments as tensors, its
//! spec, Adam step count and baseline as metadata, restored all or nothing.

use candle_core::Tensor;
use nas_core::optim::Adam;
use search_spaces::ControllerSpec;

use super::controller::{invalid, Controller};
use crate::method::{Metadata, NamedTensors};
use crate::Result;

impl Controller {
    /// The whole state for a checkpoint: copies of the parameters (`prefix.<name>`) and the
    /// Adam moments (`prefix.adam.m.<i>`, `prefix.adam.v.<i>`) as tensors; the spec, the
    /// Adam step count and the baseline (its f64 bits, or `none`) as metadata.
    pub fn state(&self, prefix: &str) -> candle_core::Result<(NamedTensors, Metadata)> {
        let mut tensors = Vec::new();
        for p in self.store.params() {
            // A copy: the optimiser updates the variables in place.
            tensors.push((format!("{prefix}.{}", p.name), p.value()?.copy()?));
        }
        tensors.extend(self.adam.state(&format!("{prefix}.adam")));
        let spec = serde_json::to_string(&self.spec).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let baseline = self.baseline.map_or_else(|| "none".to_string(), |b| b.to_bits().to_string());
        let meta = vec![
            (format!("{prefix}.spec"), spec),
            (format!("{prefix}.adam_steps"), self.steps().to_string()),
            (format!("{prefix}.baseline_bits"), baseline),
        ];
        Ok((tensors, meta))
    }

    /// Restores what `state(prefix)` saved; all or nothing: on an error the controller is
    /// unchanged. The spec must match (parameter shapes alone cannot tell 4 edges from 6).
    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &dyn Fn(&str) -> Option<Tensor>,
        meta: &dyn Fn(&str) -> Option<String>,
    ) -> Result<()> {
        let key = |k: &str| format!("{prefix}.{k}");
        let need = |k: &str| meta(&key(k)).ok_or_else(|| invalid(format!("controller state lacks `{}`", key(k))));
        let spec: ControllerSpec = serde_json::from_str(&need("spec")?)
            .map_err(|e| invalid(format!("controller state `{}`: {e}", key("spec"))))?;
        if spec != self.spec {
            return Err(invalid(format!("controller state is for {spec:?}, this controller decides {:?}", self.spec)));
        }
        let steps_text = need("adam_steps")?;
        let steps: u64 = steps_text
            .parse()
            .map_err(|e| invalid(format!("controller state `{}` = {steps_text:?}: {e}", key("adam_steps"))))?;
        let baseline = match need("baseline_bits")?.as_str() {
            "none" => None,
            s => Some(f64::from_bits(
                s.parse().map_err(|e| invalid(format!("controller state `{}` = {s:?}: {e}", key("baseline_bits"))))?,
            )),
        };
        let mut values = Vec::new();
        for p in self.store.params() {
            let name = key(&p.name);
            let t = tensors(&name).ok_or_else(|| invalid(format!("controller state lacks tensor `{name}`")))?;
            if t.dims() != p.dims() {
                return Err(invalid(format!(
                    "controller state tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    p.dims()
                )));
            }
            // A copy, so that loading a controller's own tensors is no self-assignment.
            values.push((p, t.to_dtype(self.dtype)?.to_device(&self.device)?.copy()?));
        }
        let mut adam = Adam::new(self.adam.params().to_vec(), self.cfg.adam);
        adam.load_state(&key("adam"), steps, tensors)
            .map_err(|e| invalid(format!("controller state `{}`: {e}", key("adam"))))?;
        for (p, t) in values {
            p.var.set(&t)?;
        }
        self.adam = adam;
        self.baseline = baseline;
        Ok(())
    }

}
