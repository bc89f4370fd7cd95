//! A search in each R-DARTS space S1–S4 runs end to end (one tiny epoch with α updates) and
//! its genotype takes every op from the chosen edge's set of that space.

use std::sync::atomic::AtomicBool;

use nas_core::metrics::CollectSink;
use nas_search::{Search, SearchConfig};
use search_spaces::darts::{edges::edge_index, rdarts_space};
use search_spaces::Genotype;

#[test]
fn every_rdarts_space_searches_within_its_op_sets() {
    for name in ["s1", "s2", "s3", "s4"] {
        let sets = rdarts_space(name).unwrap();
        let mut c = SearchConfig::preset("quick").unwrap();
        c.epochs = 1;
        c.data.subset = Some(32);
        c.data.batch_size = 8;
        c.model.channels = 4;
        c.model.layers = 3;
        c.model.darts_mut().unwrap().ops = Some(sets.to_config());
        let mut search = Search::new(c.validate().unwrap()).unwrap();
        let g = search.run(None, &mut CollectSink::default(), &AtomicBool::new(false)).unwrap();
        let Genotype::Darts(g) = g else { panic!("a darts genotype") };
        for (cell, lists) in [(&g.normal, &sets.normal), (&g.reduce, &sets.reduce)] {
            for (p, &(op, input)) in cell.iter().enumerate() {
                let e = edge_index(p / 2, input);
                assert!(lists[e].contains(&op) && op.name() != "none", "{name}: {op} on edge {e}, set {:?}", lists[e]);
            }
        }
    }
}
