//! The restricted pickle reader and the CIFAR python-batch reader on arbitrary bytes: never a
//! panic, never an allocation beyond what the bytes hold; on success the batch became
//! 3×32×32-byte images with labels inside the class range.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nas_core::data::{pickle, read_cifar_meta, read_cifar_pickle, CifarKind, ImageSet};

fuzz_target!(|data: &[u8]| {
    let _ = pickle::read(data);
    for kind in [CifarKind::Cifar10, CifarKind::Cifar100] {
        let mut set = ImageSet { pixels: Vec::new(), labels: Vec::new(), channels: 3, height: 32, width: 32 };
        if read_cifar_pickle(Path::new("fuzz"), data, kind, &mut set).is_ok() {
            assert!(!set.labels.is_empty());
            assert_eq!(set.pixels.len(), set.labels.len() * 3072);
            assert!(set.labels.iter().all(|&l| (l as usize) < kind.classes()));
        }
        if let Ok(names) = read_cifar_meta(Path::new("fuzz"), data, kind) {
            assert_eq!(names.len(), kind.classes());
        }
    }
});
