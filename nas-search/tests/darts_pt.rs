//! DARTS-PT selection (`nas_search::select::pt`): the op projection against the reference's
//! formulas in PyTorch on a reduced NAS-Bench-201 supernet (fixture from
//! `fixtures/gen_pt_nb201_golden.py`), the op it must keep on a darts supernet built so that
//! one op per edge decides the prediction, the reference's schedule, and whole selections on
//! a finished quick search in both spaces, interrupted mid-epoch and resumed to the same end.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use nas_core::checkpoint::load_tensors;
use nas_core::metrics::{CollectSink, StopAfterStep};
use nas_core::testing::without_time;
use nas_search::run_dir::{CONFIG, GENOTYPE};
use nas_search::select::pt::{batch_accuracy, Schedule, PROJECTION_MODE};
use nas_search::select::{select_dir, Projection, PtSelect, Removal, SelectConfig, SelectMethod};
use nas_search::step::Batch;
use nas_search::{Error, RunDir, Search, SearchConfig};
use search_spaces::darts::{DartsSupernet, DartsSupernetConfig};
use search_spaces::nb201::{Nb201Config, Nb201Network};
use search_spaces::{ArchSample, Genotype, Supernet};
use serde_json::{json, Value};

fn fixture(name: &str) -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    load_tensors(&path, &Device::Cpu).expect("fixture").tensors
}

fn ints(t: &Tensor) -> Vec<usize> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as usize)
        .collect()
}

#[test]
fn nb201_op_projection_matches_the_reference() {
    let golden = fixture("pt_nb201_c4.safetensors");
    let cfg = Nb201Config { channels: 4, cells_per_stage: 1, ..Default::default() };
    let net = Nb201Network::search(cfg, 3, DType::F32, &Device::Cpu).unwrap();
    net.weights().load(&golden, false).unwrap();
    let alpha = HashMap::from([("arch_parameters".to_string(), golden["alpha"].clone())]);
    net.arch().load(&alpha, false).unwrap();
    let batches: Vec<Batch> = (0..2)
        .map(|i| Batch {
            x: golden[&format!("x{i}")].clone(),
            y: golden[&format!("y{i}")].to_dtype(DType::U32).unwrap(),
        })
        .collect();
    let mut proj = Projection::new(&net);
    // The labels are the supernet's own predictions: every one right before any projection.
    let w = proj.weights(&net, PROJECTION_MODE, Removal::None).unwrap();
    assert_eq!(batch_accuracy(&net, &w, &batches).unwrap(), (128, 128));

    let (order, counts, kept) = (ints(&golden["order"]), ints(&golden["counts"]), ints(&golden["kept"]));
    let mut eval = |w: &[Tensor]| batch_accuracy(&net, w, &batches);
    for (k, &edge) in order.iter().enumerate() {
        let d = proj.project_op(&net, 0, edge, &mut eval).unwrap();
        let got: Vec<usize> = d.candidates.iter().map(|(_, _, acc)| (acc * 128.0).round() as usize).collect();
        assert_eq!(got, counts[5 * k..5 * k + 5], "projection {k} (edge {edge}): correct counts without each op");
        assert_eq!(d.col, kept[k], "projection {k} (edge {edge})");
    }
    let ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"];
    let mut by_edge = [0; 6];
    for (k, &e) in order.iter().enumerate() {
        by_edge[e] = kept[k];
    }
    let want = format!(
        "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|",
        ops[by_edge[0]], ops[by_edge[1]], ops[by_edge[2]], ops[by_edge[3]], ops[by_edge[4]], ops[by_edge[5]]
    );
    assert_eq!(proj.genotype(&net).unwrap().to_json()["arch"], json!(want));
}

/// A darts supernet whose α gives one op per edge (not `none`, a different column on each
/// edge) nearly all the weight, labelled by its own predictions: removing that op changes the
/// edge's output, removing any other (weight ~3e-4) changes almost nothing.
#[test]
fn pt_keeps_the_op_each_edge_depends_on() {
    let cfg = DartsSupernetConfig { channels: 4, layers: 3, ..Default::default() };
    let net = DartsSupernet::new(cfg, 9, DType::F32, &Device::Cpu).unwrap();
    let names = net.edge_ops();
    let mut decisive = Vec::new();
    let mut alphas = HashMap::new();
    for (t, key) in ["alphas_normal", "alphas_reduce"].into_iter().enumerate() {
        let edges = names[t].len();
        let width = names[t][0].len();
        let cols: Vec<usize> = (0..edges).map(|e| 1 + (3 * e + 5 * t) % (width - 1)).collect();
        let mut a = vec![0f32; edges * width];
        for (e, &c) in cols.iter().enumerate() {
            assert_ne!(names[t][e][c], "none");
            a[e * width + c] = 8.0;
        }
        alphas.insert(key.to_string(), Tensor::from_vec(a, (edges, width), &Device::Cpu).unwrap());
        decisive.push(cols);
    }
    net.arch().load(&alphas, false).unwrap();
    let mut proj = Projection::new(&net);
    let batches: Vec<Batch> = (0..2)
        .map(|_| {
            let x = Tensor::randn(0f32, 1.0, (32, 3, 8, 8), &Device::Cpu).unwrap();
            let w = proj.weights(&net, PROJECTION_MODE, Removal::None).unwrap();
            let sample = ArchSample { weights: Some(w), chosen: None, add_unchosen: false };
            let y = net.forward_sampled(&x, PROJECTION_MODE, &sample).unwrap().argmax(1).unwrap();
            Batch { x, y }
        })
        .collect();
    let w = proj.weights(&net, PROJECTION_MODE, Removal::None).unwrap();
    assert_eq!(batch_accuracy(&net, &w, &batches).unwrap(), (64, 64));
    let mut eval = |w: &[Tensor]| batch_accuracy(&net, w, &batches);
    // Edges in an order of their own, alternating cell types as the run does.
    for k in 0..14 {
        for (t, cols) in decisive.iter().enumerate() {
            let e = (5 * k + 3 * t) % 14;
            let d = proj.project_op(&net, t, e, &mut eval).unwrap();
            assert_eq!(d.col, cols[e], "cell {t} edge {e}: {:?}", d.candidates);
            assert!(d.candidates.iter().all(|(c, name, _)| name != "none" && *c != 0), "none is no candidate");
        }
    }
    assert!(proj.undecided_edges(0).is_empty() && proj.undecided_edges(1).is_empty());
    for t in 0..2 {
        for node in proj.undecided_nodes(t) {
            let d = proj.project_node(&net, t, node, &mut eval).unwrap();
            assert_eq!(d.kept.len(), 2);
            assert_eq!(d.dropped.len(), node);
        }
        assert!(proj.undecided_nodes(t).is_empty());
    }
    // Every edge of the genotype carries its decisive op.
    let Genotype::Darts(g) = proj.genotype(&net).unwrap() else { panic!("a darts genotype") };
    for (t, cell) in [&g.normal, &g.reduce].into_iter().enumerate() {
        for (k, &(op, input)) in cell.iter().enumerate() {
            let node = k / 2;
            let e: usize = (0..node).map(|n| 2 + n).sum::<usize>() + input;
            assert_eq!(op.name(), names[t][e][decisive[t][e]], "cell {t} node {node} input {input}");
            let kept = proj.nodes[t][node].clone().unwrap_or_else(|| vec![0, 1]);
            assert!(kept.contains(&e), "cell {t}: edge {e} was dropped by its node");
        }
    }
    // Removed ops are zeroed, not renormalised; decided edges are one-hot.
    let w = proj.weights(&net, PROJECTION_MODE, Removal::Op { t: 0, edge: 0, col: 1 }).unwrap();
    let row = w[0].get(0).unwrap().to_vec1::<f32>().unwrap();
    let mut want = vec![0f32; row.len()];
    if decisive[0][0] != 1 {
        want[decisive[0][0]] = 1.0;
    }
    assert_eq!(row, want);
}

#[test]
fn the_schedule_is_the_references() {
    // darts: 14 op and 3 topology projections every 5 epochs, one more epoch after the last.
    let s = Schedule::new(14, 3, 5);
    assert_eq!(s.epochs, 81);
    let at: Vec<(usize, usize)> = (0..s.epochs).filter_map(|e| s.at(e).map(|k| (e, k))).collect();
    let want: Vec<(usize, usize)> = (0..17).map(|k| (5 * k, k)).collect();
    assert_eq!(at, want);
    // nb201: 6 op projections, the last at the last of 5·5 epochs.
    let s = Schedule::new(6, 0, 5);
    assert_eq!(s.epochs, 25);
    let at: Vec<usize> = (0..s.epochs).filter_map(|e| s.at(e)).collect();
    assert_eq!(at, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!((0..25).filter(|&e| s.at(e).is_some()).collect::<Vec<_>>(), vec![0, 5, 10, 15, 20, 24]);
    // Every projection happens also at an interval of 1.
    for (edges, nodes) in [(6, 0), (14, 3)] {
        let s = Schedule::new(edges, nodes, 1);
        assert_eq!((0..s.epochs).filter_map(|e| s.at(e)).collect::<Vec<_>>(), (0..edges + nodes).collect::<Vec<_>>());
    }
}

/// A finished one-epoch quick search of `space` in `dir` (darts: cells of 3 nodes).
fn search(dir: &Path, space: &str) -> SearchConfig {
    let model = match space {
        "nb201" => json!({"channels": 4, "layers": 1}),
        _ => json!({"channels": 4, "layers": 2, "steps": 3}),
    };
    let overlay = json!({
        "space": space, "epochs": 1, "seed": 3, "model": model,
        "data": {"subset": 32, "batch_size": 8, "image_size": 16},
    });
    let cfg = SearchConfig::preset("quick").unwrap().with_overlay(&overlay).unwrap();
    let run = RunDir::create(dir, false).unwrap();
    run.write_json(CONFIG, &cfg).unwrap();
    Search::new(cfg.clone().validate().unwrap())
        .unwrap()
        .run(Some(&run), &mut CollectSink::default(), &AtomicBool::new(false))
        .unwrap();
    cfg
}

fn select_config(source: &Path) -> SelectConfig {
    let overlay = json!({"pt": {"interval": 1, "eval_batches": 1}});
    SelectConfig::new(SelectMethod::Pt, source, &overlay).unwrap()
}

/// The selection of the search in `source` in `out`, stopped after `stop_at` (epoch, step)
/// when given and resumed.
fn select(source: &Path, out: &Path, stop_at: Option<(usize, usize)>) -> (Genotype, Vec<Value>) {
    let cfg = select_config(source);
    let dir = RunDir::create(out, false).unwrap();
    dir.write_json(CONFIG, &cfg).unwrap();
    let mut pt = PtSelect::new(cfg.clone().validate().unwrap()).unwrap();
    let never = AtomicBool::new(false);
    let genotype = match stop_at {
        None => pt.run(Some(&dir), &mut CollectSink::default(), &never).unwrap(),
        Some((epoch, step)) => {
            let stop = AtomicBool::new(false);
            let err = pt.run(Some(&dir), &mut StopAfterStep::new(epoch, step, &stop), &stop).unwrap_err();
            assert!(matches!(err, Error::Interrupted { .. }), "{err}");
            drop(pt);
            let saved: SelectConfig = dir.read_json(CONFIG).unwrap();
            assert_eq!(saved, cfg);
            let mut pt = PtSelect::new(saved.validate().unwrap()).unwrap();
            let at = pt.resume(&dir).unwrap();
            assert_eq!((at.epoch, at.step), (epoch, step));
            pt.run(Some(&dir), &mut CollectSink::default(), &never).unwrap()
        }
    };
    let written = Genotype::from_json_value(&dir.read_json::<Value>(GENOTYPE).unwrap()).unwrap();
    assert_eq!(written, genotype);
    (genotype, without_time(dir.read_metrics().unwrap()))
}

/// A selection of `projections` projections making `decisions` decisions.
fn select_resumes_exactly(space: &str, projections: usize, decisions: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("search");
    search(&source, space);
    let search_genotype: Value = RunDir::open(&source).unwrap().read_json(GENOTYPE).unwrap();
    let (ga, ma) = select(&source, &select_dir(&source, SelectMethod::Pt), None);
    // Interrupted mid-epoch, right after a projection's epoch began.
    let (gb, mb) = select(&source, &tmp.path().join("b"), Some((2, 1)));
    assert_eq!(ga, gb);
    assert_eq!(ma, mb);
    // The search's own files are kept.
    assert_eq!(RunDir::open(&source).unwrap().read_json::<Value>(GENOTYPE).unwrap(), search_genotype);
    // Every projection is in the records, and the records' last genotype is the result.
    let recorded: usize = ma.iter().filter_map(|r| r["pt"].as_array()).map(Vec::len).sum();
    assert_eq!(recorded, decisions);
    assert_eq!(ma.last().unwrap()["genotype"], ga.to_json());
    assert_eq!(ma.last().unwrap()["pt_decided"], json!(projections));
}

#[test]
fn a_darts_selection_resumes_to_the_same_genotype() {
    // Cells of 3 nodes: 9 edges, 2 nodes with a choice.
    select_resumes_exactly("darts", 11, 2 * 11);
}

#[test]
fn an_nb201_selection_resumes_to_the_same_genotype() {
    select_resumes_exactly("nb201", 6, 6);
}
