//! Drawing results people would rather see than read: training curves, as SVG line charts.

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
    root.present().map_err(|e| format!("line_chart: cannot write {}: {e}", path.display()))?;
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
}
