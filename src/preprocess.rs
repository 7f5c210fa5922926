//! An image file → the network's input: 28×28 pixels, 0 = background … 255 = ink, made the way
//! MNIST's digits were made.
//!
//! MNIST's digits (LeCun et al.) were scanned dark on light, size-normalised to fit a 20×20 box
//! keeping their aspect ratio (anti-aliased, hence grey levels), then centred by their centre of
//! mass in a 28×28 field, light on dark. [`mnist_like`] does the same to any picture of a digit,
//! step by step, each step a function below:
//!
//! 1. [`luminance`]: decode (PNG, JPEG, BMP, PGM/PPM/PBM; [`decode`]) and take the grey level,
//!    transparent parts over white;
//! 2. [`to_ink`]: light background (the border is mostly light) → invert, so ink is bright; then
//!    stretch so the background is 0 and the strongest ink 1 (a faint pencil photo becomes like a
//!    scan); too little contrast is a blank image, an error;
//! 3. [`crop`]: the bounding box of the ink (pixels at least [`INK_THRESHOLD`]);
//! 4. [`fit`]: scale so the longer side is [`BOX`] = 20 pixels, keeping the aspect ratio
//!    (a triangle filter, which averages when shrinking);
//! 5. [`centre`]: translate by whole pixels so the centre of mass sits at pixel (14, 14) of the
//!    [`FIELD`] = 28 field, where MNIST has it;
//! 6. [`quantize`]: back to bytes, as the data sets hold them.
//!
//! [`raw`] skips all of it for images already like MNIST's (28×28, light digit on black): only
//! the grey level, exactly as stored.

use image::imageops::FilterType;
use image::{DynamicImage, ImageBuffer, ImageFormat, ImageReader, Luma};
use std::io::Cursor;
use std::path::PathBuf;
use thiserror::Error;

/// The side of the field the digit is centred in (MNIST: 28).
pub const FIELD: usize = 28;
/// The longer side of the digit after scaling (MNIST: 20).
pub const BOX: usize = 20;
/// Stretched ink at least this bright counts for the bounding box.
pub const INK_THRESHOLD: f32 = 0.1;
/// Less than this between background and the strongest ink (on a 0–1 scale) is a blank image.
pub const MIN_CONTRAST: f32 = 0.2;
/// Each side of an image must have at least this many pixels.
pub const MIN_SIDE: u32 = 8;
/// The longer side may be at most this many times the shorter.
pub const MAX_ASPECT: u32 = 50;
/// Larger images are refused before decoding (a 40-megapixel photo still passes).
pub const MAX_PIXELS: u64 = 40_000_000;

/// A grey image, row-major, values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

impl Gray {
    pub fn new(width: usize, height: usize, pixels: Vec<f32>) -> Gray {
        assert_eq!(pixels.len(), width * height, "pixels for {width}×{height}");
        Gray { width, height, pixels }
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.pixels[y * self.width + x]
    }

    /// The mean of the outermost ring of pixels: the background's level.
    fn border_mean(&self) -> f32 {
        let (w, h) = (self.width, self.height);
        let mut sum = 0.0f64;
        let mut count = 0usize;
        for y in 0..h {
            for x in 0..w {
                if x == 0 || y == 0 || x + 1 == w || y + 1 == h {
                    sum += self.at(x, y) as f64;
                    count += 1;
                }
            }
        }
        (sum / count.max(1) as f64) as f32
    }
}

/// An image that cannot become the network's input, naming the file.
#[derive(Debug, Error)]
#[error("image {path} {problem}")]
pub struct ImageError {
    pub path: PathBuf,
    pub problem: ImageProblem,
}

/// What is wrong with an image (the sentence's predicate: "image digit.png …").
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ImageProblem {
    #[error("does not exist; check the path")]
    Missing,
    #[error("cannot be read: {0}")]
    Read(String),
    #[error("is empty (0 bytes)")]
    EmptyFile,
    #[error("is not a PNG, JPEG, BMP or PGM/PPM image (its first bytes match none of them)")]
    UnknownFormat,
    #[error("is a {0} image, but only PNG, JPEG, BMP and PGM/PPM are read; convert it to PNG")]
    UnsupportedFormat(String),
    #[error("cannot be decoded: {0}")]
    Decode(String),
    #[error("is {width}×{height} pixels: too small to hold a digit (each side needs at least {MIN_SIDE})")]
    TooSmall { width: u32, height: u32 },
    #[error("is {width}×{height} pixels: too thin to hold a digit (at most {MAX_ASPECT}:1)")]
    TooThin { width: u32, height: u32 },
    #[error("is {width}×{height} pixels, more than {MAX_PIXELS} pixels: scale it down first")]
    TooLarge { width: u32, height: u32 },
    #[error("is blank: nothing stands out from its background, so there is no digit to read")]
    Blank,
    #[error("is {width}×{height} pixels, but --raw takes 28×28 images as they are: leave --raw out to scale it")]
    RawSize { width: u32, height: u32 },
}

/// Decodes an image file's bytes (PNG, JPEG, BMP or PNM), refusing sizes that cannot hold a
/// digit or would take too much memory before decoding the pixels.
pub fn decode(bytes: &[u8]) -> Result<DynamicImage, ImageProblem> {
    if bytes.is_empty() {
        return Err(ImageProblem::EmptyFile);
    }
    let reader = || {
        ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| ImageProblem::Decode(e.to_string()))
    };
    let format = reader()?.format().ok_or(ImageProblem::UnknownFormat)?;
    if ![ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Bmp, ImageFormat::Pnm].contains(&format) {
        return Err(ImageProblem::UnsupportedFormat(format!("{format:?}")));
    }
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| ImageProblem::Decode(e.to_string()))?;
    check_size(width, height)?;
    let mut reader = reader()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    let image = reader.decode().map_err(|e| ImageProblem::Decode(e.to_string()))?;
    // A decoder that disagrees with the size its header gave is checked again.
    check_size(image.width(), image.height())?;
    Ok(image)
}

/// Refuses images too small, too thin or too large to be a picture of a digit.
pub fn check_size(width: u32, height: u32) -> Result<(), ImageProblem> {
    let (short, long) = (width.min(height), width.max(height));
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageProblem::TooLarge { width, height });
    }
    if short < MIN_SIDE {
        return Err(ImageProblem::TooSmall { width, height });
    }
    if long / short > MAX_ASPECT {
        return Err(ImageProblem::TooThin { width, height });
    }
    Ok(())
}

/// The grey level of each pixel in [0, 1] (Rec. 709 luma for colour), with transparent parts
/// composited over white (as a viewer shows them).
pub fn luminance(image: &DynamicImage) -> Gray {
    let la = image.to_luma_alpha32f();
    let pixels = la
        .pixels()
        .map(|p| {
            let [l, a] = p.0;
            let (l, a) = (l.clamp(0.0, 1.0), a.clamp(0.0, 1.0));
            l * a + (1.0 - a)
        })
        .collect();
    Gray::new(la.width() as usize, la.height() as usize, pixels)
}

/// Ink as MNIST has it, light on dark: inverted when the border (the background) is light, then
/// stretched so the background level is 0 and the strongest ink 1.
pub fn to_ink(gray: &Gray) -> Result<Gray, ImageProblem> {
    let invert = gray.border_mean() > 0.5;
    let ink: Vec<f32> = gray.pixels.iter().map(|&v| if invert { 1.0 - v } else { v }).collect();
    let ink = Gray::new(gray.width, gray.height, ink);
    let background = ink.border_mean();
    let peak = ink.pixels.iter().copied().fold(0.0f32, f32::max);
    let contrast = peak - background;
    if contrast.is_nan() || contrast < MIN_CONTRAST {
        return Err(ImageProblem::Blank);
    }
    let stretched = ink
        .pixels
        .iter()
        .map(|&v| ((v - background) / (peak - background)).clamp(0.0, 1.0))
        .collect();
    Ok(Gray::new(gray.width, gray.height, stretched))
}

/// The bounding box of the ink (pixels ≥ [`INK_THRESHOLD`]); the image itself when there is none.
pub fn crop(ink: &Gray) -> Gray {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..ink.height {
        for x in 0..ink.width {
            if ink.at(x, y) >= INK_THRESHOLD {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    if x0 == usize::MAX {
        return ink.clone();
    }
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let pixels = (y0..=y1)
        .flat_map(|y| (x0..=x1).map(move |x| (x, y)))
        .map(|(x, y)| ink.at(x, y))
        .collect();
    Gray::new(w, h, pixels)
}

/// Scaled so the longer side is `side` pixels, keeping the aspect ratio (the shorter side at
/// least 1 pixel), with the `image` crate's triangle filter.
pub fn fit(ink: &Gray, side: usize) -> Gray {
    let scale = side as f64 / ink.width.max(ink.height) as f64;
    let width = ((ink.width as f64 * scale).round() as usize).clamp(1, side);
    let height = ((ink.height as f64 * scale).round() as usize).clamp(1, side);
    let buffer: ImageBuffer<Luma<f32>, Vec<f32>> =
        ImageBuffer::from_raw(ink.width as u32, ink.height as u32, ink.pixels.clone()).expect("sized buffer");
    let resized = image::imageops::resize(&buffer, width as u32, height as u32, FilterType::Triangle);
    let pixels = resized.into_raw().into_iter().map(|v| v.clamp(0.0, 1.0)).collect();
    Gray::new(width, height, pixels)
}

/// Placed in a `field` × `field` image, moved by whole pixels so that its centre of mass (in
/// pixel indices) lands on pixel (field/2, field/2), (14, 14) for MNIST, as in MNIST itself: its
/// test set's centres of mass average (14.01, 13.99). Parts pushed outside are cut off.
pub fn centre(digit: &Gray, field: usize) -> Gray {
    let (mut mass, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for y in 0..digit.height {
        for x in 0..digit.width {
            let v = digit.at(x, y) as f64;
            mass += v;
            mx += v * x as f64;
            my += v * y as f64;
        }
    }
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (digit.width as f64 / 2.0, digit.height as f64 / 2.0)
    };
    let half = (field / 2) as f64;
    let (dx, dy) = ((half - cx).round() as i64, (half - cy).round() as i64);
    let mut out = vec![0.0f32; field * field];
    for y in 0..digit.height {
        for x in 0..digit.width {
            let (fx, fy) = (x as i64 + dx, y as i64 + dy);
            if (0..field as i64).contains(&fx) && (0..field as i64).contains(&fy) {
                out[fy as usize * field + fx as usize] = digit.at(x, y);
            }
        }
    }
    Gray::new(field, field, out)
}

/// Bytes 0..=255, as a data set stores pixels.
pub fn quantize(gray: &Gray) -> Vec<u8> {
    gray.pixels
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// The whole preprocessing: an image file's bytes → 28×28 MNIST-like pixels.
pub fn mnist_like(bytes: &[u8]) -> Result<Vec<u8>, ImageProblem> {
    let image = decode(bytes)?;
    let ink = to_ink(&luminance(&image))?;
    let digit = fit(&crop(&ink), BOX);
    Ok(quantize(&centre(&digit, FIELD)))
}

/// No preprocessing: a 28×28 image's grey levels as they are (8-bit grey is kept exactly).
pub fn raw(bytes: &[u8]) -> Result<Vec<u8>, ImageProblem> {
    let image = decode(bytes)?;
    if image.width() as usize != FIELD || image.height() as usize != FIELD {
        return Err(ImageProblem::RawSize {
            width: image.width(),
            height: image.height(),
        });
    }
    Ok(image.to_luma8().into_raw())
}

/// Reads an image file and turns it into the network's input (`raw`: as it is).
pub fn load(path: &std::path::Path, raw_pixels: bool) -> Result<Vec<u8>, ImageError> {
    let error = |problem| ImageError {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => error(ImageProblem::Missing),
        _ => error(ImageProblem::Read(e.to_string())),
    })?;
    if raw_pixels {
        raw(&bytes).map_err(error)
    } else {
        mnist_like(&bytes).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w`×`h` image of `background` with a `rw`×`rh` rectangle of `ink` at (`x`, `y`).
    fn rectangle(w: usize, h: usize, background: f32, ink: f32, (x, y, rw, rh): (usize, usize, usize, usize)) -> Gray {
        let mut g = Gray::new(w, h, vec![background; w * h]);
        for yy in y..y + rh {
            for xx in x..x + rw {
                g.pixels[yy * w + xx] = ink;
            }
        }
        g
    }

    fn mass_centre(g: &Gray) -> (f64, f64) {
        let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
        for y in 0..g.height {
            for x in 0..g.width {
                let v = g.at(x, y) as f64;
                m += v;
                mx += v * x as f64;
                my += v * y as f64;
            }
        }
        (mx / m, my / m)
    }

    #[test]
    fn dark_on_light_is_inverted_and_stretched() {
        // Grey paper (0.8) with dark ink (0.3): ink becomes 1, paper 0.
        let g = rectangle(20, 20, 0.8, 0.3, (5, 5, 4, 6));
        let ink = to_ink(&g).unwrap();
        assert_eq!(ink.at(0, 0), 0.0);
        assert!((ink.at(6, 6) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn light_on_dark_is_kept() {
        let g = rectangle(20, 20, 0.0, 1.0, (5, 5, 4, 6));
        assert_eq!(to_ink(&g).unwrap(), g);
    }

    #[test]
    fn a_uniform_or_faint_image_is_blank() {
        assert_eq!(to_ink(&Gray::new(10, 10, vec![1.0; 100])), Err(ImageProblem::Blank));
        let faint = rectangle(20, 20, 0.9, 0.8, (5, 5, 4, 4));
        assert_eq!(to_ink(&faint), Err(ImageProblem::Blank));
    }

    #[test]
    fn crop_finds_the_ink_box() {
        let g = rectangle(30, 20, 0.0, 1.0, (7, 3, 5, 9));
        let c = crop(&g);
        assert_eq!((c.width, c.height), (5, 9));
        assert!(c.pixels.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn fit_makes_the_longer_side_twenty_keeping_the_ratio() {
        for (w, h, want) in [
            (100, 50, (20, 10)),
            (10, 40, (5, 20)),
            (3, 3, (20, 20)),
            (400, 7, (20, 1)),
        ] {
            let g = Gray::new(w, h, vec![1.0; w * h]);
            let f = fit(&g, BOX);
            assert_eq!((f.width, f.height), want, "{w}×{h}");
            assert!(
                f.pixels.iter().all(|&v| (v - 1.0).abs() < 1e-5),
                "{w}×{h}: a flat image stays flat"
            );
        }
    }

    #[test]
    fn centre_puts_the_centre_of_mass_in_the_middle() {
        // An L shape: its centre of mass is off its box's centre.
        let mut g = rectangle(12, 20, 0.0, 1.0, (0, 0, 3, 20));
        for x in 0..12 {
            g.pixels[19 * 12 + x] = 1.0;
        }
        let c = centre(&g, FIELD);
        let (cx, cy) = mass_centre(&c);
        assert!(
            (cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5,
            "centre of mass ({cx}, {cy})"
        );
        let total: f32 = c.pixels.iter().sum();
        assert_eq!(total, g.pixels.iter().sum::<f32>(), "nothing cut off");
    }

    #[test]
    fn quantize_rounds_to_bytes() {
        let g = Gray::new(4, 1, vec![0.0, 0.5, 1.0, 0.999]);
        assert_eq!(quantize(&g), vec![0, 128, 255, 255]);
    }

    #[test]
    fn sizes_that_cannot_hold_a_digit_are_refused() {
        assert_eq!(check_size(0, 0), Err(ImageProblem::TooSmall { width: 0, height: 0 }));
        assert_eq!(
            check_size(1, 20000),
            Err(ImageProblem::TooSmall {
                width: 1,
                height: 20000
            })
        );
        assert_eq!(
            check_size(10, 600),
            Err(ImageProblem::TooThin { width: 10, height: 600 })
        );
        assert_eq!(
            check_size(10000, 10000),
            Err(ImageProblem::TooLarge {
                width: 10000,
                height: 10000
            })
        );
        assert_eq!(check_size(28, 28), Ok(()));
        assert_eq!(check_size(4000, 3000), Ok(()));
    }

    #[test]
    fn transparent_pixels_are_white() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        let g = luminance(&DynamicImage::ImageRgba8(rgba));
        assert_eq!(g.pixels, vec![1.0, 0.0]);
    }
}
