//! Figures, for `bench --plot` and `tune --plot`: a figure draws itself on
//! any plotters backend, and [`save`] puts it in a PNG (encoded by the `png`
//! crate from plotters' RGB buffer, so the `image` crate and its decoders
//! stay out of the Pi binaries) or, for `*.svg`, an SVG. Text needs a
//! TrueType font from the system (Debian: `fonts-dejavu-core`).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Where fonts are looked for, in order.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
];

/// A picture that can be drawn on any backend.
pub trait Figure {
    /// Draws the whole figure on `root`.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static;
}

/// Draws `figure` of `size` pixels into `path`: PNG, or SVG for `*.svg`.
/// The message of an error names the file.
pub fn save(figure: &impl Figure, path: &Path, size: (u32, u32)) -> Result<(), String> {
    font()?;
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    let outcome = if svg {
        let root = SVGBackend::new(path, size).into_drawing_area();
        figure
            .draw(&root)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
    } else {
        png(figure, path, size)
    };
    outcome.map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

/// The PNG of `figure`: drawn into an RGB buffer, then encoded.
fn png(figure: &impl Figure, path: &Path, (w, h): (u32, u32)) -> Result<(), String> {
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        figure.draw(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let file = std::fs::File::create(path).map_err(|e| e.to_string())?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    // Figures are few and kept (README, CI artefacts): small beats fast.
    encoder.set_compression(png::Compression::Best);
    let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
    writer.write_image_data(&rgb).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())
}

/// Registers the first font found as "sans-serif", once.
fn font() -> Result<(), String> {
    static REGISTERED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let (path, bytes) = FONTS
                .iter()
                .find_map(|p| std::fs::read(p).ok().map(|b| (*p, b)))
                .ok_or_else(|| {
                    format!(
                        "--plot needs a TrueType font and found none of {}: \
                         apt install fonts-dejavu-core",
                        FONTS.join(", ")
                    )
                })?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{path} is not a font plotters can read"))
        })
        .clone()
}
