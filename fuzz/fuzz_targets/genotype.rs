//! The genotype parsers on arbitrary input: genotype.json text (both spaces) and NAS-Bench-201
//! arch strings. Parsing must never panic; whatever parses must validate, serialise and parse
//! back to the same genotype.
#![no_main]

use libfuzzer_sys::fuzz_target;
use search_spaces::nb201::Nb201Genotype;
use search_spaces::Genotype;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(g) = Genotype::from_json_str(text) {
        if let Genotype::Darts(d) = &g {
            assert!(d.validate().is_ok(), "parsed but invalid: {text}");
        }
        let again = Genotype::from_json_str(&g.to_json().to_string()).expect("round trip");
        assert_eq!(again, g);
    }
    if let Ok(g) = Nb201Genotype::parse(text) {
        assert_eq!(Nb201Genotype::parse(&g.arch_string()).expect("round trip"), g);
    }
});
