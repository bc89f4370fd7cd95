//! Error messages in flags. The libraries name the settings of a message by their config.json
//! field (`nas_core::ConfigError`); the command line shows the flag declared for that field
//! instead (`config_flags`: every command's flags, from the libraries' declarations), followed
//! by the field where the value may have come from a config file: `--channels (model.channels)
//! must be positive`. A field inside a flag's field (`optimizer.schedule.gamma` under
//! `--lr-schedule`) is named by that flag.

use std::collections::HashMap;
use std::error::Error;
use std::sync::OnceLock;

use nas_core::{ConfigError, RunError};

use crate::config_flags::all_mounts;

/// Every flagged field, by its full path, with its flag.
fn flags() -> &'static HashMap<String, String> {
    static FLAGS: OnceLock<HashMap<String, String>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let mut map = HashMap::new();
        for mount in all_mounts() {
            for flag in &mount.flags {
                map.entry(mount.path(flag)).or_insert_with(|| format!("--{}", flag.long));
            }
        }
        map
    })
}

/// The flag that sets `field`, or the one whose field holds it.
pub fn flag(field: &str) -> Option<&'static str> {
    let mut path = field;
    loop {
        if let Some(f) = flags().get(path) {
            return Some(f.as_str());
        }
        path = &path[..path.rfind('.')?];
    }
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
        assert_eq!(flag("optimizer.schedule.gamma"), Some("--lr-schedule"));
        assert_eq!(flag("weight_optimizer.schedule.gamma"), None);
        assert_eq!(flag("method.cg_steps"), Some("--cg-steps"));
    }

    /// A field has one flag wherever it appears (the same long name in every command), and a
    /// flag sets one field in every command that has it, except where the commands' sections
    /// differ (`--lr`: a search's weight optimiser, retraining's optimiser).
    #[test]
    fn every_flagged_field_has_one_flag() {
        let mut by_path: HashMap<String, &str> = HashMap::new();
        let mounts = all_mounts();
        for mount in &mounts {
            for flag in &mount.flags {
                let path = mount.path(flag);
                let was = by_path.entry(path.clone()).or_insert(flag.long);
                assert_eq!(*was, flag.long, "{path} has two flags");
            }
        }
    }
}
