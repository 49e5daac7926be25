//! `ferrograd features`: the lecture's slide "Producing Feature Maps", and grayscale PNG output.
//!
//! Dimension names: N images, C channels in, O filters (channels out), H × W pixels, K × K filter.

use crate::CliResult;
use ferrograd::{DType, Error, Tensor};
use ferrograd_nn::trainer::plot::image_grid;
use std::path::Path;

/// The slide's 3 × 3 filters, in the order of its pictures, named as the files they make.
pub const FILTERS: [(&str, [f32; 9]); 4] = [
    ("original", [0., 0., 0., 0., 1., 0., 0., 0., 0.]),
    ("sharpen", [0., -1., 0., -1., 5., -1., 0., -1., 0.]),
    ("edge_detect", [0., 1., 0., 1., -4., 1., 0., 1., 0.]),
    ("strong_edge_detect", [-1., -1., -1., -1., 8., -1., -1., -1., -1.]),
];

/// Images wider or taller than this are refused rather than decoded.
pub const MAX_SIDE: u32 = 4096;

/// Reads a PNG or JPEG `image`, applies the [`FILTERS`] and writes one PNG per map into `out`:
/// original.png, sharpen.png, edge_detect.png, strong_edge_detect.png, each as large as the
/// image. The edge maps show |response| so edges of both signs are bright on black.
pub fn run(image: &Path, out: &Path) -> CliResult<()> {
    let gray = read_gray(image)?; // (1, 1, H, W)
    std::fs::create_dir_all(out)
        .map_err(|e| Error::io("features", format!("cannot create {}: {e}", out.display())))?;
    let mut shown = Vec::new();
    for (name, map) in feature_maps(&gray)? {
        let mut values = map.to_vec::<f32>()?;
        if name.contains("edge") {
            values.iter_mut().for_each(|v| *v = v.abs());
        }
        let map = Tensor::from_vec(values, map.dims())?;
        let path = out.join(format!("{name}.png"));
        save_gray_png(&map, &path)?;
        println!("wrote {} ({}×{})", path.display(), map.dims()[2], map.dims()[1]);
        shown.push((name, map));
    }
    // The titled figure draws a rectangle per run of pixels: only for images it stays small in.
    if gray.dims()[2].max(gray.dims()[3]) <= 512 {
        let path = out.join("feature_maps.svg");
        save_maps_svg(&shown, "the lecture's filters on the image (|response| for edges)", &path)?;
        println!("wrote {} (the maps side by side, titled)", path.display());
    }
    Ok(())
}

/// A PNG or JPEG file as a (1, 1, H, W) f32 tensor of gray levels in [0, 1].
fn read_gray(path: &Path) -> ferrograd::Result<Tensor> {
    const OP: &str = "features";
    let shown = path.display();
    let reader = || {
        image::ImageReader::open(path)
            .map_err(|e| Error::io(OP, format!("cannot read {shown}: {e}")))?
            .with_guessed_format()
            .map_err(|e| Error::io(OP, format!("cannot read {shown}: {e}")))
    };
    let undecodable = |e: image::ImageError| {
        Error::io(OP, format!("{shown} is not a PNG or JPEG image this can decode: {e}"))
    };
    let (w, h) = reader()?.into_dimensions().map_err(undecodable)?; // header only
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(Error::value(
            OP,
            format!(
                "{shown} is {w}×{h} pixels; images larger than {MAX_SIDE}×{MAX_SIDE} are refused"
            ),
        ));
    }
    let luma = reader()?.decode().map_err(undecodable)?.to_luma32f(); // [0, 1]
    Tensor::from_vec(luma.into_raw(), &[1, 1, h as usize, w as usize])
}

/// The [`FILTERS`]' maps of a (1, 1, H, W) grayscale image, by name, each (1, H, W) f32: one
/// conv2d with 4 output channels, padded by 1 so the maps keep the image's size. The values are
/// the raw responses (sharpen overshoots [0, 1], edge detect is signed).
pub fn feature_maps(gray: &Tensor) -> ferrograd::Result<Vec<(&'static str, Tensor)>> {
    let d = gray.dims();
    if d.len() != 4 || d[..2] != [1, 1] {
        return Err(Error::shape(
            "feature_maps",
            format!("expects one grayscale image (1, 1, H, W), got {:?}", d),
        ));
    }
    let (h, w) = (d[2], d[3]);
    let weights = Tensor::from_vec(FILTERS.iter().flat_map(|f| f.1).collect(), &[4, 1, 3, 3])?;
    let maps = gray.to_dtype(DType::F32)?.conv2d(&weights, None, (1, 1), (1, 1))?; // (1, O, H, W)
    let maps = maps.to_vec::<f32>()?;
    FILTERS
        .iter()
        .zip(maps.chunks(h * w))
        .map(|((name, _), map)| Ok((*name, Tensor::from_vec(map.to_vec(), &[1, h, w])?)))
        .collect()
}

/// Writes an (H, W) or (1, H, W) tensor of gray levels as an 8-bit PNG: 0 black, 1 white,
/// values outside [0, 1] clamped (NaN black).
pub fn save_gray_png(t: &Tensor, path: &Path) -> CliResult<()> {
    let (h, w) = match *t.dims() {
        [h, w] | [1, h, w] => (h, w),
        _ => {
            return Err(Error::shape(
                "save_gray_png",
                format!("expects an (H, W) or (1, H, W) image, got {:?}", t.dims()),
            )
            .into())
        }
    };
    let pixels = t.to_vec_f64()?.into_iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
    write_png(w, h, pixels.collect(), path)
}

/// Draws first-layer filters (O, 1, KH, KW) as one SVG figure under `title`, each filter
/// named ("filter 1", …), `scale` pixels a weight, and min-max normalized on its own (its
/// lowest weight black, its highest white).
pub fn save_filters_svg(weights: &Tensor, title: &str, path: &Path, scale: u32) -> CliResult<()> {
    const OP: &str = "save_filters_svg";
    let (o, kh, kw) = match *weights.dims() {
        [o, 1, kh, kw] if o > 0 && kh > 0 && kw > 0 => (o, kh, kw),
        _ => {
            let msg =
                format!("expects (O, 1, KH, KW) filters of one channel, got {:?}", weights.dims());
            return Err(Error::shape(OP, msg).into());
        }
    };
    let values = weights.to_dtype(DType::F32)?.to_vec::<f32>()?;
    let panels: Vec<_> = values
        .chunks(kh * kw)
        .enumerate()
        .map(|(i, f)| (format!("filter {}", i + 1), f.to_vec(), kh, kw))
        .collect();
    let per_row = (1..=o).find(|c| c * c >= o).unwrap_or(o); // ⌈√O⌉
    Ok(image_grid(path, title, &panels, scale, per_row)?)
}

/// Draws named (1, H, W) maps side by side as one SVG figure under `title`, each scaled up
/// to about 192 pixels and normalized on its own.
pub fn save_maps_svg(maps: &[(&str, Tensor)], title: &str, path: &Path) -> CliResult<()> {
    let mut panels = Vec::new();
    for (name, m) in maps {
        let d = m.dims();
        let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
        panels.push((name.replace('_', " "), m.to_dtype(DType::F32)?.to_vec::<f32>()?, h, w));
    }
    let side = panels.iter().map(|p| p.2.max(p.3)).max().unwrap_or(1);
    let scale = (192 / side).clamp(1, 8) as u32;
    Ok(image_grid(path, title, &panels, scale, 4)?)
}

fn write_png(w: usize, h: usize, pixels: Vec<u8>, path: &Path) -> CliResult<()> {
    let img = image::GrayImage::from_raw(w as u32, h as u32, pixels)
        .ok_or_else(|| Error::shape("png", format!("{w}×{h} pixels do not fit the buffer")))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::io("png", format!("cannot write {}: {e}", path.display())).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrograd-features-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn maps_of(pixels: Vec<f32>, h: usize, w: usize) -> Vec<(&'static str, Vec<f32>)> {
        let gray = Tensor::from_vec(pixels, &[1, 1, h, w]).unwrap();
        let maps = feature_maps(&gray).unwrap();
        maps.into_iter().map(|(n, t)| (n, t.to_vec::<f32>().unwrap())).collect()
    }

    #[test]
    fn constant_image_has_no_edges_inside() {
        let maps = maps_of(vec![0.5; 25], 5, 5);
        let names: Vec<_> = maps.iter().map(|m| m.0).collect();
        assert_eq!(names, ["original", "sharpen", "edge_detect", "strong_edge_detect"]);
        let at = |m: usize, r: usize, c: usize| maps[m].1[r * 5 + c];
        for (r, c) in [(1, 1), (2, 2), (3, 2)] {
            assert_eq!(at(0, r, c), 0.5); // identity
            assert_eq!(at(1, r, c), 0.5); // sharpen keeps flat regions
            assert_eq!(at(2, r, c), 0.0);
            assert_eq!(at(3, r, c), 0.0);
        }
        // at the border the zero padding is an edge: corner 0.5·(-4 + 2) for edge detect
        assert_eq!(at(2, 0, 0), -1.0);
        assert_eq!(at(3, 0, 0), 0.5 * (8.0 - 3.0));
    }

    #[test]
    fn a_bright_dot_gives_the_filters_back() {
        // One lit pixel in the middle: each map is its filter (cross-correlation), centred there.
        let mut pixels = vec![0.0; 25];
        pixels[12] = 1.0;
        for ((name, map), (_, filter)) in maps_of(pixels, 5, 5).iter().zip(FILTERS) {
            for r in 1..4 {
                for c in 1..4 {
                    let want = filter[(3 - r) * 3 + (3 - c)]; // flipped, though all are symmetric
                    assert_eq!(map[r * 5 + c], want, "{name} at ({r}, {c})");
                }
            }
            assert_eq!(map[0], 0.0, "{name} away from the dot");
        }
    }

    #[test]
    fn feature_maps_wants_one_gray_image() {
        let rgb = Tensor::from_vec(vec![0.0f32; 3 * 16], &[1, 3, 4, 4]).unwrap();
        let err = feature_maps(&rgb).unwrap_err().to_string();
        let f64_gray = Tensor::from_vec(vec![0.25f64; 9], &[1, 1, 3, 3]).unwrap();
        assert_eq!(feature_maps(&f64_gray).unwrap()[0].1.to_vec::<f32>().unwrap(), [0.25; 9]);
        assert!(err.contains("(1, 1, H, W)") && err.contains("[1, 3, 4, 4]"), "{err}");
    }

    #[test]
    fn png_round_trip_keeps_size_and_levels() {
        let path = tmp("round_trip.png");
        let t = Tensor::from_vec(vec![0.0f32, 0.5, 1.0, 2.0, -1.0, f32::NAN], &[1, 2, 3]).unwrap();
        save_gray_png(&t, &path).unwrap();
        let back = image::open(&path).unwrap().to_luma8();
        assert_eq!(back.dimensions(), (3, 2)); // (W, H)
        assert_eq!(back.into_raw(), [0, 128, 255, 255, 0, 0]);
        let err = save_gray_png(&Tensor::from_vec(vec![0.0f32; 8], &[2, 2, 2]).unwrap(), &path);
        assert!(err.unwrap_err().to_string().contains("[2, 2, 2]"));
    }

    #[test]
    fn filters_are_drawn_titled_in_a_grid() {
        let path = tmp("filters.svg");
        let w = Tensor::from_vec((0..45).map(|i| i as f32).collect(), &[5, 1, 3, 3]).unwrap();
        save_filters_svg(&w, "learned filters", &path, 4).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.contains("learned filters")
                && svg.contains("filter 5")
                && !svg.contains("filter 6")
        );
        assert!(save_filters_svg(&w, "t", &path, 0).is_err());
        let rgb = Tensor::from_vec(vec![0.0f32; 27], &[1, 3, 3, 3]).unwrap();
        assert!(save_filters_svg(&rgb, "t", &path, 4)
            .unwrap_err()
            .to_string()
            .contains("[1, 3, 3, 3]"));
    }

    #[test]
    fn run_writes_the_four_maps_of_a_png_or_a_jpeg() {
        let image = tmp("picture.png");
        save_gray_png(&ferrograd_data::glyphs::picture(48), &image).unwrap();
        let out = tmp("maps");
        run(&image, &out).unwrap();
        let figure = std::fs::read_to_string(out.join("feature_maps.svg")).unwrap();
        assert!(figure.contains("sharpen") && figure.contains("strong edge detect"));
        let original = image::open(out.join("original.png")).unwrap().to_luma8();
        assert_eq!(original, image::open(&image).unwrap().to_luma8()); // identity, [0, 1] kept
        let jpeg = tmp("picture.jpg"); // in colour, 64 × 48
        image::RgbImage::from_pixel(64, 48, image::Rgb([200, 30, 90])).save(&jpeg).unwrap();
        run(&jpeg, &tmp("maps_jpeg")).unwrap();
        for (dir, size) in [("maps", (48, 48)), ("maps_jpeg", (64, 48))] {
            for (name, _) in FILTERS {
                let map = image::open(tmp(dir).join(format!("{name}.png"))).unwrap();
                assert_eq!((map.width(), map.height()), size, "{dir}/{name}");
            }
        }
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let out = tmp("never");
        let missing = run(Path::new("/nonexistent/cat.png"), &out).unwrap_err().to_string();
        assert!(missing.contains("cannot read /nonexistent/cat.png"), "{missing}");

        let garbage = tmp("garbage.png");
        std::fs::write(&garbage, b"not an image at all").unwrap();
        let err = run(&garbage, &out).unwrap_err().to_string();
        assert!(err.contains("garbage.png is not a PNG or JPEG"), "{err}");

        let huge = tmp("huge.png");
        image::GrayImage::new(4097, 2).save(&huge).unwrap();
        let err = run(&huge, &out).unwrap_err().to_string();
        assert!(err.contains("4097×2") && err.contains("4096×4096"), "{err}");

        let image = tmp("small.png");
        save_gray_png(&ferrograd_data::glyphs::picture(8), &image).unwrap();
        let file_as_dir = tmp("a_file");
        std::fs::write(&file_as_dir, b"").unwrap();
        let err = run(&image, &file_as_dir.join("sub")).unwrap_err().to_string();
        assert!(err.contains("cannot create"), "{err}");
        let err = save_gray_png(&ferrograd_data::glyphs::picture(4), &file_as_dir.join("x.png"));
        assert!(err.unwrap_err().to_string().contains("cannot write"));
    }
}
