//! Per-channel normalisation: the mean and (population) standard deviation of the training
//! pixels scaled to [0, 1], as torchvision's `Normalize(mean, std)` is fed in DARTS, checked
//! against closed forms on small images with known values; the test split never enters it,
//! and CIFAR uses DARTS' published constants whatever the images.

use std::path::Path;

use nas_core::data::{synthetic, DataSpec, Dataset, ImageSet, LoadOptions};

/// Mean and population standard deviation of `values` / 255, two-pass in f64.
fn closed_form(values: &[u8]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| v as f64 / 255.0).sum::<f64>() / n;
    let var = values.iter().map(|&v| (v as f64 / 255.0 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn assert_stats(got: &nas_core::data::Normalize, want: &[(f64, f64)], what: &str) {
    assert_eq!(got.mean.len(), want.len(), "{what}");
    assert_eq!(got.std.len(), want.len(), "{what}");
    for (ch, &(m, s)) in want.iter().enumerate() {
        assert!((got.mean[ch] as f64 - m).abs() < 1e-6, "{what} channel {ch}: mean {} vs {m}", got.mean[ch]);
        assert!((got.std[ch] as f64 - s).abs() < 1e-6, "{what} channel {ch}: std {} vs {s}", got.std[ch]);
    }
}

/// Two 3×2×2 images. Channel 0 is half 0, half 255: mean ½, std ½. Channel 1 is 51, 102, 153,
/// 204 (0.2 … 0.8) in each image: mean ½, std √0.05. Channel 2 differs between the images.
#[test]
fn channel_stats_are_the_closed_form() {
    let img_a = [0u8, 255, 0, 255, 51, 102, 153, 204, 7, 13, 250, 99];
    let img_b = [255u8, 0, 255, 0, 204, 153, 102, 51, 180, 0, 42, 128];
    let set = ImageSet { pixels: [img_a, img_b].concat(), labels: vec![0, 1], channels: 3, height: 2, width: 2 };
    let ch2: Vec<u8> = img_a[8..].iter().chain(&img_b[8..]).copied().collect();
    assert_stats(&set.channel_stats(), &[(0.5, 0.5), (0.5, 0.05f64.sqrt()), closed_form(&ch2)], "hand-made");
}

fn write_png(path: &Path, side: u32, pixel: impl Fn(u32, u32) -> [u8; 3]) {
    let img = image::RgbImage::from_fn(side, side, |x, y| image::Rgb(pixel(x, y)));
    img.save(path).unwrap();
}

/// A folder dataset's normalisation is the closed form over its training images only: the
/// test images (white and black, far from the training statistics) change nothing.
#[test]
fn folder_normalisation_comes_from_the_training_images() {
    let tmp = tempfile::tempdir().unwrap();
    let side = 4u32;
    // Images at the loader's size, so no resampling changes the pixel values.
    let cat = |x: u32, y: u32| [(10 * x + 40 * y) as u8, 200, 60];
    let dog = |x: u32, y: u32| [(200 - 3 * x * y) as u8, 10, (160 + x) as u8];
    for class in ["cat", "dog"] {
        std::fs::create_dir_all(tmp.path().join("train").join(class)).unwrap();
        std::fs::create_dir_all(tmp.path().join("test").join(class)).unwrap();
    }
    write_png(&tmp.path().join("train/cat/a.png"), side, cat);
    write_png(&tmp.path().join("train/dog/a.png"), side, dog);
    write_png(&tmp.path().join("test/cat/a.png"), side, |_, _| [255, 255, 255]);
    write_png(&tmp.path().join("test/dog/a.png"), side, |_, _| [0, 0, 0]);

    let mut planes = vec![Vec::new(); 3];
    for f in [&cat as &dyn Fn(u32, u32) -> [u8; 3], &dog] {
        for y in 0..side {
            for x in 0..side {
                for (ch, v) in f(x, y).into_iter().enumerate() {
                    planes[ch].push(v);
                }
            }
        }
    }
    let want: Vec<(f64, f64)> = planes.iter().map(|p| closed_form(p)).collect();
    // Channel 1 is 200 on one image and 10 on the other: mean 105/255, std 95/255.
    assert!((want[1].0 - 105.0 / 255.0).abs() < 1e-12 && (want[1].1 - 95.0 / 255.0).abs() < 1e-12);

    let spec = DataSpec::Folder(tmp.path().to_path_buf());
    for with_test in [false, true] {
        let opts = LoadOptions { with_test, image_size: side as usize, ..Default::default() };
        let ds = Dataset::load(&spec, &opts).unwrap();
        assert_eq!(ds.test.is_some(), with_test);
        assert_stats(&ds.normalize, &want, &format!("folder, with_test = {with_test}"));
    }
}

/// The synthetic dataset normalises by its training images, not by its test images.
#[test]
fn synthetic_normalisation_comes_from_the_training_images() {
    let ds = synthetic(5, 30, 30);
    let (train, test) = (ds.train.in_memory().unwrap(), ds.test.as_ref().and_then(|t| t.in_memory()).unwrap());
    let hw = train.height * train.width;
    let plane = |set: &ImageSet, ch: usize| -> Vec<u8> {
        (0..set.len()).flat_map(|i| set.image(i)[ch * hw..(ch + 1) * hw].to_vec()).collect()
    };
    let want: Vec<(f64, f64)> = (0..3).map(|ch| closed_form(&plane(train, ch))).collect();
    assert_stats(&ds.normalize, &want, "synthetic");
    // The test split's statistics differ, so the check above could tell them apart.
    let test_stats: Vec<(f64, f64)> = (0..3).map(|ch| closed_form(&plane(test, ch))).collect();
    assert!(want.iter().zip(&test_stats).any(|(a, b)| (a.0 - b.0).abs() > 1e-4), "{want:?} {test_stats:?}");
}

/// CIFAR uses the constants of DARTS' utils.py (`CIFAR_MEAN`, `CIFAR_STD`), not statistics of
/// the files given: two black records still normalise with them.
#[test]
fn cifar10_uses_the_published_constants() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = Vec::new();
    for label in [1u8, 2] {
        rec.push(label);
        rec.extend(std::iter::repeat_n(0u8, 3 * 32 * 32));
    }
    std::fs::write(tmp.path().join("data_batch_1.bin"), &rec).unwrap();
    let ds = Dataset::load(&DataSpec::Cifar10(tmp.path().to_path_buf()), &LoadOptions::default()).unwrap();
    let want = [(0.49139968, 0.24703233), (0.48215827, 0.24348505), (0.44653124, 0.26158768)];
    assert_stats(&ds.normalize, &want, "cifar10");
}
