//! Generated images for the tour and tests, no download: shapes to classify, a test picture.

use ferrograd::{Error, Result, Rng, Tensor};

/// The classes of [`shapes`], by label.
pub const SHAPES: [&str; 6] =
    ["horizontal bar", "vertical bar", "plus", "square", "diagonal", "ring"];

/// `n` noisy (n, 1, size, size) f32 images in [0, 1] of one of the [`SHAPES`] each, drawn at a
/// random place, size, thickness and brightness, and their (n,) i64 labels: example `i` has
/// label `i % 6`, so the classes are balanced. `size` is at least 8; 28 is MNIST's.
///
/// The shapes move, so a model must find strokes wherever they are: on 6,000 training images of
/// 28 × 28 (30 epochs of SGD, batches of 64), a linear model on raw pixels holds out about 82%,
/// a 784-256-6 ReLU network about 97%; a CNN, whose filters find strokes anywhere, is the
/// model it is made for.
///
/// ```
/// let mut rng = ferrograd::Rng::seed(0);
/// let (x, y) = ferrograd_data::glyphs::shapes(12, 16, &mut rng).unwrap();
/// assert_eq!((x.dims(), y.dims()), (&[12, 1, 16, 16][..], &[12][..]));
/// assert_eq!(y.to_vec::<i64>().unwrap()[..7], [0, 1, 2, 3, 4, 5, 0]);
/// ```
pub fn shapes(n: usize, size: usize, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    if size < 8 {
        return Err(Error::value(
            "shapes",
            format!("images need a size of at least 8, got {size}"),
        ));
    }
    let s = size as f64;
    let mut pixels = Vec::with_capacity(n * size * size);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % SHAPES.len();
        let half = s * (0.18 + 0.17 * rng.uniform()); // half the shape's extent, in pixels
        let width = (0.6 + 0.6 * rng.uniform()) * (s / 28.0).max(1.0); // half the stroke's
        let margin = half + width + 1.0;
        let mut at = || margin + (s - 2.0 * margin).max(0.0) * rng.uniform();
        let (x, y) = (at(), at()); // the centre
        let (l, r, t, b) = (x - half, x + half, y - half, y + half);
        let strokes = match class {
            0 => vec![Stroke::Line(l, y, r, y)],
            1 => vec![Stroke::Line(x, t, x, b)],
            2 => vec![Stroke::Line(l, y, r, y), Stroke::Line(x, t, x, b)],
            3 => {
                let (l, r, t, b) = (x - 0.8 * half, x + 0.8 * half, y - 0.8 * half, y + 0.8 * half);
                let sides = [(l, t, r, t), (r, t, r, b), (r, b, l, b), (l, b, l, t)];
                sides.map(|(x0, y0, x1, y1)| Stroke::Line(x0, y0, x1, y1)).into()
            }
            4 if rng.below(2) == 0 => vec![Stroke::Line(l, t, r, b)],
            4 => vec![Stroke::Line(l, b, r, t)],
            _ => vec![Stroke::Ring(x, y, half)],
        };
        let brightness = 0.8 + 0.2 * rng.uniform();
        for row in 0..size {
            for col in 0..size {
                let (px, py) = (col as f64 + 0.5, row as f64 + 0.5);
                let d = strokes.iter().map(|k| k.distance(px, py)).fold(f64::INFINITY, f64::min);
                let ink = (width + 0.5 - d).clamp(0.0, 1.0); // 1 on the stroke, 1 px to fade out
                pixels.push((brightness * ink + 0.1 * rng.normal()).clamp(0.0, 1.0) as f32);
            }
        }
        labels.push(class as i64);
    }
    Ok((Tensor::from_vec(pixels, &[n, 1, size, size])?, Tensor::from_vec(labels, &[n])?))
}

/// A stroke of a glyph, in pixel coordinates (x right, y down).
enum Stroke {
    /// The segment from (x0, y0) to (x1, y1).
    Line(f64, f64, f64, f64),
    /// The circle around (x, y) of radius r.
    Ring(f64, f64, f64),
}

impl Stroke {
    fn distance(&self, px: f64, py: f64) -> f64 {
        match *self {
            Stroke::Line(x0, y0, x1, y1) => {
                let (dx, dy) = (x1 - x0, y1 - y0);
                let len2 = (dx * dx + dy * dy).max(1e-12);
                let t = (((px - x0) * dx + (py - y0) * dy) / len2).clamp(0.0, 1.0);
                (px - x0 - t * dx).hypot(py - y0 - t * dy)
            }
            Stroke::Ring(x, y, r) => ((px - x).hypot(py - y) - r).abs(),
        }
    }
}

/// A fixed grayscale test picture, (1, size, size) f32 in [0, 1], for showing what filters do:
/// a gradient background, a bright rectangle, a grey disc, a white diagonal line and a
/// checkerboard, so that there are edges in every direction, corners, curves and texture.
///
/// ```
/// let p = ferrograd_data::glyphs::picture(32);
/// assert_eq!(p.dims(), &[1, 32, 32]);
/// let v = p.to_vec::<f32>().unwrap();
/// assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
/// assert_eq!(v, ferrograd_data::glyphs::picture(32).to_vec::<f32>().unwrap());
/// ```
pub fn picture(size: usize) -> Tensor {
    let mut pixels = Vec::with_capacity(size * size);
    for row in 0..size {
        for col in 0..size {
            // u right, v down, both in (0, 1)
            let (u, v) = ((col as f64 + 0.5) / size as f64, (row as f64 + 0.5) / size as f64);
            let line = Stroke::Line(0.08, 0.92, 0.92, 0.52).distance(u, v);
            let value = if line < 0.025 {
                1.0
            } else if (0.08..0.45).contains(&u) && (0.1..0.42).contains(&v) {
                0.9
            } else if (u - 0.72).hypot(v - 0.28) < 0.18 {
                0.55
            } else if (0.55..0.91).contains(&u) && (0.62..0.94).contains(&v) {
                let checks = ((u - 0.55) / 0.09) as usize + ((v - 0.62) / 0.08) as usize;
                [0.8, 0.0][checks % 2]
            } else {
                0.1 + 0.25 * u // a soft gradient
            };
            pixels.push(value as f32);
        }
    }
    // `size * size` values always fill (1, size, size)
    Tensor::from_vec(pixels, &[1, size, size]).expect("picture: size² values fill the shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_balanced_bounded_and_reproducible() {
        let (x, y) = shapes(600, 20, &mut Rng::seed(1)).unwrap();
        assert_eq!((x.dims(), y.dims()), (&[600, 1, 20, 20][..], &[600][..]));
        let labels = y.to_vec::<i64>().unwrap();
        let counts: Vec<usize> =
            (0..6).map(|c| labels.iter().filter(|&&l| l == c).count()).collect();
        assert_eq!(counts, vec![100; 6]);
        let pixels = x.to_vec::<f32>().unwrap();
        assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)));
        let (again, _) = shapes(600, 20, &mut Rng::seed(1)).unwrap();
        assert_eq!(pixels, again.to_vec::<f32>().unwrap());
        let (other, _) = shapes(600, 20, &mut Rng::seed(2)).unwrap();
        assert_ne!(pixels, other.to_vec::<f32>().unwrap());
        assert!(shapes(4, 7, &mut Rng::seed(0)).is_err());
        assert_eq!(shapes(0, 8, &mut Rng::seed(0)).unwrap().0.dims(), &[0, 1, 8, 8]);
    }

    #[test]
    fn each_class_draws_its_strokes() {
        // The most bright pixels in one row and in one column tell the shapes apart.
        let size = 28;
        let (x, y) = shapes(60, size, &mut Rng::seed(3)).unwrap();
        let (pixels, labels) = (x.to_vec::<f32>().unwrap(), y.to_vec::<i64>().unwrap());
        for (image, &label) in pixels.chunks(size * size).zip(&labels) {
            let ink = |r: usize, c: usize| image[r * size + c] > 0.35;
            let longest_row = (0..size).map(|r| (0..size).filter(|&c| ink(r, c)).count()).max();
            let longest_col = (0..size).map(|c| (0..size).filter(|&r| ink(r, c)).count()).max();
            let (row, col) = (longest_row.unwrap(), longest_col.unwrap());
            let name = SHAPES[label as usize];
            let ok = match label {
                0 => row >= 9 && col <= 4,
                1 => col >= 9 && row <= 4,
                2 | 3 => row >= 9 && col >= 9,
                4 => row <= 5 && col <= 5,
                _ => (6..=14).contains(&row) && (6..=14).contains(&col),
            };
            assert!(ok, "{name}: {row} bright pixels in a row, {col} in a column");
        }
    }

    #[test]
    fn picture_has_flat_regions_and_edges() {
        let p = picture(64).to_vec::<f32>().unwrap();
        let distinct: std::collections::BTreeSet<u32> = p.iter().map(|v| v.to_bits()).collect();
        assert!(distinct.len() > 10);
        assert_eq!(p[16 * 64 + 16], 0.9); // inside the rectangle
        assert_eq!(p[18 * 64 + 46], 0.55); // inside the disc
        assert_eq!(picture(0).dims(), &[1, 0, 0]);
    }
}
