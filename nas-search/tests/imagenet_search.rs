//! A search with PC-DARTS' ImageNet stems (`model.net` imagenet) runs end to end on 32×32
//! images (the smallest side its five halvings take: the last cells see 1×1 maps), and image
//! sizes the stems and reductions cannot halve evenly are refused before the supernet is built.

use std::sync::atomic::AtomicBool;

use nas_core::metrics::CollectSink;
use nas_search::{Search, SearchConfig};
use search_spaces::{Genotype, NetKind};

fn imagenet_search() -> SearchConfig {
    let mut c = SearchConfig::preset("quick").unwrap();
    c.epochs = 1;
    c.data.subset = Some(16);
    c.data.batch_size = 4;
    c.model.channels = 4;
    c.model.layers = 3;
    c.model.darts_mut().unwrap().partial_channels = 2;
    c.model.darts_mut().unwrap().edge_norm = true;
    c.model.darts_mut().unwrap().net = NetKind::ImageNet;
    c
}

#[test]
fn an_imagenet_stem_search_runs_end_to_end() {
    let mut search = Search::new(imagenet_search().validate().unwrap()).unwrap();
    assert!(search.net().weights().params().iter().any(|p| p.name == "stem1.1.weight"));
    let g = search.run(None, &mut CollectSink::default(), &AtomicBool::new(false)).unwrap();
    assert!(matches!(g, Genotype::Darts(_)), "{g}");
}

#[test]
fn image_sides_must_halve_five_times() {
    let c = imagenet_search().validate().unwrap();
    c.check_input_size(32, 32).unwrap();
    c.check_input_size(224, 224).unwrap();
    let e = c.check_input_size(48, 48).unwrap_err().to_string();
    assert!(e.contains("divisible by 32") && e.contains("48x48"), "{e}");
    let mut cifar = imagenet_search();
    cifar.model.darts_mut().unwrap().net = NetKind::Cifar;
    cifar.validate().unwrap().check_input_size(48, 48).unwrap();
}
