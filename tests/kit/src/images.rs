//! Image files written at test time.

use std::io::Cursor;

use image::{ImageBuffer, ImageFormat};

/// Encodes any image buffer in `fmt`.
pub fn encode<P, C>(img: &ImageBuffer<P, C>, fmt: ImageFormat) -> Vec<u8>
where
    P: image::Pixel + image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).unwrap();
    out.into_inner()
}
