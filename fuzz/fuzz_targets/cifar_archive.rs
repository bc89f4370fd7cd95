//! Finding CIFAR in an arbitrary file given as `cifar10:FILE.tar.gz` / `.tar`: the gzip and
//! tar readers and the member selection never panic, and on success every image came out
//! whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nas_core::data::{CifarFiles, CifarKind, ImageSet};

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("nas-fuzz-archive-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    for name in ["cifar-10-python.tar.gz", "cifar.tar"] {
        let path = dir.join(name);
        if std::fs::write(&path, data).is_err() {
            return;
        }
        for kind in [CifarKind::Cifar10, CifarKind::Cifar100] {
            if let Ok(files) = CifarFiles::find(&path, kind, false) {
                let mut set = ImageSet { pixels: Vec::new(), labels: Vec::new(), channels: 3, height: 32, width: 32 };
                for (p, bytes) in &files.train {
                    if files.read(p, bytes, kind, &mut set).is_err() {
                        break;
                    }
                }
                assert_eq!(set.pixels.len(), set.labels.len() * 3072);
            }
        }
    }
});
