//! Image loading and conversion to a normalised model input tensor.
//!
//! [`load_image`] turns any supported file (JPEG, PNG, WebP, BMP, TIFF, GIF)
//! into an upright 8-bit RGB image; [`to_tensor`] resizes it and produces the
//! `[1, C, H, W]` / `[1, H, W, C]` float tensor a classifier expects,
//! following the usual torchvision recipe (bilinear resize, `/255`,
//! `(x - mean) / std`).

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use ndarray::{Array4, ArrayD};

/// Memory layout of the model input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `[batch, channels, height, width]` (PyTorch-style exports).
    Nchw,
    /// `[batch, height, width, channels]` (TensorFlow/TFLite-style exports).
    Nhwc,
}

/// Per-channel normalisation applied after scaling pixels to `[0, 1]`:
/// `(v - mean[c]) / std[c]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    /// Per-channel mean (R, G, B) in `[0, 1]` units.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B) in `[0, 1]` units.
    pub std: [f32; 3],
}

impl Default for Normalization {
    /// The ImageNet statistics used by torchvision models:
    /// mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
    fn default() -> Self {
        Normalization {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

impl Normalization {
    /// Per-channel range of normalised inputs: `low[c] = (0 - mean[c]) / std[c]`
    /// and `high[c] = (1 - mean[c]) / std[c]` (the values of a black and a
    /// white pixel). Used e.g. by the z^B LRP rule for the input layer.
    /// A zero `std` yields infinities; [`to_tensor`] rejects such settings.
    pub fn bounds(&self) -> ([f32; 3], [f32; 3]) {
        let mut low = [0.0; 3];
        let mut high = [0.0; 3];
        for c in 0..3 {
            low[c] = (0.0 - self.mean[c]) / self.std[c];
            high[c] = (1.0 - self.mean[c]) / self.std[c];
        }
        (low, high)
    }
}

/// Default of [`DecodeLimits::max_pixels`]: 64 million pixels (e.g.
/// 9800 x 6530), so that even a 16-bit RGBA image of that size (8 bytes per
/// pixel, 512 MB) fits `image`'s default allocation limit of 512 MiB.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

/// `image`'s default allocation limit, the least [`DecodeLimits`] allows.
const MIN_ALLOC: u64 = 512 * 1024 * 1024;

/// Bounds on decoding one image.
///
/// An image is refused, from its header and before any pixel is decoded,
/// when it has more than `max_pixels` pixels. The decoder's allocations
/// (`image`'s [`Limits::max_alloc`]) and the size of the file read are
/// bounded by [`DecodeLimits::max_alloc`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width x height) an image may have.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl DecodeLimits {
    /// Parses a pixel count: a positive integer, optionally with a decimal
    /// suffix `k` (10^3), `M` (10^6) or `G` (10^9), e.g. `120M`.
    pub fn parse_pixels(s: &str) -> anyhow::Result<u64> {
        let t = s.trim();
        let (digits, factor) = match t.char_indices().last() {
            Some((i, 'k' | 'K')) => (&t[..i], 1_000),
            Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
            Some((i, 'g' | 'G')) => (&t[..i], 1_000_000_000),
            _ => (t, 1),
        };
        let n: u64 = digits
            .parse()
            .ok()
            .and_then(|n: u64| n.checked_mul(factor))
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow!("'{s}' is not a positive pixel count (like 50000000 or 50M)"))?;
        Ok(n)
    }

    /// Bytes decoding may allocate: `max_pixels` at 8 bytes per pixel
    /// (16-bit RGBA), and never less than `image`'s default of 512 MiB.
    pub fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(8).max(MIN_ALLOC)
    }

    fn image_limits(&self) -> Limits {
        let mut l = Limits::default();
        l.max_alloc = Some(self.max_alloc());
        l
    }
}

/// An image refused by [`DecodeLimits::max_pixels`] (or the decoding memory
/// limit that follows from it).
fn too_large(message: String) -> crate::Error {
    crate::Error::LimitExceeded {
        name: "max_pixels",
        message,
    }
}

/// Megabytes (10^6) of a byte count, for messages.
fn mb(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// A size as "N megapixels" for messages ("N pixels" below 0.1 megapixel,
/// which would round to 0.0).
fn megapixels(pixels: u64) -> String {
    let m = pixels as f64 / 1e6;
    if pixels < 100_000 {
        format!("{pixels} pixels")
    } else if m >= 10.0 {
        format!("{m:.0} megapixels")
    } else {
        format!("{m:.1} megapixels")
    }
}

/// Reads a whole image file, refusing what is not a regular file (a FIFO
/// or a device would block or never end) and files larger than the
/// decoding memory limit.
fn read_image_file(path: &Path, limits: &DecodeLimits) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_file() {
        let ft = meta.file_type();
        let what = if ft.is_dir() {
            "a folder"
        } else {
            special_file_kind(&ft)
        };
        bail!(
            "cannot read {}: not a regular file ({what})",
            path.display()
        );
    }
    let max = limits.max_alloc();
    if meta.len() > max {
        bail!(too_large(format!(
            "cannot decode {}: the file is {}, more than the {} decoding memory limit (8 bytes per pixel of max_pixels)",
            path.display(),
            mb(meta.len()),
            mb(max)
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!(
            "cannot decode {}: the file grew past the {} decoding memory limit while being read",
            path.display(),
            mb(max)
        );
    }
    Ok(bytes)
}

#[cfg(unix)]
fn special_file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_fifo() {
        "a named pipe"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_file_kind(_: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// Loads an image file as upright 8-bit RGB, with the default
/// [`DecodeLimits`] (see [`load_image_with`]).
pub fn load_image(path: &Path) -> anyhow::Result<RgbImage> {
    load_image_with(path, &DecodeLimits::default())
}

/// Loads an image file as upright 8-bit RGB.
///
/// * The format is detected from the file content, not the extension.
/// * Decoding is bounded by `limits` (images with too many pixels are refused
///   from their header; the decoder's allocations are bounded by `image`'s
///   [`Limits`]); the error is a [`crate::Error::LimitExceeded`] naming
///   `max_pixels` (under the file's name).
/// * Only regular files are read (not FIFOs, sockets or devices).
/// * The EXIF orientation (JPEG, WebP, TIFF) is applied, so the result is the
///   image as a viewer displays it.
/// * Grey, grey+alpha, RGBA, 16-bit and CMYK JPEG inputs are converted to RGB8.
///   An alpha channel is **dropped** (not composited), matching
///   `PIL.Image.convert("RGB")` as used by torchvision pipelines.
/// * Animated GIF/WebP: the first frame is used.
///
/// Errors name the file and the problem, e.g.
/// `cannot decode images/x.jpg: ...` (print with `{:#}` for the cause).
pub fn load_image_with(path: &Path, limits: &DecodeLimits) -> anyhow::Result<RgbImage> {
    let bytes = read_image_file(path, limits)?;
    if bytes.is_empty() {
        bail!("cannot decode {}: the file is empty", path.display());
    }
    decode_bytes(&bytes, limits).with_context(|| format!("cannot decode {}", path.display()))
}

/// An `image` error as a message, limit errors explained.
fn image_error(e: image::ImageError, limits: &DecodeLimits) -> anyhow::Error {
    match e {
        image::ImageError::Limits(l) => anyhow!(too_large(format!(
            "{l}: decoding would need more than the {} memory limit (8 bytes per pixel of max_pixels = {})",
            mb(limits.max_alloc()),
            limits.max_pixels
        ))),
        e => anyhow!("{e}"),
    }
}

/// Decodes an in-memory image (see [`load_image_with`]); errors do not name
/// a file.
pub fn decode_bytes(bytes: &[u8], limits: &DecodeLimits) -> anyhow::Result<RgbImage> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .context("cannot read the image header")?;
    if reader.format().is_none() {
        bail!("unrecognised image format (supported: JPEG, PNG, WebP, BMP, TIFF, GIF)");
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        bail!("the JPEG file is truncated (no end-of-image marker after its last scan)");
    }
    reader.limits(limits.image_limits());
    crate::guard::third_party("the image decoder", || decode_with(reader, limits))
}

/// Decodes with the format known, header checked against `limits` first.
fn decode_with(
    reader: ImageReader<Cursor<&[u8]>>,
    limits: &DecodeLimits,
) -> anyhow::Result<RgbImage> {
    let mut decoder = reader.into_decoder().map_err(|e| image_error(e, limits))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        bail!(too_large(format!(
            "the image is {w}x{h} ({}), more than the max_pixels limit of {}",
            megapixels(pixels),
            megapixels(limits.max_pixels)
        )));
    }
    // A broken orientation tag should not make an otherwise fine image
    // unusable: fall back to "as stored".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    // Same allocation check as `ImageReader::decode` performs.
    limits
        .image_limits()
        .reserve(decoder.total_bytes())
        .map_err(|e| image_error(e, limits))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, limits))?;
    img.apply_orientation(orientation);
    Ok(match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// Whether a JPEG stream ends its last scan with an end-of-image marker.
///
/// The JPEG decoder fills a truncated scan with grey instead of failing. An
/// EOI (`FF D9`) cannot occur inside entropy-coded data (an `FF` there is
/// followed by `00` or a restart marker), and an embedded EXIF thumbnail's own
/// markers come before the main image's scan, so the stream is complete when
/// an EOI follows the last start-of-scan (`FF DA`).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    matches!((last_sos, last_eoi), (Some(s), Some(e)) if e > s)
}

/// Converts an RGB image to a normalised input tensor of shape `[1, C, H, W]`
/// (`Layout::Nchw`) or `[1, H, W, C]` (`Layout::Nhwc`).
///
/// The whole image is resized (no crop, aspect ratio not kept) to
/// `width x height` with `FilterType::Triangle` (bilinear, with the support
/// widened when downscaling, like PIL's `BILINEAR`); resizing is skipped when
/// the image already has that size. Pixels are scaled to `[0, 1]` (`/255`)
/// and normalised as `(v - mean[c]) / std[c]`.
///
/// `channels` must be 3 (RGB) or 1 (luma, ITU-R BT.601
/// `0.299 R + 0.587 G + 0.114 B` on the `[0, 1]` values, normalised with
/// `mean[0]` / `std[0]`). Other channel counts, zero sizes and zero or
/// non-finite `std` are errors.
pub fn to_tensor(
    img: &RgbImage,
    height: usize,
    width: usize,
    channels: usize,
    layout: Layout,
    norm: &Normalization,
) -> anyhow::Result<ArrayD<f32>> {
    if channels != 3 && channels != 1 {
        bail!("unsupported number of input channels {channels} (expected 3 for RGB or 1 for grey)");
    }
    if height == 0 || width == 0 {
        bail!("invalid input size {width}x{height}");
    }
    if img.width() == 0 || img.height() == 0 {
        bail!("the image is empty ({}x{})", img.width(), img.height());
    }
    for c in 0..channels {
        let (m, s) = (norm.mean[c], norm.std[c]);
        if !m.is_finite() || !s.is_finite() || s == 0.0 {
            bail!("invalid normalisation for channel {c}: mean {m}, std {s}");
        }
    }
    let w32 = u32::try_from(width).map_err(|_| anyhow!("input width {width} too large"))?;
    let h32 = u32::try_from(height).map_err(|_| anyhow!("input height {height} too large"))?;

    let resized;
    let src: &RgbImage = if img.dimensions() == (w32, h32) {
        img
    } else {
        resized = image::imageops::resize(img, w32, h32, FilterType::Triangle);
        &resized
    };

    // Normalised value of channel `c` at pixel (y, x).
    let value = |y: usize, x: usize, c: usize| -> f32 {
        let p = src.get_pixel(x as u32, y as u32).0;
        let rgb = [
            p[0] as f32 / 255.0,
            p[1] as f32 / 255.0,
            p[2] as f32 / 255.0,
        ];
        if channels == 1 {
            let luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2];
            (luma - norm.mean[0]) / norm.std[0]
        } else {
            (rgb[c] - norm.mean[c]) / norm.std[c]
        }
    };

    let arr = match layout {
        Layout::Nchw => {
            Array4::from_shape_fn((1, channels, height, width), |(_, c, y, x)| value(y, x, c))
        }
        Layout::Nhwc => {
            Array4::from_shape_fn((1, height, width, channels), |(_, y, x, c)| value(y, x, c))
        }
    };
    Ok(arr.into_dyn())
}

/// The relevance of the first row of a batch as `[C, H, W]`, whatever the
/// model's layout (`rel` is `[N, C, H, W]` or `[N, H, W, C]`).
pub fn relevance_chw(rel: &ndarray::ArrayD<f32>, layout: Layout) -> ndarray::ArrayD<f32> {
    let r = rel.index_axis(ndarray::Axis(0), 0).to_owned();
    match layout {
        Layout::Nchw => r,
        Layout::Nhwc => r
            .permuted_axes(vec![2, 0, 1])
            .as_standard_layout()
            .into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
    use lrp_testkit::images::encode;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-5
    }

    /// 2x2 test image: row 0 = black, white; row 1 = pure red, (51,102,204).
    fn sample_2x2() -> RgbImage {
        let mut img = RgbImage::new(2, 2);
        img.put_pixel(0, 0, Rgb([0, 0, 0]));
        img.put_pixel(1, 0, Rgb([255, 255, 255]));
        img.put_pixel(0, 1, Rgb([255, 0, 0]));
        img.put_pixel(1, 1, Rgb([51, 102, 204]));
        img
    }

    #[test]
    fn default_normalization_and_bounds() {
        let n = Normalization::default();
        assert_eq!(n.mean, [0.485, 0.456, 0.406]);
        assert_eq!(n.std, [0.229, 0.224, 0.225]);
        let (lo, hi) = n.bounds();
        // (0 - 0.485) / 0.229 = -2.117904; (1 - 0.485) / 0.229 = 2.248908
        assert!(close(lo[0], -2.117904), "{lo:?}");
        assert!(close(hi[0], 2.248908), "{hi:?}");
        // (0 - 0.456) / 0.224 = -2.035714; (1 - 0.456) / 0.224 = 2.428571
        assert!(close(lo[1], -2.035714));
        assert!(close(hi[1], 2.428571));
        // (0 - 0.406) / 0.225 = -1.804444; (1 - 0.406) / 0.225 = 2.64
        assert!(close(lo[2], -1.804444));
        assert!(close(hi[2], 2.64));
    }

    #[test]
    fn known_values_nchw() {
        let t = to_tensor(
            &sample_2x2(),
            2,
            2,
            3,
            Layout::Nchw,
            &Normalization::default(),
        )
        .unwrap();
        assert_eq!(t.shape(), &[1, 3, 2, 2]);
        // Expected values: (p/255 - mean[c]) / std[c] with ImageNet stats.
        // black (0,0,0):      (-0.485/0.229, -0.456/0.224, -0.406/0.225)
        //                   = (-2.117904, -2.035714, -1.804444)
        // white (255,..):     (0.515/0.229, 0.544/0.224, 0.594/0.225)
        //                   = (2.248908, 2.428571, 2.64)
        // red (255,0,0):      (2.248908, -2.035714, -1.804444)
        // (51,102,204) = (0.2, 0.4, 0.8):
        //   (0.2-0.485)/0.229 = -1.244541
        //   (0.4-0.456)/0.224 = -0.25
        //   (0.8-0.406)/0.225 = 1.751111
        let expected = [
            // c, y, x, value
            (0, 0, 0, -2.117904),
            (1, 0, 0, -2.035714),
            (2, 0, 0, -1.804444),
            (0, 0, 1, 2.248908),
            (1, 0, 1, 2.428571),
            (2, 0, 1, 2.64),
            (0, 1, 0, 2.248908),
            (1, 1, 0, -2.035714),
            (2, 1, 0, -1.804444),
            (0, 1, 1, -1.244541),
            (1, 1, 1, -0.25),
            (2, 1, 1, 1.751111),
        ];
        for (c, y, x, v) in expected {
            let got = t[[0, c, y, x]];
            assert!(close(got, v), "c={c} y={y} x={x}: {got} != {v}");
        }
    }

    #[test]
    fn nhwc_is_transposed_nchw() {
        let norm = Normalization::default();
        let a = to_tensor(&sample_2x2(), 2, 2, 3, Layout::Nchw, &norm).unwrap();
        let b = to_tensor(&sample_2x2(), 2, 2, 3, Layout::Nhwc, &norm).unwrap();
        assert_eq!(b.shape(), &[1, 2, 2, 3]);
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..2 {
                    assert_eq!(a[[0, c, y, x]], b[[0, y, x, c]]);
                }
            }
        }
        // Also with a non-square resize so H and W cannot be confused.
        let a = to_tensor(&sample_2x2(), 3, 5, 3, Layout::Nchw, &norm).unwrap();
        let b = to_tensor(&sample_2x2(), 3, 5, 3, Layout::Nhwc, &norm).unwrap();
        assert_eq!(a.shape(), &[1, 3, 3, 5]);
        assert_eq!(b.shape(), &[1, 3, 5, 3]);
        let a4 = a.into_dimensionality::<ndarray::Ix4>().unwrap();
        let b4 = b.into_dimensionality::<ndarray::Ix4>().unwrap();
        assert_eq!(a4.permuted_axes([0, 2, 3, 1]), b4);
    }

    #[test]
    fn grey_channel_uses_bt601() {
        let norm = Normalization {
            mean: [0.5, 0.0, 0.0],
            std: [0.25, 1.0, 1.0],
        };
        let t = to_tensor(&sample_2x2(), 2, 2, 1, Layout::Nchw, &norm).unwrap();
        assert_eq!(t.shape(), &[1, 1, 2, 2]);
        // black: (0 - 0.5)/0.25 = -2; white: (1 - 0.5)/0.25 = 2
        // red: luma 0.299 -> (0.299-0.5)/0.25 = -0.804
        // (0.2,0.4,0.8): 0.299*0.2+0.587*0.4+0.114*0.8 = 0.3858 -> -0.4568
        assert!(close(t[[0, 0, 0, 0]], -2.0));
        assert!(close(t[[0, 0, 0, 1]], 2.0));
        assert!(close(t[[0, 0, 1, 0]], -0.804));
        assert!(close(t[[0, 0, 1, 1]], -0.4568));
        let t = to_tensor(&sample_2x2(), 2, 2, 1, Layout::Nhwc, &norm).unwrap();
        assert_eq!(t.shape(), &[1, 2, 2, 1]);
        assert!(close(t[[0, 1, 0, 0]], -0.804));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let n = Normalization::default();
        let img = sample_2x2();
        assert!(to_tensor(&img, 2, 2, 4, Layout::Nchw, &n).is_err());
        assert!(to_tensor(&img, 2, 2, 2, Layout::Nchw, &n).is_err());
        assert!(to_tensor(&img, 0, 2, 3, Layout::Nchw, &n).is_err());
        assert!(to_tensor(&RgbImage::new(0, 0), 2, 2, 3, Layout::Nchw, &n).is_err());
        let zero_std = Normalization {
            mean: [0.0; 3],
            std: [1.0, 0.0, 1.0],
        };
        assert!(to_tensor(&img, 2, 2, 3, Layout::Nchw, &zero_std).is_err());
        // ... but a grey model only uses channel 0.
        assert!(to_tensor(&img, 2, 2, 1, Layout::Nchw, &zero_std).is_ok());
    }

    #[test]
    fn resize_constant_and_downscale_average() {
        let n = Normalization {
            mean: [0.0; 3],
            std: [1.0; 3],
        };
        // Constant image stays constant.
        let img = RgbImage::from_pixel(37, 23, Rgb([10, 128, 250]));
        let t = to_tensor(&img, 8, 8, 3, Layout::Nchw, &n).unwrap();
        for v in t.index_axis(ndarray::Axis(1), 1).iter() {
            assert!(close(*v, 128.0 / 255.0));
        }
        // 8x1 -> 2x1 downscale shows the antialiasing (support widened by the
        // scale factor 4, as PIL's BILINEAR does). Output pixel 0 is centred
        // at source x = 1.5 (pixel-centre coordinates); triangle weights
        // 1 - |i - 1.5| / 4 for i = 0..5 are 0.625, 0.875, 0.875, 0.625,
        // 0.375, 0.125 (sum 3.5). Source row [0,0,255,255,0,0,255,255] gives
        // (0.875 + 0.625) * 255 / 3.5 = 109.29 -> 109 after u8 rounding.
        // (A non-antialiased bilinear sample would give 0 or 255 here.)
        let mut img = RgbImage::new(8, 1);
        for x in 0..8u32 {
            let v = if x % 4 >= 2 { 255 } else { 0 };
            img.put_pixel(x, 0, Rgb([v, v, v]));
        }
        let t = to_tensor(&img, 1, 2, 3, Layout::Nchw, &n).unwrap();
        assert!(close(t[[0, 0, 0, 0]], 109.0 / 255.0), "{}", t[[0, 0, 0, 0]]);
    }

    fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn grey_rgba_16bit_load_as_rgb8() {
        let dir = tempfile::tempdir().unwrap();

        let grey = ImageBuffer::<Luma<u8>, _>::from_fn(3, 2, |x, y| Luma([(x * 10 + y) as u8]));
        let p = write_bytes(dir.path(), "grey.png", &encode(&grey, ImageFormat::Png));
        let img = load_image(&p).unwrap();
        assert_eq!(img.dimensions(), (3, 2));
        assert_eq!(img.get_pixel(2, 1).0, [21, 21, 21]);

        let la = ImageBuffer::<LumaA<u8>, _>::from_pixel(2, 2, LumaA([77, 0]));
        let p = write_bytes(dir.path(), "la.png", &encode(&la, ImageFormat::Png));
        assert_eq!(load_image(&p).unwrap().get_pixel(1, 1).0, [77, 77, 77]);

        // Alpha is dropped, colour kept even where fully transparent.
        let mut rgba = ImageBuffer::<Rgba<u8>, _>::from_pixel(2, 2, Rgba([10, 20, 30, 255]));
        rgba.put_pixel(1, 0, Rgba([200, 100, 50, 0]));
        let p = write_bytes(dir.path(), "rgba.png", &encode(&rgba, ImageFormat::Png));
        let img = load_image(&p).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [10, 20, 30]);
        assert_eq!(img.get_pixel(1, 0).0, [200, 100, 50]);

        // 16-bit: 65535 -> 255, 0x8080 -> 128, 0 -> 0.
        let mut rgb16 = ImageBuffer::<Rgb<u16>, _>::from_pixel(2, 1, Rgb([65535, 0x8080, 0]));
        rgb16.put_pixel(1, 0, Rgb([0, 65535, 257 * 17]));
        let p = write_bytes(dir.path(), "rgb16.png", &encode(&rgb16, ImageFormat::Png));
        let img = load_image(&p).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [255, 128, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [0, 255, 17]);

        let grey16 = ImageBuffer::<Luma<u16>, _>::from_pixel(1, 1, Luma([257 * 99]));
        let p = write_bytes(dir.path(), "grey16.png", &encode(&grey16, ImageFormat::Png));
        assert_eq!(load_image(&p).unwrap().get_pixel(0, 0).0, [99, 99, 99]);
    }

    #[test]
    fn format_detected_from_content_not_extension() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_pixel(4, 3, Rgb([1, 2, 3]));
        let p = write_bytes(
            dir.path(),
            "really_png.jpg",
            &encode(&img, ImageFormat::Png),
        );
        let back = load_image(&p).unwrap();
        assert_eq!(back.dimensions(), (4, 3));
        assert_eq!(back.get_pixel(3, 2).0, [1, 2, 3]);
        // BMP with no extension at all.
        let p = write_bytes(dir.path(), "noext", &encode(&img, ImageFormat::Bmp));
        assert_eq!(load_image(&p).unwrap().get_pixel(0, 0).0, [1, 2, 3]);
    }

    /// Inserts an APP1 Exif segment carrying `Orientation = orientation`
    /// right after the SOI marker of a JPEG stream.
    fn add_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
        let mut tiff = Vec::new();
        tiff.extend_from_slice(b"II*\0"); // little-endian TIFF header
        tiff.extend_from_slice(&8u32.to_le_bytes()); // IFD0 at offset 8
        tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
        tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // tag: Orientation
        tiff.extend_from_slice(&3u16.to_le_bytes()); // type: SHORT
        tiff.extend_from_slice(&1u32.to_le_bytes()); // count 1
        tiff.extend_from_slice(&orientation.to_le_bytes()); // value
        tiff.extend_from_slice(&[0, 0]); // value padding to 4 bytes
        tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
        let mut payload = b"Exif\0\0".to_vec();
        payload.extend_from_slice(&tiff);
        let seg_len = (payload.len() + 2) as u16;
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE1];
        out.extend_from_slice(&seg_len.to_be_bytes());
        out.extend_from_slice(&payload);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn jpeg_exif_orientation_applied() {
        let dir = tempfile::tempdir().unwrap();
        // 32 wide, 16 high: left half red, right half blue (big blocks so
        // JPEG artefacts do not matter).
        let img = RgbImage::from_fn(32, 16, |x, _| {
            if x < 16 {
                Rgb([255, 0, 0])
            } else {
                Rgb([0, 0, 255])
            }
        });
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let p = write_bytes(dir.path(), "plain.jpg", &jpeg);
        assert_eq!(load_image(&p).unwrap().dimensions(), (32, 16));

        let p = write_bytes(dir.path(), "rot.jpg", &add_exif_orientation(&jpeg, 6));
        let out = load_image(&p).unwrap();
        assert_eq!(out.dimensions(), (16, 32));
        // Rotating 90 degrees clockwise puts the original left (red) half on
        // top and the right (blue) half at the bottom.
        let top = out.get_pixel(8, 4).0;
        let bottom = out.get_pixel(8, 28).0;
        assert!(top[0] > 200 && top[2] < 60, "top {top:?}");
        assert!(bottom[2] > 200 && bottom[0] < 60, "bottom {bottom:?}");
    }

    #[test]
    fn animated_gif_gives_first_frame() {
        use image::codecs::gif::GifEncoder;
        use image::{Delay, Frame};
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut bytes);
            let f1 = Frame::from_parts(
                image::RgbaImage::from_pixel(4, 4, Rgba([255, 0, 0, 255])),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            );
            let f2 = Frame::from_parts(
                image::RgbaImage::from_pixel(4, 4, Rgba([0, 0, 255, 255])),
                0,
                0,
                Delay::from_numer_denom_ms(100, 1),
            );
            enc.encode_frames(vec![f1, f2]).unwrap();
        }
        let p = write_bytes(dir.path(), "anim.gif", &bytes);
        let img = load_image(&p).unwrap();
        assert_eq!(img.dimensions(), (4, 4));
        let px = img.get_pixel(1, 1).0;
        assert!(px[0] > 200 && px[2] < 50, "{px:?}");
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // Deterministic pseudo-random bytes (xorshift).
        let mut s: u32 = 0x1234_5678;
        let junk: Vec<u8> = (0..4096)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect();
        let p = write_bytes(dir.path(), "junk.jpg", &junk);
        let msg = format!("{:#}", load_image(&p).unwrap_err());
        assert!(msg.contains("junk.jpg"), "{msg}");
        assert!(msg.contains("cannot decode"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");

        let p = write_bytes(dir.path(), "empty.png", b"");
        let msg = format!("{:#}", load_image(&p).unwrap_err());
        assert!(msg.contains("empty.png") && msg.contains("empty"), "{msg}");

        // Truncated PNG: valid signature, then nothing useful.
        let png = encode(&RgbImage::new(8, 8), ImageFormat::Png);
        let p = write_bytes(dir.path(), "trunc.png", &png[..png.len() / 2]);
        let msg = format!("{:#}", load_image(&p).unwrap_err());
        assert!(msg.contains("trunc.png"), "{msg}");

        let p = dir.path().join("missing.jpg");
        let msg = format!("{:#}", load_image(&p).unwrap_err());
        assert!(
            msg.contains("missing.jpg") && msg.contains("cannot read"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_jpeg_is_an_error_and_the_full_file_loads() {
        let full = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/images/cat.jpg")).unwrap();
        assert!(jpeg_is_complete(&full));
        // images/LICENSES.md: cat.jpg is 451x300
        assert_eq!(
            decode_bytes(&full, &DecodeLimits::default())
                .unwrap()
                .dimensions(),
            (451, 300)
        );
        for cut in [full.len() / 3, full.len() - 2] {
            let err = format!(
                "{:#}",
                decode_bytes(&full[..cut], &DecodeLimits::default()).unwrap_err()
            );
            assert!(err.contains("truncated"), "{err}");
        }
    }

    #[test]
    fn pixel_counts_parse_with_suffixes() {
        assert_eq!(DecodeLimits::parse_pixels("7").unwrap(), 7);
        assert_eq!(DecodeLimits::parse_pixels("64M").unwrap(), 64_000_000);
        assert_eq!(DecodeLimits::parse_pixels(" 2k ").unwrap(), 2_000);
        assert_eq!(DecodeLimits::parse_pixels("1G").unwrap(), 1_000_000_000);
        for bad in ["0", "", "-1", "1.5M", "M", "lots", "99999999999999999999G"] {
            assert!(DecodeLimits::parse_pixels(bad).is_err(), "{bad}");
        }
        // the allocation limit: 8 bytes per pixel, at least 512 MiB
        assert_eq!(DecodeLimits { max_pixels: 10 }.max_alloc(), 512 << 20);
        assert_eq!(
            DecodeLimits {
                max_pixels: 100_000_000
            }
            .max_alloc(),
            800_000_000
        );
        assert_eq!(DecodeLimits::default().max_alloc(), 512 << 20);
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused_from_the_header() {
        let png = encode(&RgbImage::new(100, 60), ImageFormat::Png);
        let small = DecodeLimits { max_pixels: 5_999 };
        let msg = format!("{:#}", decode_bytes(&png, &small).unwrap_err());
        assert!(
            msg.contains("100x60") && msg.contains("max_pixels limit"),
            "{msg}"
        );
        let exact = DecodeLimits { max_pixels: 6_000 };
        assert_eq!(decode_bytes(&png, &exact).unwrap().dimensions(), (100, 60));
    }
}
