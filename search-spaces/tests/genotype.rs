//! Genotypes: derivation from hand-made α (ties, `none` strongest), JSON round trip, the
//! published genotypes, validation errors, and the parameter counts of the derived networks.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use search_spaces::darts::{
    derive, rdarts_space, DartsGenotype, DartsOp, DartsOpSets, DartsSupernet, DartsSupernetConfig, DerivedNetwork,
    DerivedNetworkConfig, OpsConfig, PRIMITIVES,
};
use search_spaces::{Genotype, NetKind, Supernet};

use DartsOp::*;

/// The column of a primitive in the default α.
fn col(op: DartsOp) -> usize {
    PRIMITIVES.iter().position(|&o| o == op).unwrap()
}

/// A supernet (C=2, L=3, skip cap `max_skip_connect`) whose α are set by hand:
/// `(edge, op, value)` entries, zeros elsewhere.
fn with_alphas(
    normal: &[(usize, DartsOp, f32)],
    reduce: &[(usize, DartsOp, f32)],
    max_skip_connect: Option<usize>,
) -> DartsSupernet {
    let cfg = DartsSupernetConfig { channels: 2, layers: 3, max_skip_connect, ..Default::default() };
    let net = DartsSupernet::new(cfg, 0, DType::F32, &Device::Cpu).unwrap();
    let table = |entries: &[(usize, DartsOp, f32)]| {
        let mut v = vec![0f32; 14 * 8];
        for &(e, op, x) in entries {
            v[e * 8 + col(op)] = x;
        }
        Tensor::from_vec(v, (14, 8), &Device::Cpu).unwrap()
    };
    let m = HashMap::from([("alphas_normal".to_string(), table(normal)), ("alphas_reduce".to_string(), table(reduce))]);
    net.arch().load(&m, false).unwrap();
    net
}

#[test]
fn derivation_from_hand_made_alphas() {
    let normal = [
        // node 0: both edges kept, strongest first
        (0, SepConv3x3, 5.0),
        (1, MaxPool3x3, 3.0),
        // node 1: edges from node 0 (6) and c_{k-1} (4) beat the skip from c_{k-2}
        (2, SkipConnect, 2.0),
        (3, DilConv5x5, 4.0),
        (4, SepConv5x5, 6.0),
        // node 2: `none` dominates edges 5 and 8, so they lose to edge 6 and to the uniform
        // edge 7, whose op tie goes to the first non-none column (max_pool_3x3)
        (5, None, 10.0),
        (5, AvgPool3x3, 1.0),
        (6, SepConv3x3, 2.0),
        (8, None, 10.0),
        (8, SkipConnect, 1.5),
        // node 3: edges 10 and 12 tie exactly; the lower input comes first
        (10, DilConv3x3, 3.0),
        (12, DilConv3x3, 3.0),
    ];
    // Reduction cell: `none` strongest on both edges of node 0; they are still the only two.
    let reduce = [(0, None, 10.0), (0, SepConv3x3, 2.0), (1, None, 10.0), (1, SkipConnect, 1.0)];
    let g = with_alphas(&normal, &reduce, Option::None).genotype(Option::None).unwrap();
    assert_eq!(
        g.normal,
        vec![
            (SepConv3x3, 0),
            (MaxPool3x3, 1),
            (SepConv5x5, 2),
            (DilConv5x5, 1),
            (SepConv3x3, 1),
            (MaxPool3x3, 2),
            (DilConv3x3, 1),
            (DilConv3x3, 3),
        ]
    );
    assert_eq!(&g.reduce[..2], &[(SepConv3x3, 0), (SkipConnect, 1)]);
    assert_eq!(g.normal_concat, vec![2, 3, 4, 5]);
}

#[test]
fn skip_cap_replaces_the_weakest_skips() {
    let normal = [
        (0, SkipConnect, 5.0),
        (0, SepConv3x3, 1.0),
        (1, SkipConnect, 4.0),
        (1, DilConv3x3, 2.0),
        (2, SkipConnect, 3.0),
        (2, AvgPool3x3, 2.5),
    ];
    let net = with_alphas(&normal, &[], Option::None);
    let uncapped = net.genotype(Option::None).unwrap();
    assert_eq!(uncapped.normal.iter().filter(|(o, _)| *o == SkipConnect).count(), 3);
    let capped = net.genotype(Some(1)).unwrap();
    assert_eq!(&capped.normal[..2], &[(SkipConnect, 0), (DilConv3x3, 1)]);
    assert_eq!(capped.normal[2], (AvgPool3x3, 0));
    assert_eq!(capped.normal.iter().filter(|(o, _)| *o == SkipConnect).count(), 1);
    // Derivation helpers agree with the supernet path.
    let [wn, _] = net.op_weights().unwrap();
    assert_eq!(derive::derive_cell(&wn, &DartsOpSets::all(4).normal, 4), uncapped.normal);
    // The search reports the genotype through `Supernet`, which applies the configured cap.
    let configured = with_alphas(&normal, &[], Some(1));
    assert_eq!(Supernet::genotype(&configured).unwrap(), Genotype::Darts(capped));
    assert_eq!(Supernet::genotype(&net).unwrap(), Genotype::Darts(uncapped));
}

#[test]
fn json_round_trip_and_published_darts_v2() {
    // DARTS_V2 exactly as published in the DARTS repository's genotypes.py.
    let published = r#"{"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
        ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]], "normal_concat": [2, 3, 4, 5],
        "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1], ["max_pool_3x3", 0],
        ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]], "reduce_concat": [2, 3, 4, 5]}"#;
    let g = Genotype::from_json_str(published).unwrap();
    assert_eq!(g, Genotype::Darts(DartsGenotype::builtin("DARTS_V2").unwrap()));
    // The written form is the published one plus the space tag, field for field.
    let want = serde_json::json!({
        "space": "darts",
        "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
            ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
            ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
        "reduce_concat": [2, 3, 4, 5],
    });
    assert_eq!(g.to_json(), want);
    let text = g.to_json().to_string();
    assert_eq!(Genotype::from_json_str(&text).unwrap(), g);
    for name in DartsGenotype::builtin_names() {
        let g = Genotype::load(name).unwrap();
        assert_eq!(Genotype::from_json_str(&g.to_json().to_string()).unwrap(), g);
    }
}

#[test]
fn genotypes_load_from_files_and_run_directories() {
    let dir = tempfile::tempdir().unwrap();
    let g = Genotype::load("PC_DARTS").unwrap();
    std::fs::write(dir.path().join("genotype.json"), g.to_json().to_string()).unwrap();
    assert_eq!(Genotype::load(dir.path().join("genotype.json").to_str().unwrap()).unwrap(), g);
    assert_eq!(Genotype::load(dir.path().to_str().unwrap()).unwrap(), g, "a run directory's genotype.json");
    let empty = tempfile::tempdir().unwrap();
    let e = Genotype::load(empty.path().to_str().unwrap()).unwrap_err().to_string();
    assert!(e.contains("genotype.json") && e.contains("not a file, nor a built-in genotype"), "{e}");
}

#[test]
fn invalid_genotypes_are_named() {
    let cases = [
        (r#"{"normal": [["sep_conv_3x3", 0]"#, "malformed JSON"),
        (
            r#"{"normal": [["conv_9x9", 0], ["sep_conv_3x3", 1]], "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]]}"#,
            "unknown op `conv_9x9`",
        ),
        (
            r#"{"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 2]], "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]]}"#,
            "may not point forward",
        ),
        (r#"{"normal": [["sep_conv_3x3", 0]], "reduce": [["max_pool_3x3", 0]]}"#, "2 edges per intermediate node"),
        (
            r#"{"normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1]], "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1]], "normal_concat": [2, 7]}"#,
            "out of range",
        ),
        (r#"{"space": "nb999", "arch": "x"}"#, "unknown space"),
        (
            r#"{"normal": [["sep_conv_3x3", "a"], ["sep_conv_3x3", 1]], "reduce": []}"#,
            "expected [\"op_name\", input_index]",
        ),
        (r#"{"normal": [], "reduce": [], "extra": 1}"#, "unknown field `extra`"),
        (r#"[1, 2]"#, "expected a JSON object"),
    ];
    for (json, want) in cases {
        let e = Genotype::from_json_str(json).unwrap_err().to_string();
        assert!(e.contains(want), "{json}: got `{e}`, want `{want}`");
    }
    let e = Genotype::load("/no/such/genotype.json").unwrap_err().to_string();
    assert!(e.contains("/no/such/genotype.json") && e.contains("DARTS_V2"), "{e}");
}

/// The published model sizes at C=36, L=20 without the auxiliary head (DARTS: 3.3M,
/// PC-DARTS: 3.6M, P-DARTS: 3.4M), as counted by shared/bench/darts_ref.py `--params-only`.
#[test]
fn parameter_counts_match_the_reference() {
    for (name, want) in
        [("DARTS_V1", 3_169_414), ("DARTS_V2", 3_349_342), ("PC_DARTS", 3_634_678), ("PDARTS", 3_433_798)]
    {
        let g = DartsGenotype::builtin(name).unwrap();
        let cfg = DerivedNetworkConfig {
            channels: 36,
            layers: 20,
            num_classes: 10,
            auxiliary: true,
            in_channels: 3,
            net: NetKind::Cifar,
        };
        let net = DerivedNetwork::new(&g, cfg, 0, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.num_params_without_aux(), want, "{name}");
    }
}

/// A C=2, L=3 supernet over the op sets `ops` with α (normal and reduce alike) given row by row.
fn with_op_sets(ops: OpsConfig, rows: &[Vec<f32>]) -> DartsSupernet {
    let cfg = DartsSupernetConfig { channels: 2, layers: 3, ops: Some(ops), ..Default::default() };
    let net = DartsSupernet::new(cfg, 0, DType::F32, &Device::Cpu).unwrap();
    let width = rows[0].len();
    let t = Tensor::from_vec(rows.concat(), (rows.len(), width), &Device::Cpu).unwrap();
    let m = HashMap::from([("alphas_normal".to_string(), t.clone()), ("alphas_reduce".to_string(), t)]);
    net.arch().load(&m, false).unwrap();
    net
}

#[test]
fn derivation_over_an_op_set_with_none() {
    // S3: none, skip_connect, sep_conv_3x3. Every edge's none is strongest; the edges rank by
    // their best other op, and on each the best other op wins.
    let s3 = rdarts_space("s3").unwrap().to_config();
    let rows: Vec<Vec<f32>> = (0..14).map(|e| vec![5.0, (e % 3) as f32, 1.0]).collect();
    let net = with_op_sets(s3, &rows);
    assert_eq!(net.arch().get("alphas_normal").unwrap().dims(), [14, 3]);
    let g = net.genotype(Option::None).unwrap();
    // Edge strengths e % 3 vs 1: node 0 (edges 0, 1): skip 0 / sep 1 on edge 0 → sep wins; on
    // edge 1 skip and sep tie at 1, the lower column (skip) wins.
    assert_eq!(&g.normal[..2], &[(SepConv3x3, 0), (SkipConnect, 1)]);
    for (op, _) in g.normal.iter().chain(&g.reduce) {
        assert!([SkipConnect, SepConv3x3].contains(op), "{op}");
    }
}

#[test]
fn derivation_over_per_edge_sets_of_different_sizes() {
    // Edge e offers [skip] plus sep_conv_3x3 on even edges: α is 14 × 2, and on odd edges the
    // second column is padding that softmax weights zero whatever its value.
    let lists: Vec<Vec<String>> =
        (0..14)
            .map(|e| {
                if e % 2 == 0 {
                    vec!["sep_conv_3x3".into(), "skip_connect".into()]
                } else {
                    vec!["skip_connect".into()]
                }
            })
            .collect();
    let ops = OpsConfig::PerEdge { normal: lists.clone(), reduce: lists };
    let rows: Vec<Vec<f32>> = (0..14).map(|_| vec![0.0, 9.0]).collect();
    let net = with_op_sets(ops, &rows);
    let [wn, _] = net.op_weights().unwrap();
    assert_eq!(wn[1], [1.0]);
    assert_eq!(wn[0].len(), 2);
    assert!((wn[0][0] - 1.0 / (1.0 + 9f32.exp())).abs() < 1e-6, "{:?}", wn[0]);
    // Even edges hold [skip, sep] in DARTS order, sep winning with ≈1 − e⁻⁹; odd edges' lone
    // skip has weight exactly 1 and outranks them.
    let g = net.genotype(Option::None).unwrap();
    let want = [(1, SkipConnect), (0, SepConv3x3), (1, SkipConnect), (0, SepConv3x3)];
    assert_eq!(g.normal[..4], want.map(|(j, o)| (o, j)));
    assert_eq!(g.normal[4..], [(SkipConnect, 0), (SkipConnect, 2), (SkipConnect, 0), (SkipConnect, 2)]);
    let json = net.arch_json().unwrap();
    assert_eq!(json["alphas_normal"][1].as_array().unwrap().len(), 1);
    assert_eq!(json["alphas_normal_ops"][0], serde_json::json!(["skip_connect", "sep_conv_3x3"]));
    // The forward pass runs over the ragged sets.
    let x = Tensor::zeros((2, 3, 8, 8), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(net.forward(&x, nas_core::nn::Mode::EVAL).unwrap().dims(), [2, 10]);
}
