//! config.json as it was written before the method section: `"method": "implicit-cg"` with
//! every method's settings at the top level (`neumann_steps`, `unroll_steps`, `cg_steps`,
//! `cg_damping`) and the sampling methods' in `sampling`. Each method lists the old fields
//! that are its settings (`MethodSpec::legacy_fields`); the named method's move into its
//! section, the others' go (they never applied). A run written then resumes, and a config file
//! written then reads, with the same meaning.

use nas_core::settings::TAG;
use serde_json::{Map, Value};

use crate::method::Method;

/// Rewrites an old config.json (or config file) in the current form; a current one is left as
/// it is.
pub fn migrate(v: &mut Value) {
    let Value::Object(root) = v else { return };
    if let Some(Value::String(name)) = root.get("method") {
        let mut section = Map::new();
        section.insert(TAG.to_string(), Value::String(name.clone()));
        root.insert("method".to_string(), Value::Object(section));
    }
    let named = root.get("method").and_then(|m| m.get(TAG)).and_then(Value::as_str).map(str::to_string);
    let mut moved = Vec::new();
    let mut old_paths = Vec::new();
    for m in Method::ALL {
        for &(old, field) in m.legacy_fields() {
            old_paths.push(old);
            if Some(m.name()) == named.as_deref() {
                if let Some(v) = get(root, old).filter(|v| !v.is_null()) {
                    moved.push((field, v.clone()));
                }
            }
        }
    }
    for old in old_paths {
        remove(root, old);
    }
    if root.get("sampling").and_then(Value::as_object).is_some_and(Map::is_empty) {
        root.remove("sampling");
    }
    if let Some(Value::Object(section)) = root.get_mut("method") {
        for (field, v) in moved {
            section.entry(field.to_string()).or_insert(v);
        }
    }
}

fn get<'a>(root: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    match path.split_once('.') {
        Some((head, rest)) => get(root.get(head)?.as_object()?, rest),
        None => root.get(path),
    }
}

fn remove(root: &mut Map<String, Value>, path: &str) {
    match path.split_once('.') {
        Some((head, rest)) => {
            if let Some(Value::Object(inner)) = root.get_mut(head) {
                remove(inner, rest);
            }
        }
        None => {
            root.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::SearchConfig;

    /// config.json of an implicit-cg run as the project wrote it before the method section.
    fn old_cg_run() -> Value {
        json!({
            "preset": "quick", "space": "darts", "method": "implicit-cg", "neumann_steps": 5,
            "unroll_steps": 1, "cg_steps": 2, "cg_damping": 0.5, "hessian_every": 0,
            "early_stop": "none", "epochs": 2, "arch_start_epoch": 0, "seed": 11, "device": "cpu",
            "model": {"channels": 4, "layers": 2, "steps": 4, "partial_channels": 1, "edge_norm": false,
                      "max_skip_connect": null},
            "data": {"spec": "synthetic", "subset": 64, "batch_size": 16},
            "weight_optimizer": {"lr": 0.025, "lr_min": 0.001, "momentum": 0.9, "weight_decay": 3e-4, "grad_clip": 5.0},
            "arch_optimizer": {"lr": 3e-4, "beta1": 0.5, "beta2": 0.999, "weight_decay": 1e-3},
            "sampling": {"resource": "params", "resource_weight": 0.0, "select_samples": 100}
        })
    }

    #[test]
    fn old_configs_keep_their_method_settings() {
        let c = SearchConfig::from_value(old_cg_run()).unwrap();
        let want = json!({"name": "implicit-cg", "cg_steps": 2, "cg_damping": 0.5});
        assert_eq!(c.method.to_json().unwrap(), want);
        assert_eq!((c.model.channels, c.seed), (4, 11));
        // Written again, it is in the current form and reads back the same.
        let again = SearchConfig::from_value(c.to_value().unwrap()).unwrap();
        assert_eq!(again, c);

        let mut gdas = old_cg_run();
        gdas["method"] = json!("gdas");
        gdas["sampling"]["tau_max"] = json!(4.0);
        let c = SearchConfig::from_value(gdas).unwrap();
        assert_eq!(c.method.to_json().unwrap(), json!({"name": "gdas", "tau_max": 4.0, "tau_min": 0.1}));

        let mut enas = old_cg_run();
        enas["method"] = json!("enas");
        enas["sampling"]["controller_steps"] = json!(2);
        let c = SearchConfig::from_value(enas).unwrap();
        assert_eq!(c.method.to_json().unwrap(), json!({"name": "enas", "controller_steps": 2, "select_samples": 100}));
    }

    #[test]
    fn old_nb201_models_drop_the_darts_fields_they_carried() {
        let mut nb = old_cg_run();
        nb["space"] = json!("nb201");
        nb["method"] = json!("first-order");
        let c = SearchConfig::from_value(nb.clone()).unwrap();
        assert_eq!(serde_json::to_value(&c.model).unwrap(), json!({"channels": 4, "layers": 2}));
        nb["model"]["partial_channels"] = json!(2);
        let e = SearchConfig::from_value(nb).unwrap_err().to_string();
        assert!(e.contains("model.partial_channels applies to the darts space only"), "{e}");
    }
}
