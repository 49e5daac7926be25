//! What a run records: metrics as the user reports them, and the sinks they go to — CSV and
//! JSON lines (always), TensorBoard event files, and SVG curves.

use super::plot::{line_chart, Series};
use super::tensorboard::{EventWriter, Image};
use crate::distributed::{all_reduce_values, Collective};
use ferrograd::{Error, Result, Tensor};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// Weighted means of named values over some micro-batches, and how many units (images,
/// tokens) they held.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    sums: BTreeMap<String, (f64, f64)>,
    units: u64,
    /// Lines of text shown with an evaluation (a generated sample).
    #[serde(skip)]
    notes: Vec<String>,
    /// What the last loss is a mean over, if the loss said ([`Metrics::mean_over`]).
    #[serde(skip)]
    mean_over: Option<usize>,
}

impl Metrics {
    /// Adds `value` with weight `weight` (the batch's size, say) to the mean named `name`.
    pub fn add(&mut self, name: &str, value: f64, weight: f64) {
        // Looked up before inserting: a name is allocated once, not at every step.
        match self.sums.get_mut(name) {
            Some(s) => {
                s.0 += value * weight;
                s.1 += weight;
            }
            None => {
                self.sums.insert(name.to_string(), (value * weight, weight));
            }
        }
    }
    /// Counts `units` processed, for the throughput.
    pub fn count(&mut self, units: usize) {
        self.units += units as u64;
    }
    /// Says that this micro-batch's loss is a mean over `items` (tokens that are not padding,
    /// say) rather than over its examples: a data-parallel step then weights each rank's share
    /// by its items, and the global step is the mean over all of them, as one process takes
    /// it. Every rank's loss must say it alike.
    pub fn mean_over(&mut self, items: usize) {
        self.mean_over = Some(items);
    }
    pub(crate) fn take_mean_over(&mut self) -> Option<usize> {
        self.mean_over.take()
    }
    /// A line shown under the evaluation's results (a sample the model wrote, say).
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }
    pub fn notes(&self) -> &[String] {
        &self.notes
    }
    pub fn units(&self) -> u64 {
        self.units
    }
    pub fn mean(&self, name: &str) -> Option<f64> {
        self.sums.get(name).map(|(s, w)| s / w)
    }
    pub fn means(&self) -> BTreeMap<String, f64> {
        self.sums.iter().map(|(k, (s, w))| (k.clone(), s / w)).collect()
    }
    pub fn merge(&mut self, other: &Metrics) {
        for (k, (s, w)) in &other.sums {
            let mine = self.sums.entry(k.clone()).or_insert((0.0, 0.0));
            mine.0 += s;
            mine.1 += w;
        }
        self.units += other.units;
    }
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }
    /// The sums over every rank of a data-parallel run (each rank must hold the same names).
    pub fn all_reduced(&self, c: &dyn Collective) -> Result<Metrics> {
        if c.size() == 1 {
            return Ok(self.clone());
        }
        let mut flat: Vec<f64> = self.sums.values().flat_map(|&(s, w)| [s, w]).collect();
        flat.push(self.units as f64);
        all_reduce_values(&mut flat, c)?;
        let sums = self.sums.keys().cloned().zip(flat.chunks(2).map(|p| (p[0], p[1]))).collect();
        let units = flat[flat.len() - 1] as u64;
        Ok(Metrics { sums, units, notes: self.notes.clone(), mean_over: None })
    }
}

/// One line of the metrics log: training means since the last line (`loss`, `lr`, …) or an
/// evaluation's results (`eval_…`), at a step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub step: u64,
    pub epoch: f64,
    #[serde(flatten)]
    pub values: BTreeMap<String, f64>,
}

/// The sinks of one run, and its history so far.
pub struct Log {
    dir: Option<PathBuf>,
    history: Vec<Record>,
    jsonl: Option<File>,
    events: Option<EventWriter>,
    step: u64,
}

impl Log {
    /// Sinks in `dir` (created if missing); `None` keeps the history only. A run resumed at
    /// `resumed_at` keeps the records of `dir/metrics.jsonl` up to that step.
    pub(crate) fn open(dir: Option<&Path>, resumed_at: Option<u64>) -> Result<Log> {
        let Some(dir) = dir else {
            return Ok(Log { dir: None, history: vec![], jsonl: None, events: None, step: 0 });
        };
        let jsonl_path = dir.join("metrics.jsonl");
        let mut history = Vec::new();
        if let (Some(at), Ok(f)) = (resumed_at, File::open(&jsonl_path)) {
            for line in std::io::BufReader::new(f).lines().map_while(|l| l.ok()) {
                if let Ok(r) = serde_json::from_str::<Record>(&line) {
                    if r.step <= at {
                        history.push(r);
                    }
                }
            }
        }
        let mut jsonl = File::create(&jsonl_path).map_err(|e| cannot("create", &jsonl_path, e))?;
        for r in &history {
            writeln!(jsonl, "{}", json(r)).map_err(|e| cannot("write", &jsonl_path, e))?;
        }
        let events = EventWriter::create(dir)?;
        Ok(Log {
            dir: Some(dir.to_path_buf()),
            history,
            jsonl: Some(jsonl),
            events: Some(events),
            step: 0,
        })
    }

    pub(crate) fn at(&mut self, step: u64) {
        self.step = step;
    }

    pub fn history(&self) -> &[Record] {
        &self.history
    }

    /// Records `values` at `step` in every sink; TensorBoard tags are `train/…` and `eval/…`.
    pub(crate) fn record(&mut self, record: Record) -> Result<()> {
        if let (Some(f), Some(dir)) = (&mut self.jsonl, &self.dir) {
            writeln!(f, "{}", json(&record))
                .map_err(|e| cannot("write", &dir.join("metrics.jsonl"), e))?;
        }
        if let Some(w) = &mut self.events {
            let tags: Vec<(String, f64)> = record
                .values
                .iter()
                .map(|(k, v)| match k.strip_prefix("eval_") {
                    Some(name) => (format!("eval/{name}"), *v),
                    None if k == "lr" => (k.clone(), *v),
                    None => (format!("train/{k}"), *v),
                })
                .collect();
            w.scalars(record.step, &tags)?;
        }
        self.history.push(record);
        Ok(())
    }

    /// A picture in the TensorBoard log at the current step: `image` is `[H, W]` (gray) or
    /// `[3, H, W]` (RGB) with values in [0, 1]. Nothing happens without a log folder.
    pub fn image(&mut self, tag: &str, image: &Tensor) -> Result<()> {
        let Some(w) = &mut self.events else { return Ok(()) };
        let (channels, h, wd) = match image.dims() {
            [h, w] => (1, *h, *w),
            [3, h, w] => (3, *h, *w),
            d => {
                return Err(Error::shape(
                    "Log::image",
                    format!("expected [H, W] or [3, H, W], got {d:?}"),
                ))
            }
        };
        let v = image.to_vec_f64()?;
        let byte = |x: f64| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
        // Channels last, as PNG stores them.
        let pixels: Vec<u8> = (0..h * wd)
            .flat_map(|p| (0..channels).map(move |c| (c, p)))
            .map(|(c, p)| byte(v[c * h * wd + p]))
            .collect();
        let mut png = Vec::new();
        let color = if channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &pixels,
            wd as u32,
            h as u32,
            color,
        )
        .map_err(|e| Error::io("Log::image", e.to_string()))?;
        let colorspace = channels as u32;
        w.image(
            self.step,
            Image { tag: tag.into(), height: h as u32, width: wd as u32, colorspace, png },
        )
    }

    /// Pictures `[N, H, W]` (filters, feature maps) tiled into one, each scaled to [0, 1] on
    /// its own, with a one-pixel white gap between them: [`Log::image`] of the grid.
    pub fn image_grid(&mut self, tag: &str, images: &Tensor) -> Result<()> {
        if self.events.is_none() {
            return Ok(());
        }
        let [n, h, w] = *images.dims() else {
            return Err(Error::shape(
                "Log::image_grid",
                format!("expected [N, H, W], got {}", images.shape()),
            ));
        };
        let per_row = (1..=n).find(|c| c * c >= n).unwrap_or(n).max(1);
        let rows = n.div_ceil(per_row);
        let (gh, gw) = (rows * (h + 1) - 1, per_row * (w + 1) - 1);
        let mut grid = vec![1.0f64; gh * gw];
        let v = images.to_vec_f64()?;
        for (i, tile) in v.chunks(h * w).enumerate() {
            let (lo, hi) =
                tile.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let (top, left) = ((i / per_row) * (h + 1), (i % per_row) * (w + 1));
            for (p, &x) in tile.iter().enumerate() {
                let level = if hi > lo { (x - lo) / (hi - lo) } else { 0.5 };
                grid[(top + p / w) * gw + left + p % w] = level;
            }
        }
        self.image(tag, &Tensor::from_vec(grid, &[gh, gw])?)
    }

    /// Rewrites `metrics.csv` (a column per name, empty where a line lacks it) and one SVG
    /// chart per metric: training and held-out curves together.
    pub(crate) fn write_tables_and_curves(&self) -> Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let mut names: Vec<&String> = self.history.iter().flat_map(|r| r.values.keys()).collect();
        names.sort();
        names.dedup();
        let path = dir.join("metrics.csv");
        let mut csv = String::from("step,epoch");
        for n in &names {
            csv.push(',');
            csv.push_str(n);
        }
        csv.push('\n');
        for r in &self.history {
            csv.push_str(&format!("{},{}", r.step, r.epoch));
            for n in &names {
                csv.push(',');
                if let Some(v) = r.values.get(*n) {
                    csv.push_str(&v.to_string());
                }
            }
            csv.push('\n');
        }
        ferrograd::io::write_atomically(&path, csv.as_bytes())?;
        let mut charts: Vec<&str> = names
            .iter()
            .map(|n| n.strip_prefix("eval_").unwrap_or(n))
            .filter(|n| !n.ends_with("_per_s"))
            .collect();
        charts.sort();
        charts.dedup();
        for name in charts {
            let points = |key: &str| -> Vec<(f64, f64)> {
                self.history
                    .iter()
                    .filter_map(|r| Some((r.step as f64, *r.values.get(key)?)))
                    .collect()
            };
            let eval_key = format!("eval_{name}");
            let series: Vec<Series> = [("train", points(name)), ("held-out", points(&eval_key))]
                .into_iter()
                .filter(|(_, p)| !p.is_empty())
                .map(|(n, points)| Series { name: n.into(), points })
                .collect();
            let title = name.replace('_', " ");
            line_chart(&dir.join(format!("{name}.svg")), &title, "step", &title, &series)?;
        }
        Ok(())
    }
}

fn json(r: &Record) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

fn cannot(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io("training log", format!("cannot {what} {}: {e}", path.display()))
}
