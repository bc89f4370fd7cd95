//! The ImageNet transforms against torchvision on PIL images (fixtures from
//! `tests/fixtures/gen_transform_golden.py`): `Resize(73)` + `CenterCrop(64)` and
//! `resized_crop` of fixed boxes to 64×64, on a PNG (exact decoding: the resampling alone) and
//! two JPEGs (the decoder too: libjpeg-turbo there, the `image` crate here).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use nas_core::data::transform::{CropBox, Rgb};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn decode(name: &str) -> image::RgbImage {
    image::open(fixtures().join(name)).unwrap().to_rgb8()
}

fn golden(t: &std::collections::HashMap<String, Tensor>, key: &str) -> Vec<u8> {
    t[key].flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

/// Mean and largest absolute difference in levels.
fn diff(a: &[u8], b: &[u8]) -> (f64, u8) {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y));
    let max = d.clone().max().unwrap_or(0);
    (d.map(f64::from).sum::<f64>() / a.len() as f64, max)
}

#[test]
fn transforms_match_torchvision() {
    let t = candle_core::safetensors::load(fixtures().join("transforms.safetensors"), &Device::Cpu).unwrap();
    for (k, name) in ["a.png", "b.jpg", "c.jpg"].into_iter().enumerate() {
        let decoded = decode(name);
        let img = Rgb { pixels: decoded.as_raw(), height: decoded.height() as usize, width: decoded.width() as usize };
        let eval = img.resize_centre_crop(64).unwrap();
        assert_eq!((eval.channels, eval.height, eval.width), (3, 64, 64));
        let b = t[&format!("box_{k}")].to_dtype(DType::I64).unwrap().to_vec1::<i64>().unwrap();
        let b = CropBox { top: b[0] as usize, left: b[1] as usize, height: b[2] as usize, width: b[3] as usize };
        let crop = img.resize_box(b, 64, 64).unwrap();
        for (what, got, key) in [("eval", &eval.data, "eval"), ("crop", &crop.data, "crop")] {
            let (mean, max) = diff(got, &golden(&t, &format!("{key}_{k}")));
            println!("{name} {what}: mean |Δ| {mean:.3} levels, max {max}");
            // Resampling alone: off by rounding; JPEG: the decoders' IDCT and chroma upsampling.
            let (mean_tol, max_tol) = if name.ends_with(".png") { (0.5, 2) } else { (0.75, 12) };
            assert!(mean <= mean_tol && max <= max_tol, "{name} {what}: mean {mean}, max {max}");
        }
    }
}
