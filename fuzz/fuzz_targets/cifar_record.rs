//! The CIFAR-10/100 binary record reader on arbitrary bytes: never a panic; on success every
//! record became one image of 3×32×32 bytes with a label inside the class range, and the bytes
//! were a whole number of records.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nas_core::data::{read_cifar_file, CifarKind, ImageSet};

fuzz_target!(|data: &[u8]| {
    for (kind, record) in [(CifarKind::Cifar10, 3073), (CifarKind::Cifar100, 3074)] {
        let mut set = ImageSet { pixels: Vec::new(), labels: Vec::new(), channels: 3, height: 32, width: 32 };
        if read_cifar_file(Path::new("fuzz.bin"), data, kind, &mut set).is_ok() {
            assert_eq!(data.len() % record, 0);
            assert_eq!(set.labels.len(), data.len() / record);
            assert_eq!(set.pixels.len(), set.labels.len() * 3072);
            assert!(set.labels.iter().all(|&l| (l as usize) < kind.classes()));
        }
    }
});
