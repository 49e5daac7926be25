//! Drawing results people would rather see than read, as SVG: training curves, heat maps
//! with their labels (attention), and titled pictures side by side (feature maps, filters).

use plotters::prelude::*;
use std::path::Path;

/// Plotters' errors come in many types; callers only show them.
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Line colours in turn (matplotlib's first eight "tab" colours: all readable on white).
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// One curve of a chart: its legend entry and its (x, y) points, in the order to join them.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Writes an SVG line chart of `series` (one colour each, with a legend) to `path`, the axes
/// fitted to all finite points. A non-finite point (NaN, ±∞: a diverged loss) breaks its line
/// there, a point left alone is a dot; an empty series keeps its legend entry; no points at all
/// give empty unit axes.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> ferrograd::Result<()> {
    draw_line_chart(path, title, x_label, y_label, series)
        .map_err(|e| ferrograd::Error::io("line_chart", format!("{}: {e}", path.display())))
}

fn draw_line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> DrawResult {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let all = || series.iter().flat_map(|s| s.points.iter().copied().filter(finite));
    let x = span(all().map(|p| p.0), 0.0);
    let y = span(all().map(|p| p.1), 0.05);

    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        // The legend entry, then the line in pieces between non-finite points (a lone point a dot).
        chart
            .draw_series(LineSeries::new(std::iter::empty(), style))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        for piece in s.points.split(|p| !finite(p)) {
            match piece {
                [] => continue,
                [dot] => chart.draw_series([Circle::new(*dot, 3, color.filled())])?, // alone
                _ => chart.draw_series(LineSeries::new(piece.iter().copied(), style))?,
            };
        }
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    drop(chart);
    root.present().map_err(|e| format!("cannot write: {e}"))?;
    Ok(())
}

/// The range (lo, hi) of `values` widened by `pad` of its width on each side; (0, 1) for no
/// values, ±0.5 around a single value.
fn span(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo - pad * (hi - lo), hi + pad * (hi - lo))
    }
}

/// Viridis at five stops, interpolated: dark blue (low) to yellow (high), readable in gray.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A label readable on an axis: a space as `␣`, a newline as `⏎`.
fn visible(label: &str) -> String {
    label.replace(' ', "␣").replace('\n', "⏎")
}

/// Writes an SVG heat map of `values` (`rows` × `cols`, row-major) to `path`: each row and
/// column named by its label (`row_title` and `col_title` say what they are), and a colour
/// scale from the smallest value to the largest — an attention map with its tokens, say.
pub fn heatmap(
    path: &Path,
    title: &str,
    (row_title, row_labels): (&str, &[String]),
    (col_title, col_labels): (&str, &[String]),
    values: &[f32],
) -> ferrograd::Result<()> {
    draw_heatmap(path, title, (row_title, row_labels), (col_title, col_labels), values)
        .map_err(|e| ferrograd::Error::io("heatmap", format!("{}: {e}", path.display())))
}

fn draw_heatmap(
    path: &Path,
    title: &str,
    (row_title, row_labels): (&str, &[String]),
    (col_title, col_labels): (&str, &[String]),
    values: &[f32],
) -> DrawResult {
    let (rows, cols) = (row_labels.len(), col_labels.len());
    if values.len() != rows * cols || rows == 0 || cols == 0 {
        return Err(format!(
            "heatmap: {} values for {rows} row and {cols} column labels",
            values.len()
        )
        .into());
    }
    let cell = (480 / rows.max(cols)).clamp(8, 40) as i32;
    let longest = |l: &[String]| l.iter().map(|s| visible(s).chars().count()).max().unwrap_or(1);
    let rotate = longest(col_labels) > 2;
    let left = 40 + 8 * longest(row_labels) as i32;
    let bottom = if rotate { 30 + 8 * longest(col_labels) as i32 } else { 50 };
    let (top, bar) = (50, 90);
    let w = (left + cell * cols as i32 + bar + 20).max(left + 9 * title.chars().count() as i32);
    let h = top + cell * rows as i32 + bottom;
    let root = SVGBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let font = |size: i32| ("sans-serif", size).into_font();
    root.draw_text(title, &font(18).color(&BLACK), (left, 14))?;
    let (lo, hi) = values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo as f64, hi as f64) };
    let norm = |v: f64| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
    for r in 0..rows {
        for c in 0..cols {
            let (x, y) = (left + c as i32 * cell, top + r as i32 * cell);
            let color = viridis(norm(values[r * cols + c] as f64));
            root.draw(&Rectangle::new([(x, y), (x + cell, y + cell)], color.filled()))?;
        }
    }
    let small = font(12.min(cell.max(9)));
    for (r, label) in row_labels.iter().enumerate() {
        let y = top + r as i32 * cell + cell / 2 - 6;
        let text = visible(label);
        root.draw_text(
            &text,
            &small.color(&BLACK),
            (left - 6 - 7 * text.chars().count() as i32, y),
        )?;
    }
    for (c, label) in col_labels.iter().enumerate() {
        let x = left + c as i32 * cell + cell / 2;
        let y = top + rows as i32 * cell + 4;
        if rotate {
            let style = small.transform(FontTransform::Rotate90).color(&BLACK);
            root.draw_text(&visible(label), &style, (x + 6, y))?;
        } else {
            root.draw_text(&visible(label), &small.color(&BLACK), (x - 4, y))?;
        }
    }
    root.draw_text(
        col_title,
        &font(14).color(&BLACK),
        (left + cell * cols as i32 / 2 - 20, h - 20),
    )?;
    let side = font(14).transform(FontTransform::Rotate270).color(&BLACK);
    root.draw_text(row_title, &side, (8, top + cell * rows as i32 / 2 + 20))?;
    // The colour scale: low at the bottom, high at the top, three values marked.
    let (bx, height) = (left + cell * cols as i32 + 20, cell * rows as i32);
    for i in 0..height {
        let color = viridis(1.0 - i as f64 / (height - 1).max(1) as f64);
        root.draw(&Rectangle::new([(bx, top + i), (bx + 16, top + i + 1)], color.filled()))?;
    }
    for (f, v) in [(0.0, hi), (0.5, (lo + hi) / 2.0), (1.0, lo)] {
        let y = top + (f * (height - 1) as f64) as i32;
        root.draw_text(&format!("{v:.2}"), &font(11).color(&BLACK), (bx + 20, y - 5))?;
    }
    root.present().map_err(|e| format!("cannot write: {e}"))?;
    Ok(())
}

/// Writes pictures side by side to an SVG at `path`, each `[H, W]` in `panels` drawn `scale`
/// pixels a pixel in gray (its own smallest value black, largest white) under its name, the
/// figure under `title`: feature maps, learned filters.
pub fn image_grid(
    path: &Path,
    title: &str,
    panels: &[(String, Vec<f32>, usize, usize)],
    scale: u32,
    per_row: usize,
) -> ferrograd::Result<()> {
    draw_image_grid(path, title, panels, scale, per_row)
        .map_err(|e| ferrograd::Error::io("image_grid", format!("{}: {e}", path.display())))
}

fn draw_image_grid(
    path: &Path,
    title: &str,
    panels: &[(String, Vec<f32>, usize, usize)],
    scale: u32,
    per_row: usize,
) -> DrawResult {
    if panels.is_empty() || scale == 0 || per_row == 0 {
        return Err(format!(
            "image_grid: {} panels at scale {scale}, {per_row} a row",
            panels.len()
        )
        .into());
    }
    for (name, v, h, w) in panels {
        if v.len() != h * w {
            return Err(format!("image_grid: {name} has {} values, not {h}×{w}", v.len()).into());
        }
    }
    let s = scale as i32;
    let (ph, pw) =
        panels.iter().fold((0, 0), |(a, b), (_, _, h, w)| (a.max(*h as i32), b.max(*w as i32)));
    let (gap, caption, top) = (16, 22, 44);
    let per_row = per_row.min(panels.len());
    let lines = panels.len().div_ceil(per_row) as i32;
    let width = gap + per_row as i32 * (pw * s + gap);
    let height = top + lines * (ph * s + caption + gap);
    // Wide enough for the title too (about 9 pixels a character at 18 points).
    let width = width.max(2 * gap + 9 * title.chars().count() as i32);
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw_text(title, &("sans-serif", 18).into_font().color(&BLACK), (gap, 14))?;
    for (i, (name, v, h, w)) in panels.iter().enumerate() {
        let (x0, y0) = (
            gap + (i % per_row) as i32 * (pw * s + gap),
            top + (i / per_row) as i32 * (ph * s + caption + gap),
        );
        root.draw_text(name, &("sans-serif", 13).into_font().color(&BLACK), (x0, y0))?;
        let y0 = y0 + caption;
        let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let level =
            |x: f32| if hi > lo { (((x - lo) / (hi - lo)) * 63.0).round() as u8 } else { 32 };
        for r in 0..*h {
            // Runs of one gray level are one rectangle: a flat region is not a thousand.
            let mut c = 0;
            while c < *w {
                let g = level(v[r * w + c]);
                let mut end = c + 1;
                while end < *w && level(v[r * w + end]) == g {
                    end += 1;
                }
                let gray = (g as u32 * 255 / 63) as u8;
                let (x, y) = (x0 + c as i32 * s, y0 + r as i32 * s);
                let rect = [(x, y), (x0 + end as i32 * s, y + s)];
                root.draw(&Rectangle::new(rect, RGBColor(gray, gray, gray).filled()))?;
                c = end;
            }
        }
        let frame = [(x0, y0), (x0 + *w as i32 * s, y0 + *h as i32 * s)];
        root.draw(&Rectangle::new(frame, BLACK.stroke_width(1)))?;
    }
    root.present().map_err(|e| format!("cannot write: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ferrograd-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series { name: name.into(), points }
    }

    #[test]
    fn writes_an_svg_with_title_labels_and_legend() {
        let path = tmp("loss.svg");
        let train: Vec<_> = (0..20).map(|e| (e as f64, 2.0 / (1.0 + e as f64))).collect();
        let held_out: Vec<_> = (0..20).map(|e| (e as f64, 2.2 / (1.0 + e as f64))).collect();
        let curves = [series("training loss", train), series("held-out loss", held_out)];
        line_chart(&path, "Loss <by epoch>", "epoch", "loss", &curves).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in ["Loss &lt;by epoch&gt;", "epoch", "loss", "training loss", "held-out loss"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(svg.matches("<polyline").count() >= 2);
    }

    #[test]
    fn empty_and_nan_series_do_not_panic() {
        let path = tmp("odd.svg");
        line_chart(&path, "nothing", "x", "y", &[]).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("nothing"));
        let diverged =
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 0.5), (3.0, 0.4), (f64::INFINITY, 1.0)];
        let odd = [
            series("empty", vec![]),
            series("all NaN", vec![(0.0, f64::NAN), (f64::NAN, 1.0)]),
            series("diverged", diverged),
            series("flat", vec![(5.0, 3.0)]),
        ];
        line_chart(&path, "odd", "x", "y", &odd).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("all NaN") && svg.contains("diverged") && !svg.contains("NaN\""));
        line_chart(&tmp("only_nan.svg"), "only NaN", "x", "y", &odd[..2]).unwrap();
    }

    #[test]
    fn a_bad_path_is_an_error() {
        let path = Path::new("/nonexistent/dir/loss.svg");
        let err = line_chart(path, "t", "x", "y", &[series("a", vec![(0.0, 1.0)])]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/dir/loss.svg"), "{err}");
    }

    #[test]
    fn spans_fit_the_points() {
        assert_eq!(span([].into_iter(), 0.05), (0.0, 1.0));
        assert_eq!(span([2.0].into_iter(), 0.05), (1.5, 2.5));
        assert_eq!(span([1.0, 3.0].into_iter(), 0.5), (0.0, 4.0));
    }

    #[test]
    fn a_heatmap_names_its_rows_and_columns_and_has_a_scale() {
        let path = tmp("attention.svg");
        let tokens: Vec<String> = ["T", "h", "e", " "].iter().map(|s| s.to_string()).collect();
        let values: Vec<f32> = (0..16).map(|i| i as f32 / 15.0).collect();
        heatmap(&path, "head 0", ("query", &tokens), ("key", &tokens), &values).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        for text in ["head 0", "query", "key", "␣", "1.00", "0.50", "0.00"] {
            assert!(svg.contains(text), "{text} missing");
        }
        let err = heatmap(&path, "t", ("q", &tokens), ("k", &tokens[..2]), &values).unwrap_err();
        assert!(err.to_string().contains("16 values for 4 row and 2 column labels"), "{err}");
    }

    #[test]
    fn an_image_grid_titles_each_panel_and_merges_flat_runs() {
        let path = tmp("maps.svg");
        let flat = ("flat".to_string(), vec![0.0f32; 64], 8, 8);
        let ramp = ("ramp".to_string(), (0..64).map(|i| i as f32).collect(), 8, 8);
        image_grid(&path, "feature maps", &[flat, ramp], 4, 2).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("feature maps") && svg.contains("flat") && svg.contains("ramp"));
        // A flat 8×8 panel is 8 rectangles (one a row), the ramp 64, plus two frames.
        assert_eq!(svg.matches("<rect").count(), 1 + 8 + 64 + 2, "{svg}");
        let bad = ("bad".to_string(), vec![0.0f32; 3], 2, 2);
        assert!(image_grid(&path, "t", &[bad], 4, 1)
            .unwrap_err()
            .to_string()
            .contains("bad has 3 values"));
    }
}
