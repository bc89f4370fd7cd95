//! Image-folder datasets (`folder:DIR`), laid out like torchvision's `ImageFolder`:
//! DIR/train/<class>/<image> and DIR/test/<class>/<image>. The classes are the sub-folders of
//! DIR/train in name order; the test split must use the same class names (it may lack some).
//! Any format the `image` crate reads (PNG, JPEG, BMP, GIF) at any size: every image is decoded
//! to RGB and resized to `size`×`size` (bilinear), in parallel. Hidden files (".…") are
//! skipped; anything else that does not decode is an error naming the file, as is an empty
//! class folder or a missing split.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::imageops::FilterType;
use rayon::prelude::*;

use super::{Dataset, ImageSet};
use crate::config_error::{brief, ConfigError};
use crate::error::{Error, Result};

fn visible_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io(dir, e))?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The class folders of a split, by name.
fn class_dirs(split: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !split.is_dir() {
        return Err(Error::data(
            split,
            "no such directory (folder datasets need DIR/train/<class>/ and DIR/test/<class>/)",
        ));
    }
    let mut classes = Vec::new();
    for p in visible_entries(split)? {
        if p.is_dir() {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            classes.push((name, p));
        } else {
            return Err(Error::data(&p, "expected only class folders here, found a file"));
        }
    }
    if classes.is_empty() {
        return Err(Error::data(split, "no class folders"));
    }
    Ok(classes)
}

/// Decodes one image file to RGB `size`×`size`, channel-major.
pub fn decode_image(path: &Path, bytes: &[u8], size: usize) -> Result<Vec<u8>> {
    let img = image::load_from_memory(bytes).map_err(|e| Error::data(path, format!("not a readable image: {e}")))?;
    let rgb = if img.width() as usize == size && img.height() as usize == size {
        img.to_rgb8()
    } else {
        img.resize_exact(size as u32, size as u32, FilterType::Triangle).to_rgb8()
    };
    let hw = size * size;
    let mut chw = vec![0u8; 3 * hw];
    for (i, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            chw[c * hw + i] = px.0[c];
        }
    }
    Ok(chw)
}

/// Reads one split; `classes` fixes the label of each class name.
fn read_split(split: &Path, classes: &[String], size: usize) -> Result<ImageSet> {
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (name, dir) in class_dirs(split)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(Error::data(&dir, format!("class `{name}` does not exist in the training split")));
        };
        let images = visible_entries(&dir)?;
        if images.is_empty() {
            return Err(Error::data(&dir, format!("class folder `{name}` has no images")));
        }
        for p in images {
            if p.is_dir() {
                return Err(Error::data(&p, "nested folders are not supported inside a class folder"));
            }
            files.push((p, label as u32));
        }
    }
    let decoded: Vec<Vec<u8>> = files
        .par_iter()
        .map(|(p, _)| {
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            decode_image(p, &bytes, size)
        })
        .collect::<Result<_>>()?;
    Ok(ImageSet {
        pixels: decoded.concat(),
        labels: files.iter().map(|(_, l)| *l).collect(),
        channels: 3,
        height: size,
        width: size,
    })
}

/// The largest side images are resized to (8192² RGB is 200 MB per image already; beyond
/// it the sizes overflow the image library's u32).
pub const MAX_IMAGE_SIZE: usize = 8192;

pub(super) fn load(dir: &Path, size: usize, with_test: bool) -> Result<Dataset> {
    if size == 0 {
        return Err(ConfigError::new(format!("{} must be positive", brief("data.image_size"))).into());
    }
    if size > MAX_IMAGE_SIZE {
        return Err(ConfigError::new(format!(
            "{} {size} is too large: images are resized to at most {MAX_IMAGE_SIZE}x{MAX_IMAGE_SIZE}",
            brief("data.image_size")
        ))
        .into());
    }
    if !dir.is_dir() {
        return Err(Error::data(dir, "no such directory"));
    }
    let classes: Vec<String> = class_dirs(&dir.join("train"))?.into_iter().map(|(n, _)| n).collect();
    let train = read_split(&dir.join("train"), &classes, size)?;
    let test = if with_test { Some(Arc::new(read_split(&dir.join("test"), &classes, size)?)) } else { None };
    let normalize = train.channel_stats();
    Ok(Dataset {
        name: format!("folder:{}", dir.display()),
        num_classes: classes.len(),
        train: Arc::new(train),
        test,
        normalize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
        img.save(path).unwrap();
    }

    fn tree(root: &Path) {
        for split in ["train", "test"] {
            for (class, colour) in [("cat", [200u8, 10, 10]), ("dog", [10, 200, 10])] {
                let d = root.join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                write_png(&d.join("a.png"), 40, 20, colour);
                write_png(&d.join("b.png"), 8, 8, colour);
            }
        }
    }

    #[test]
    fn reads_resizes_and_labels_by_folder_name() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        std::fs::write(tmp.path().join("train/cat/.DS_Store"), b"junk").unwrap();
        let ds = load(tmp.path(), 16, true).unwrap();
        assert_eq!(ds.num_classes, 2);
        assert_eq!(ds.train.labels, vec![0, 0, 1, 1]);
        assert_eq!((ds.train.channels, ds.train.height, ds.train.width), (3, 16, 16));
        assert_eq!(ds.test.as_ref().unwrap().len(), 4);
        // A uniform image stays uniform when resized: red plane 200, green 10 for a cat.
        let img = ds.train.image(0);
        assert!(img[..256].iter().all(|&v| v == 200) && img[256..512].iter().all(|&v| v == 10));
    }

    #[test]
    fn bad_folders_name_the_problem() {
        let tmp = tempfile::tempdir().unwrap();
        tree(tmp.path());
        std::fs::write(tmp.path().join("train/dog/broken.jpg"), b"definitely not a jpeg").unwrap();
        let e = load(tmp.path(), 16, true).unwrap_err().to_string();
        assert!(e.contains("broken.jpg") && e.contains("not a readable image"), "{e}");

        std::fs::remove_file(tmp.path().join("train/dog/broken.jpg")).unwrap();
        std::fs::create_dir_all(tmp.path().join("train/bird")).unwrap();
        let e = load(tmp.path(), 16, true).unwrap_err().to_string();
        assert!(e.contains("bird") && e.contains("has no images"), "{e}");

        std::fs::remove_dir(tmp.path().join("train/bird")).unwrap();
        std::fs::create_dir_all(tmp.path().join("test/fish")).unwrap();
        write_png(&tmp.path().join("test/fish/x.png"), 4, 4, [0, 0, 0]);
        let e = load(tmp.path(), 16, true).unwrap_err().to_string();
        assert!(e.contains("class `fish` does not exist"), "{e}");

        let e = load(&tmp.path().join("nope"), 16, true).unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
    }
}
