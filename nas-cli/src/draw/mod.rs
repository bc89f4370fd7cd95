//! Pictures: cells of a genotype (`nas show --format dot|svg|png`) and the curves of a run
//! (`nas plot`), drawn with plotters to SVG or PNG. Text uses DejaVu Sans, embedded in the
//! binary (assets/, Bitstream Vera licence), so pictures look the same on machines without
//! fonts. PNGs are rendered into memory and encoded with the `image` crate.

pub mod bilevel;
pub mod cell;
mod curve_plot;
pub mod curves;

use std::io::Cursor;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;

/// The font every picture uses, registered once as "sans-serif".
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
pub const SANS: &str = "sans-serif";

fn register_font() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(SANS, FontStyle::Normal, FONT)
            .map_err(|_| anyhow!("the embedded font cannot be read"));
    });
    result
}

/// Picture file formats.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Svg,
    Png,
}

impl ImageFormat {
    /// The format a file name asks for by its extension.
    pub fn of_path(path: &Path) -> anyhow::Result<Self> {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("svg") => Ok(ImageFormat::Svg),
            Some("png") => Ok(ImageFormat::Png),
            _ => bail!("{}: cannot tell the picture format (use a .png or .svg file name)", path.display()),
        }
    }
}

/// The error type of drawing on backend `DB`.
pub type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Something that draws itself on any plotters backend.
pub trait Picture {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// The picture as an SVG document or PNG file.
pub fn render(picture: &impl Picture, format: ImageFormat) -> anyhow::Result<Vec<u8>> {
    register_font()?;
    let (w, h) = picture.size();
    let failed = |e: &dyn std::fmt::Display| anyhow!("cannot draw the picture: {e}");
    match format {
        ImageFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
                root.fill(&WHITE).map_err(|e| failed(&e))?;
                picture.draw(&root).map_err(|e| failed(&e))?;
                root.present().map_err(|e| failed(&e))?;
            }
            Ok(svg.into_bytes())
        }
        ImageFormat::Png => {
            let mut rgb = vec![255u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
                root.fill(&WHITE).map_err(|e| failed(&e))?;
                picture.draw(&root).map_err(|e| failed(&e))?;
                root.present().map_err(|e| failed(&e))?;
            }
            let img = image::RgbImage::from_raw(w, h, rgb).context("picture buffer of the wrong size")?;
            let mut png = Vec::new();
            img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).context("cannot encode the PNG")?;
            Ok(png)
        }
    }
}

/// Writes `bytes` to `path` (atomically, like every file this tool writes).
pub fn save(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Ok(nas_core::checkpoint::write_atomic(path, bytes)?)
}

/// A colour per op name, the same in cell pictures and α curves: the tab10 palette, with the
/// conv ops in blues and purples, pools in browns and oranges, identities in green and `none`
/// in grey (as in DARTS' own figures, where colour tells the op family), `noise` in red. Any
/// other name gets one of tab20's light shades, picked by a hash of the name so that it keeps
/// its colour from one picture to the next.
pub fn op_color(op: &str) -> RGBColor {
    match op {
        "none" => RGBColor(127, 127, 127),
        "max_pool_3x3" => RGBColor(140, 86, 75),
        "avg_pool_3x3" => RGBColor(255, 127, 14),
        "skip_connect" => RGBColor(44, 160, 44),
        "sep_conv_3x3" | "nor_conv_3x3" => RGBColor(31, 119, 180),
        "sep_conv_5x5" => RGBColor(23, 190, 207),
        "dil_conv_3x3" => RGBColor(148, 103, 189),
        "dil_conv_5x5" => RGBColor(227, 119, 194),
        "nor_conv_1x1" => RGBColor(188, 189, 34),
        "noise" => RGBColor(214, 39, 40),
        _ => {
            const LIGHT: [RGBColor; 10] = [
                RGBColor(174, 199, 232),
                RGBColor(255, 187, 120),
                RGBColor(152, 223, 138),
                RGBColor(255, 152, 150),
                RGBColor(197, 176, 213),
                RGBColor(196, 156, 148),
                RGBColor(247, 182, 210),
                RGBColor(199, 199, 199),
                RGBColor(219, 219, 141),
                RGBColor(158, 218, 229),
            ];
            // FNV-1a: the same name gets the same colour on every machine and in every run.
            let h = op.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
            LIGHT[(h % LIGHT.len() as u64) as usize]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Square;

    impl Picture for Square {
        fn size(&self) -> (u32, u32) {
            (40, 30)
        }

        fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
            area.draw(&Rectangle::new([(10, 10), (20, 20)], BLACK.filled()))?;
            area.draw(&Text::new("x", (25, 5), (SANS, 12).into_font()))
        }
    }

    #[test]
    fn renders_png_and_svg() {
        let png = render(&Square, ImageFormat::Png).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (40, 30));
        assert_eq!(img.get_pixel(15, 15).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(2, 2).0, [255, 255, 255]);
        let svg = String::from_utf8(render(&Square, ImageFormat::Svg).unwrap()).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("<text") && svg.contains("font-family=\"sans-serif\""),
            "{svg}"
        );
    }

    #[test]
    fn every_op_name_has_a_colour() {
        assert_eq!(op_color("noise"), RGBColor(214, 39, 40));
        assert_eq!(op_color("sep_conv_3x3"), RGBColor(31, 119, 180));
        // Unknown names: a light shade, the same each time, not the colour of a known op.
        let known = ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_5x5", "noise"];
        for op in ["", "conv_7x1_1x7", "zero", "ß"] {
            assert_eq!(op_color(op), op_color(op));
            assert!(known.iter().all(|k| op_color(k) != op_color(op)), "{op}");
        }
    }

    #[test]
    fn formats_follow_the_extension() {
        assert_eq!(ImageFormat::of_path(Path::new("a/b.PNG")).unwrap(), ImageFormat::Png);
        assert_eq!(ImageFormat::of_path(Path::new("b.svg")).unwrap(), ImageFormat::Svg);
        assert!(ImageFormat::of_path(Path::new("b.jpg")).unwrap_err().to_string().contains("b.jpg"));
    }
}
