//! The command line's configuration flags, built from the libraries' declarations
//! (`nas_core::settings::Flag`, each next to the config section that owns its field) rather
//! than written here: `ConfigFlags<S>` adds a command's flags to its clap parser, and gives the
//! flags that were used as a JSON overlay for the configuration. Values are parsed by clap (a
//! bad value is a usage error naming the flag); what they mean is checked when the overlay is
//! laid over the configuration and validated.

use std::marker::PhantomData;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use nas_core::settings::{flag_json, overlay_of, Flag, FlagValue, Mount};
use serde_json::Value;

/// A command's flag sections.
pub trait FlagSet {
    fn mounts() -> Vec<Mount>;
}

/// A marker type per command, with the library function that lists its sections.
macro_rules! flag_sets {
    ($($(#[$doc:meta])* $name:ident => $mounts:path),+ $(,)?) => {
        $($(#[$doc])* pub struct $name;

        impl FlagSet for $name {
            fn mounts() -> Vec<Mount> {
                $mounts()
            }
        })+

        /// Every command's flag sections (for naming settings in messages).
        pub fn all_mounts() -> Vec<Mount> {
            [$($name::mounts()),+].concat()
        }
    };
}

flag_sets! {
    /// `nas search`.
    Search => nas_search::config::search_flags,
    /// `nas train`.
    Train => nas_eval::train_flags,
    /// `nas select`.
    Select => nas_search::select::select_flags,
    /// `nas bench search`.
    BenchSearch => nas_search::bench::bench_search_flags,
    /// `nas bench train`.
    BenchTrain => nas_eval::bench_train_flags,
    /// `nas bench loader`.
    BenchLoader => nas_core::bench::loader_flags,
    /// `nas bilevel`.
    Bilevel => nas_search::method::bilevel_flags,
}

/// The flags given to a command, by mount and flag index, with their parsed values.
pub struct ConfigFlags<S> {
    given: Vec<(usize, usize, Value)>,
    _set: PhantomData<S>,
}

impl<S> std::fmt::Debug for ConfigFlags<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.given.iter().map(|(_, _, v)| v)).finish()
    }
}

impl<S> Default for ConfigFlags<S> {
    fn default() -> Self {
        Self { given: Vec::new(), _set: PhantomData }
    }
}

/// The command's flags, each long name once (the first declaration).
fn flags_of(mounts: &[Mount]) -> Vec<(usize, usize)> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (m, mount) in mounts.iter().enumerate() {
        for (f, flag) in mount.flags.iter().enumerate() {
            if !seen.contains(&flag.long) {
                seen.push(flag.long);
                out.push((m, f));
            }
        }
    }
    out
}

fn arg(flag: &Flag, heading: Option<&'static str>) -> Arg {
    let a = Arg::new(flag.long).long(flag.long).help(flag.help.to_string()).help_heading(heading);
    match flag.value {
        FlagValue::Switch => a.action(ArgAction::SetTrue),
        FlagValue::One(parse) | FlagValue::Overlay(parse) => {
            a.value_name(flag.value_name).action(ArgAction::Set).value_parser(move |s: &str| parse(s))
        }
        FlagValue::List(parse) => a
            .value_name(flag.value_name)
            .action(ArgAction::Append)
            .value_delimiter(',')
            .value_parser(move |s: &str| parse(s)),
    }
}

impl<S: FlagSet> ConfigFlags<S> {
    /// The flags that were given, as an overlay of the configuration.
    pub fn overlay(&self) -> Value {
        let mounts = S::mounts();
        overlay_of(self.given.iter().map(|(m, f, v)| (&mounts[*m], &mounts[*m].flags[*f], v.clone())))
    }

    /// Whether no flag was given.
    pub fn is_empty(&self) -> bool {
        self.given.is_empty()
    }
}

impl<S: FlagSet> FromArgMatches for ConfigFlags<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mounts = S::mounts();
        let mut given = Vec::new();
        for (mi, fi) in flags_of(&mounts) {
            let flag = &mounts[mi].flags[fi];
            let values: Vec<Value> = match flag.value {
                FlagValue::Switch => {
                    if !m.get_flag(flag.long) {
                        continue;
                    }
                    Vec::new()
                }
                _ => match m.get_many::<Value>(flag.long) {
                    Some(v) => v.cloned().collect(),
                    None => continue,
                },
            };
            if let Some(v) = flag_json(flag, &values) {
                given.push((mi, fi, v));
            }
        }
        Ok(Self { given, _set: PhantomData })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl<S: FlagSet> Args for ConfigFlags<S> {
    fn augment_args(mut cmd: Command) -> Command {
        let mounts = S::mounts();
        for (mi, fi) in flags_of(&mounts) {
            cmd = cmd.arg(arg(&mounts[mi].flags[fi], mounts[mi].heading));
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}
