//! The registration macro behind `method::methods!`: from one line per method
//! (`Variant => module::Spec`) it declares the method's module and gives it a `Method` variant
//! (the name) and a `MethodConfig` variant (the name with its settings), and routes every
//! question about a method to its `MethodSpec`. Nothing else in the crate lists the methods.

macro_rules! methods {
    ($($(#[$doc:meta])* $variant:ident => $module:ident :: $spec:ident),+ $(,)?) => {
        $(pub mod $module;)+

        /// A registered search method (its name; `MethodConfig` carries its settings).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $($(#[$doc])* $variant,)+
        }

        /// A search method with its settings: the `method` section of config.json.
        #[derive(Debug, Clone, PartialEq)]
        pub enum MethodConfig {
            $($(#[$doc])* $variant(<$module::$spec as MethodSpec>::Config),)+
        }

        impl Method {
            /// Every method, in registration order.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)+];

            /// The method's name in config.json and on the command line.
            pub fn name(self) -> &'static str {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::NAME,)+ }
            }

            /// What the method does, in one line.
            pub fn about(self) -> &'static str {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::ABOUT,)+ }
            }

            /// Whether each forward samples the ops that run (`MethodSpec::SAMPLES_OPS`).
            pub fn samples_ops(self) -> bool {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::SAMPLES_OPS,)+ }
            }

            /// The flags of the method's settings (under `method`).
            pub fn flags(self) -> Vec<Flag> {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::flags(),)+ }
            }

            /// The fields of the method's settings.
            pub fn fields(self) -> &'static [&'static str] {
                match self {
                    $(Method::$variant => struct_fields::<<$module::$spec as MethodSpec>::Config>(),)+
                }
            }

            /// The top-level config.json fields of runs written before the method section that
            /// belong to this method's settings: (old path, field).
            pub fn legacy_fields(self) -> &'static [(&'static str, &'static str)] {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::legacy_fields(),)+ }
            }

            /// The presets that search with the method.
            pub fn presets(self) -> Vec<Preset> {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::presets(),)+ }
            }

            /// The charts of the method's record fields.
            pub fn charts(self) -> Vec<RecordChart> {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::charts(),)+ }
            }

            /// See `MethodSpec::requests`.
            pub fn requests(self) -> &'static [&'static str] {
                match self { $(Method::$variant => <$module::$spec as MethodSpec>::requests(),)+ }
            }

            /// The default value of the setting `field` as config.json writes it.
            pub fn default_setting(self, field: &str) -> Option<&'static Value> {
                static DEFAULTS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
                let all = DEFAULTS.get_or_init(|| {
                    Method::ALL.iter().map(|m| m.default_config().to_json().unwrap_or(Value::Null)).collect()
                });
                let i = Method::ALL.iter().position(|m| *m == self)?;
                all.get(i)?.get(field)
            }

            /// The method with its default settings.
            pub fn default_config(self) -> MethodConfig {
                match self { $(Method::$variant => MethodConfig::$variant(Default::default()),)+ }
            }

            fn parse_settings(self, v: Value) -> std::result::Result<MethodConfig, serde_json::Error> {
                match self { $(Method::$variant => serde_json::from_value(v).map(MethodConfig::$variant),)+ }
            }
        }

        impl Serialize for MethodConfig {
            /// `{"name": …, <settings in their struct's order>}`.
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                match self {
                    $(MethodConfig::$variant(c) => {
                        Tagged { name: <$module::$spec as MethodSpec>::NAME, settings: c }.serialize(s)
                    })+
                }
            }
        }

        impl MethodConfig {
            /// Which method these settings are for.
            pub fn method(&self) -> Method {
                match self { $(MethodConfig::$variant(_) => Method::$variant,)+ }
            }

            /// The settings as fields of the `method` section (the name aside).
            pub fn settings_json(&self) -> std::result::Result<Map<String, Value>, String> {
                let v = match self { $(MethodConfig::$variant(c) => serde_json::to_value(c),)+ };
                match v.map_err(|e| e.to_string())? {
                    Value::Object(m) => Ok(m),
                    other => Err(format!("a method's settings are not an object: {other}")),
                }
            }

            fn validate_own(&self, search: &SearchConfig) -> std::result::Result<(), ConfigError> {
                match self { $(MethodConfig::$variant(c) => <$module::$spec as MethodSpec>::validate(c, search),)+ }
            }

            /// The architecture-gradient rule of a hypergradient-family method.
            pub fn hypergradient(&self) -> Option<Box<dyn Hypergradient>> {
                match self { $(MethodConfig::$variant(c) => <$module::$spec as MethodSpec>::hypergradient(c),)+ }
            }

            /// The term of α a hypergradient-family method adds to its α step's loss.
            pub fn arch_term(&self) -> Option<Box<dyn alternating::ArchTerm>> {
                match self { $(MethodConfig::$variant(c) => <$module::$spec as MethodSpec>::arch_term(c),)+ }
            }

            /// The method's state for a search of the supernet in `ctx`.
            pub fn build(&self, ctx: &MethodContext) -> Result<Box<dyn SearchMethod>> {
                match self { $(MethodConfig::$variant(c) => <$module::$spec as MethodSpec>::build(c, ctx),)+ }
            }
        }
    };
}
