//! CIFAR in every form PyTorch users have it (tests/fixtures/gen_cifar_python.py writes the
//! same images as the python version's pickles, checked there with Python's own `pickle` and
//! numpy, and as the binary version): the binary and python folders, torchvision's root
//! holding them, the downloaded archives and a folder holding only archives all read to the
//! same images, labels and class names; bad pickles are one error naming the file.

use std::path::{Path, PathBuf};

use nas_core::data::{DataSpec, Dataset, LoadOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar")
}

fn load(spec: DataSpec) -> Dataset {
    Dataset::load(&spec, &LoadOptions { with_test: true, ..Default::default() })
        .unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

/// Pixels and labels of the training and test images.
fn content(d: &Dataset) -> (Vec<u8>, Vec<u32>, Vec<u8>, Vec<u32>) {
    let train = d.train.in_memory().unwrap();
    let test = d.test.as_ref().unwrap().in_memory().unwrap();
    (train.pixels.clone(), train.labels.clone(), test.pixels.clone(), test.labels.clone())
}

const CIFAR10: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

#[test]
fn every_form_of_cifar10_reads_the_same_images() {
    let f = fixtures();
    let binary = load(DataSpec::Cifar10(f.join("cifar-10-batches-bin")));
    let want = content(&binary);
    assert_eq!((want.1.len(), want.3.len()), (5, 2));
    assert_eq!(want.0.len(), 5 * 3072);
    for spec in [
        f.join("cifar-10-batches-py"),
        f.clone(),
        f.join("archives/cifar-10-python.tar.gz"),
        f.join("archives/cifar-10-binary.tar.gz"),
        f.join("archives"),
    ] {
        let d = load(DataSpec::Cifar10(spec.clone()));
        assert_eq!(content(&d), want, "{}", spec.display());
        assert_eq!(d.class_names, CIFAR10, "{}", spec.display());
        assert_eq!((d.name.as_str(), d.num_classes), ("cifar10", 10));
    }
}

#[test]
fn cifar100_python_folder_and_archive_read_fine_labels_and_names() {
    let f = fixtures();
    let folder = load(DataSpec::Cifar100(f.join("cifar-100-python")));
    let archive = load(DataSpec::Cifar100(f.join("archives/cifar-100-python.tar.gz")));
    assert_eq!(content(&folder), content(&archive));
    let (_, labels, _, test) = content(&folder);
    assert_eq!((labels.len(), test.len()), (3, 2));
    assert!(labels.iter().chain(&test).all(|&l| l < 100));
    // The coarse labels (fine / 5 in the fixture) are not what was read.
    assert!(labels.iter().any(|&l| l >= 20), "{labels:?}");
    assert_eq!(folder.class_names.len(), 100);
    assert_eq!(folder.class_names[42], "class_42");
    assert_eq!(archive.class_names, folder.class_names);
}

#[test]
fn a_bad_pickle_or_a_folder_without_cifar_is_one_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-py");
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(fixtures().join("cifar-10-batches-py/data_batch_1")).unwrap();
    let load = |dir: &Path| Dataset::load(&DataSpec::Cifar10(dir.to_path_buf()), &LoadOptions::default());

    // A global that is not numpy's array constructor.
    let mut evil = good.clone();
    let at = evil.windows(21).position(|w| w == b"numpy.core.multiarray").unwrap();
    evil.splice(at..at + 21, b"subprocess.os".iter().copied());
    std::fs::write(dir.join("data_batch_1"), &evil).unwrap();
    let e = load(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1") && e.contains("`subprocess.os._reconstruct`"), "{e}");

    // Truncated.
    std::fs::write(dir.join("data_batch_1"), &good[..good.len() / 2]).unwrap();
    let e = load(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1") && e.contains("truncated"), "{e}");

    // Nothing of CIFAR.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = load(&empty).unwrap_err().to_string();
    assert!(e.contains("cifar-10-python.tar.gz") && e.contains("data_batch_*.bin"), "{e}");

    // A file that is not an archive, and an archive that is not gzip.
    let not = tmp.path().join("notes.txt");
    std::fs::write(&not, b"hello").unwrap();
    assert!(load(&not).unwrap_err().to_string().contains("not a .tar"));
    let fake = tmp.path().join("cifar-10-python.tar.gz");
    std::fs::write(&fake, b"not gzip at all").unwrap();
    let e = load(&fake).unwrap_err().to_string();
    assert!(e.contains("cifar-10-python.tar.gz") && e.contains("tar archive"), "{e}");
}

/// `--image-size` on data that comes at 32×32: CIFAR's images are resized (antialiased
/// bilinear; a constant image stays constant, the mean brightness nearly so), the synthetic
/// images drawn at the side (at 32 the very images of the default).
#[test]
fn image_size_resizes_cifar_and_draws_synthetic_at_the_side() {
    let at = |spec: DataSpec, side: usize| {
        Dataset::load(&spec, &LoadOptions { with_test: true, image_size: side, subset: Some(20), ..Default::default() })
            .unwrap()
    };
    let spec = DataSpec::Cifar10(fixtures().join("cifar-10-batches-py"));
    let (small, same) = (at(spec.clone(), 16), at(spec.clone(), 32));
    assert_eq!(content(&same), content(&load(spec)));
    assert_eq!(small.train.shape(), (3, 16, 16));
    assert_eq!(small.test.as_ref().unwrap().shape(), (3, 16, 16));
    let (s, f) = (small.train.in_memory().unwrap(), same.train.in_memory().unwrap());
    assert_eq!(s.labels, f.labels);
    let mean = |p: &[u8]| p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
    for i in 0..s.len() {
        assert!((mean(s.image(i)) - mean(f.image(i))).abs() < 2.0, "image {i}");
    }
    let flat =
        nas_core::data::ImageSet { pixels: vec![77; 3 * 32 * 32], labels: vec![0], channels: 3, height: 32, width: 32 };
    assert!(flat.resized(24).unwrap().pixels.iter().all(|&v| v == 77));

    let (s32, s48) = (at(DataSpec::Synthetic, 32), at(DataSpec::Synthetic, 48));
    assert_eq!(content(&s32), content(&nas_core::data::synthetic(0, 20, 2000)));
    assert_eq!(s48.train.shape(), (3, 48, 48));
    assert_eq!(s48.train.in_memory().unwrap().labels, s32.train.in_memory().unwrap().labels);
}
