//! The configuration's presets, checks, config files and JSON form.

use serde_json::json;

use super::*;

#[test]
fn presets_follow_the_design() {
    let d = SearchConfig::preset("darts-1st").unwrap();
    assert_eq!((d.data.batch_size, d.epochs, d.model.channels, d.model.layers), (64, 50, 16, 8));
    assert_eq!((d.weight_optimizer.lr, d.weight_optimizer.lr_min, d.arch_optimizer.lr), (0.025, 0.001, 3e-4));
    assert_eq!(SearchConfig::preset("darts-2nd").unwrap().method.method(), Method::SecondOrder);
    let p = SearchConfig::preset("pc-darts").unwrap();
    let pm = serde_json::to_value(&p.model).unwrap();
    assert_eq!(
        (p.data.batch_size, &pm["partial_channels"], &pm["edge_norm"], p.arch_start_epoch),
        (256, &json!(4), &json!(true), 15)
    );
    assert_eq!((p.weight_optimizer.lr, p.weight_optimizer.lr_min, p.arch_optimizer.lr), (0.1, 0.0, 6e-4));
    let q = SearchConfig::preset("quick").unwrap();
    assert!(q.data.subset.unwrap() <= 2000);
    assert!(SearchConfig::preset("nope").unwrap_err().to_string().contains("unknown preset `nope`"));
}

#[test]
fn p_darts_preset_has_the_reference_settings() {
    // chenxin061/pdarts train_search.py and the P-DARTS paper: three stages of 5, 11 and
    // 17 cells at C=16, 25 epochs each with α frozen for 10, 8/5/3 ops per edge, skip
    // dropout 0.0/0.4/0.7, batch 96, SGD 0.025 cosine to 0, momentum 0.9, wd 3e-4, clip 5,
    // Adam 6e-4 (0.5, 0.999) wd 1e-3, first order, 2 skip connections in the final cell.
    let c = SearchConfig::preset("p-darts").unwrap();
    let p = c.progressive.clone().unwrap();
    assert_eq!((p.layers, p.ops_per_edge, p.skip_dropout), (vec![5, 11, 17], vec![8, 5, 3], vec![0.0, 0.4, 0.7]));
    assert_eq!((c.epochs, c.arch_start_epoch, c.data.batch_size, c.model.channels), (25, 10, 96, 16));
    let w = &c.weight_optimizer;
    assert_eq!((w.lr, w.lr_min, w.momentum, w.weight_decay, w.grad_clip), (0.025, 0.0, 0.9, 3e-4, 5.0));
    let a = &c.arch_optimizer;
    assert_eq!((a.lr, a.beta1, a.beta2, a.weight_decay), (6e-4, 0.5, 0.999, 1e-3));
    let m = serde_json::to_value(&c.model).unwrap();
    assert_eq!((c.method.method(), &m["max_skip_connect"], m.get("ops")), (Method::FirstOrder, &json!(2), None));
    c.validate().unwrap();
    let stages = |layers: Vec<usize>, ops_per_edge: Vec<usize>, skip_dropout: Vec<f64>| ProgressiveConfig {
        layers,
        ops_per_edge,
        skip_dropout,
        ..Default::default()
    };
    let widen = |layers: Vec<usize>, partial_channels: Vec<usize>, skip_dropout: Vec<f64>| ProgressiveConfig {
        layers,
        ops_per_edge: vec![8, 4],
        skip_dropout,
        partial_channels,
        net2wider: true,
    };
    for (bad, want) in [
        (stages(vec![5, 11], vec![8, 5, 3], vec![0.0; 3]), "one value per stage"),
        (stages(vec![5, 11], vec![8, 8], vec![0.0; 2]), "must decrease"),
        (stages(vec![5, 11], vec![8, 5], vec![0.0, 1.0]), "[0, 1)"),
        (widen(vec![5, 11], vec![], vec![]), "the same in every stage"),
        (widen(vec![], vec![4, 6], vec![]), "must not grow"),
        (widen(vec![], vec![6, 4, 2], vec![]), "one value per stage"),
        (widen(vec![], vec![6, 4], vec![0.0, 0.3]), "must be 0"),
    ] {
        let mut c = SearchConfig::preset("p-darts").unwrap();
        c.progressive = Some(bad);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
}

#[test]
fn drnas_darts_preset_has_the_reference_settings() {
    // xiangning-chen/DrNAS DARTS-space/train_search.py: C=36, 20 cells, batch 64, SGD 0.1
    // cosine to 0 over all 50 epochs, momentum 0.9, wd 3e-4, clip 5; Adam 6e-4 (0.5, 0.999)
    // wd 1e-3 (l2); seven ops (no `none`); two stages of 25 epochs, α from the 10th of each,
    // partial channels 6 then 4, the top 4 ops kept, Net2Wider between them.
    let c = SearchConfig::preset("drnas-darts").unwrap();
    let p = c.progressive.clone().unwrap();
    assert_eq!((p.ops_per_edge, p.partial_channels, p.net2wider), (vec![7, 4], vec![6, 4], true));
    assert!(p.layers.is_empty() && p.skip_dropout.is_empty());
    assert_eq!((c.epochs, c.arch_start_epoch, c.data.batch_size), (25, 10, 64));
    assert_eq!((c.model.channels, c.model.layers, c.method.method()), (36, 20, Method::DrNas));
    let w = &c.weight_optimizer;
    assert_eq!((w.lr, w.lr_min, w.momentum, w.weight_decay, w.grad_clip), (0.1, 0.0, 0.9, 3e-4, 5.0));
    let a = &c.arch_optimizer;
    assert_eq!((a.lr, a.beta1, a.beta2, a.weight_decay), (6e-4, 0.5, 0.999, 1e-3));
    let m = serde_json::to_value(&c.model).unwrap();
    assert_eq!(m["ops"].as_array().map(Vec::len), Some(7));
    assert_eq!(m["partial_channels"], json!(6));
    c.clone().validate().unwrap();
    // A size whose channels K = 4 does not divide is refused before anything runs.
    let small = c.with_overlay(&json!({"model": {"channels": 18, "partial_channels": 6}})).unwrap();
    let e = crate::Progressive::new(small.validate().unwrap()).err().expect("K=4 ∤ 18").to_string();
    assert!(e.contains("stage 1") && e.contains("K=4"), "{e}");
}

#[test]
fn validation_names_the_problem() {
    let c =
        SearchConfig::preset("darts-1st").unwrap().with_overlay(&json!({"model": {"partial_channels": 3}})).unwrap();
    let e = c.validate().unwrap_err();
    assert!(e.to_string().contains("model.partial_channels K=3 must divide model.channels C=16"), "{e}");
    let fields: Vec<_> = e.config_error().unwrap().fields().collect();
    assert_eq!(fields, ["model.partial_channels", "model.channels"]);
    let mut c = SearchConfig::preset("darts-1st").unwrap();
    c.data.batch_size = 0;
    assert!(c.validate().unwrap_err().to_string().contains("data.batch_size must be positive"));
    let mut c = SearchConfig::preset("darts-1st").unwrap();
    c.weight_optimizer.lr = f64::NAN;
    assert!(c.validate().is_err());
}

#[test]
fn config_file_overlays_and_rejects_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.json");
    std::fs::write(&p, r#"{"preset":"quick","epochs":2,"model":{"channels":4}}"#).unwrap();
    let c = SearchConfig::from_file(None, &p).unwrap();
    assert_eq!((c.preset.as_str(), c.epochs, c.model.channels, c.model.layers), ("quick", 2, 4, 5));
    std::fs::write(&p, r#"{"model":{"chanels":4}}"#).unwrap();
    let e = SearchConfig::from_file(None, &p).unwrap_err().to_string();
    assert!(e.contains("chanels"), "{e}");
    std::fs::write(&p, r#"{"epochs":"#).unwrap();
    assert!(SearchConfig::from_file(None, &p).unwrap_err().to_string().contains("malformed JSON"));
}

#[test]
fn round_trips_through_json() {
    let c = SearchConfig::preset("pc-darts").unwrap();
    let back: SearchConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_eq!(c, back);
}

#[test]
fn a_method_section_holds_only_its_own_settings() {
    let base = SearchConfig::preset("darts-1st").unwrap();
    let cg = base.with_overlay(&json!({"method": {"name": "implicit-cg", "cg_steps": 3}})).unwrap();
    assert_eq!(cg.method.to_json().unwrap(), json!({"name": "implicit-cg", "cg_steps": 3, "cg_damping": 1.0}));
    // Another method's tuning is ignored; a request only another method can honour is refused
    // naming its owner; a new method starts from its own defaults.
    let ignored = base.with_overlay(&json!({"method": {"cg_steps": 3, "resource_weight": 0.0}})).unwrap();
    assert_eq!(ignored.method, base.method);
    let e = base.with_overlay(&json!({"method": {"resource_weight": 0.5}})).unwrap_err().to_string();
    assert!(e.contains("method.resource_weight is a setting of the snas method") && e.contains("first-order"), "{e}");
    let gdas = cg.with_overlay(&json!({"method": {"name": "gdas"}})).unwrap();
    assert_eq!(gdas.method.to_json().unwrap(), json!({"name": "gdas", "tau_max": 10.0, "tau_min": 0.1}));
    let e = base.with_overlay(&json!({"method": {"name": "gdas", "bogus": 1}})).unwrap_err().to_string();
    assert!(e.contains("unknown setting `bogus` of the gdas method"), "{e}");
}

#[test]
fn a_new_space_starts_from_its_own_model_settings() {
    let quick = SearchConfig::preset("quick").unwrap();
    let nb = quick.with_overlay(&json!({"space": "nb201", "model": {"layers": 3}})).unwrap();
    assert_eq!((nb.space(), nb.model.channels, nb.model.layers), (SpaceKind::Nb201, 8, 3));
    let s1 = SearchConfig::preset("gdas").unwrap().with_overlay(&json!({"space": "darts"})).unwrap();
    assert_eq!((s1.space(), s1.model.channels, s1.model.layers), (SpaceKind::Darts, 16, 8));
}
