//! One BEV raster as a PNG for inspection (`deltaplan render-bev`): a colour composite of the
//! channels, then every channel in grey (its bytes as they are), side by side, each pixel
//! drawn as a `SCALE x SCALE` block.

use anyhow::{Context, Result};
use deltaplan_sim::bev::{channel, BevSpec, NUM_CHANNELS};

/// Screen pixels per raster pixel.
pub const SCALE: usize = 4;
/// Gap between tiles, screen pixels.
const GAP: usize = 4;

/// Composite colours, painted in this order (later channels cover earlier ones).
pub const PALETTE: [(usize, [u8; 3]); 8] = [
    (channel::DRIVABLE, [90, 90, 90]),
    (channel::ROUTE, [60, 120, 210]),
    (channel::LANE_BOUNDARIES, [225, 225, 225]),
    (channel::LIGHT_GREEN, [46, 204, 64]),
    (channel::LIGHT_YELLOW, [255, 220, 0]),
    (channel::LIGHT_RED, [255, 65, 54]),
    (channel::VEHICLES, [255, 133, 27]),
    (channel::EGO, [177, 13, 201]),
];
/// Off the road.
pub const BACKGROUND: [u8; 3] = [35, 35, 35];

/// The PNG bytes of `raster` (`[C, H, W]` bytes of `spec`).
pub fn bev_png(spec: &BevSpec, raster: &[u8]) -> Result<Vec<u8>> {
    let (h, w) = (spec.height, spec.width);
    let plane = spec.plane();
    let tile_w = w * SCALE;
    let width = (NUM_CHANNELS + 1) * (tile_w + GAP) - GAP;
    let height = h * SCALE;
    let mut rgb = vec![255u8; width * height * 3];
    let mut put = |tile: usize, r: usize, c: usize, colour: [u8; 3]| {
        for dy in 0..SCALE {
            let y = r * SCALE + dy;
            let x0 = tile * (tile_w + GAP) + c * SCALE;
            for x in x0..x0 + SCALE {
                rgb[(y * width + x) * 3..(y * width + x) * 3 + 3].copy_from_slice(&colour);
            }
        }
    };
    for r in 0..h {
        for c in 0..w {
            let i = r * w + c;
            let colour = PALETTE
                .iter()
                .rev()
                .find(|(ch, _)| raster[ch * plane + i] != 0)
                .map_or(BACKGROUND, |&(_, colour)| colour);
            put(0, r, c, colour);
            for ch in 0..NUM_CHANNELS {
                let v = raster[ch * plane + i];
                put(ch + 1, r, c, [v, v, v]);
            }
        }
    }
    let mut png_bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut png_bytes, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().context("PNG header")?;
        writer.write_image_data(&rgb).context("PNG image data")?;
    }
    Ok(png_bytes)
}
