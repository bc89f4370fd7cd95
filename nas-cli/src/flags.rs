//! Which flag sets which configuration field, and error messages in flags. The libraries name
//! the settings of a message by their config.json field (`nas_core::ConfigError`); the command
//! line shows its flag instead, followed by the field where the value may have come from a
//! config file: `--channels (model.channels) must be positive`.

use std::error::Error;

use nas_core::{ConfigError, RunError};

/// (config field, flag) of every setting a flag sets, search, train and bench together: a
/// field has the same flag wherever it appears.
const FLAGS: &[(&str, &str)] = &[
    ("preset", "--preset"),
    ("space", "--space"),
    ("method", "--method"),
    ("neumann_steps", "--neumann-steps"),
    ("unroll_steps", "--unroll-steps"),
    ("cg_steps", "--cg-steps"),
    ("cg_damping", "--cg-damping"),
    ("hessian_every", "--hessian-every"),
    ("sampling.tau_max", "--tau-max"),
    ("sampling.tau_min", "--tau-min"),
    ("sampling.resource", "--resource"),
    ("sampling.resource_weight", "--resource-weight"),
    ("sampling.controller_steps", "--controller-steps"),
    ("sampling.controller_aggregate", "--controller-aggregate"),
    ("sampling.select_samples", "--select-samples"),
    ("early_stop", "--early-stop"),
    ("epochs", "--epochs"),
    ("arch_start_epoch", "--arch-start-epoch"),
    ("seed", "--seed"),
    ("device", "--device"),
    ("genotype", "--genotype"),
    ("model.channels", "--channels"),
    ("model.layers", "--layers"),
    ("model.partial_channels", "--partial-channels"),
    ("model.edge_norm", "--edge-norm"),
    ("model.max_skip_connect", "--max-skip-connect"),
    ("model.ops", "--ops"),
    ("progressive.layers", "--stage-layers"),
    ("progressive.ops_per_edge", "--stage-ops"),
    ("progressive.skip_dropout", "--skip-dropout"),
    ("model.auxiliary_weight", "--auxiliary-weight"),
    ("model.drop_path", "--drop-path"),
    ("model.net", "--net"),
    ("data.spec", "--data"),
    ("data.subset", "--subset"),
    ("data.subset_fraction", "--subset-fraction"),
    ("label_smoothing", "--label-smoothing"),
    ("optimizer.warmup_epochs", "--warmup-epochs"),
    ("optimizer.schedule.gamma", "--lr-schedule"),
    ("data.batch_size", "--batch-size"),
    ("data.accumulate", "--accumulate"),
    ("data.cutout", "--cutout"),
    ("data.image_size", "--image-size"),
    ("weight_optimizer.lr", "--lr"),
    ("optimizer.lr", "--lr"),
    ("arch_optimizer.lr", "--arch-lr"),
    // `nas bench`, whose settings are not nested.
    ("steps", "--steps"),
    ("warmup", "--warmup"),
    ("batch_size", "--batch-size"),
    ("image_size", "--image-size"),
];

/// The flag that sets `field`.
pub fn flag(field: &str) -> Option<&'static str> {
    FLAGS.iter().find(|(f, _)| *f == field).map(|(_, flag)| *flag)
}

/// A mention of `field` in a message: the flag, and for a full mention the field after it.
fn mention(field: &str, brief: bool) -> Option<String> {
    let flag = flag(field)?;
    Some(if brief { flag.to_string() } else { format!("{flag} ({field})") })
}

/// The settings message inside one error of a chain, if it has one.
fn config_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a ConfigError> {
    if let Some(c) = e.downcast_ref::<ConfigError>() {
        return Some(c);
    }
    if let Some(r) = e.downcast_ref::<RunError>() {
        return r.config_error();
    }
    e.downcast_ref::<nas_core::Error>().and_then(nas_core::Error::config_error)
}

/// `err` as `{err:#}` prints it (every cause after a colon), with the settings named by flag.
pub fn render(err: &anyhow::Error) -> String {
    let links: Vec<String> = err
        .chain()
        .map(|e| {
            let text = e.to_string();
            match config_error(e) {
                // The library's own words around the message stay as they are.
                Some(c) => text.replacen(&c.to_string(), &c.render(mention), 1),
                None => text,
            }
        })
        .collect();
    links.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nas_core::config_error::{brief, field};

    #[test]
    fn settings_are_shown_as_flags_and_unflagged_fields_as_fields() {
        let msg = format!(
            "{} must be positive; need 0 < {} and 0 <= {}; {} 20 is small",
            field("epochs"),
            brief("optimizer.lr"),
            field("optimizer.lr_min"),
            brief("data.subset")
        );
        let err = anyhow::Error::new(RunError::Config(ConfigError::new(msg))).context("cannot start");
        assert_eq!(
            render(&err),
            "cannot start: invalid configuration: --epochs (epochs) must be positive; need 0 < --lr and 0 <= \
             optimizer.lr_min; --subset 20 is small"
        );
        let core =
            anyhow::Error::new(RunError::Core(ConfigError::new(format!("{} must be positive", brief("steps"))).into()));
        assert_eq!(render(&core), "--steps must be positive");
        let plain = anyhow::anyhow!("nothing to rename");
        assert_eq!(render(&plain), format!("{plain:#}"));
    }

    #[test]
    fn every_flagged_field_is_listed_once() {
        for (i, (f, _)) in FLAGS.iter().enumerate() {
            assert!(FLAGS[..i].iter().all(|(g, _)| g != f), "{f} twice");
        }
    }
}
