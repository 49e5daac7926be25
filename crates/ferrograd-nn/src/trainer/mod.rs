//! One training loop for every model, as Keras' `fit` and Lightning's `Trainer` give it: the
//! user says how a batch becomes a loss (and, if they like, how to evaluate); the Trainer owns
//! the rest — the optimizer and its schedule, gradient accumulation and clipping, evaluation
//! every so often, progress, metric sinks (CSV, JSON lines, TensorBoard), curves, checkpoints
//! that resume to the bit, the worker threads, and hooks where other work plugs in (a
//! reduction of gradients across processes after backward).
//!
//! ```
//! use ferrograd::{DType, Tensor};
//! use ferrograd_nn::optim::{Adam, AdamConfig};
//! use ferrograd_nn::trainer::{Epochs, Progress, Trainer};
//! use ferrograd_nn::{models, Module, ParamStore};
//! let (x, y) = (Tensor::zeros(&[64, 784], DType::F32).unwrap(), Tensor::zeros(&[64], DType::I64).unwrap());
//! let store = ParamStore::new(0);
//! let net = models::feed_forward3(&store, [784, 32, 32, 10]).unwrap();
//! let adam = Adam::new(store.params(), AdamConfig::adam(1e-3)).unwrap();
//! let mut trainer = Trainer::new(&store, adam).epochs(2).progress(Progress::Quiet);
//! let report = trainer
//!     .fit(&mut Epochs::shuffled(64, 16, 0), |rows: Vec<usize>, m| {
//!         let ids = Tensor::from_vec(rows.iter().map(|&i| i as i64).collect(), &[rows.len()])?;
//!         m.count(rows.len());
//!         net.forward(&x.index_select(0, &ids)?)?.cross_entropy(&y.index_select(0, &ids)?, None)
//!     })
//!     .unwrap();
//! assert_eq!(report.end, 8);
//! ```

mod data;
mod log;
pub mod plot;
pub mod tensorboard;

pub use data::{At, Cycle, Data, Draws, Epochs, Sampled, SampledExamples};

pub use log::{Log, Metrics, Record};

use crate::checkpoint::{inspect_checkpoint, load_checkpoint, save_training_checkpoint};
use crate::distributed::{
    all_reduce_gradients, all_reduce_values, broadcast_parameters, check_agreement, check_replicas,
    Collective, Reducing, Sharded, SingleProcess, GRADIENT_PIECES,
};
use crate::optim::{clip_grad_norm, scale_gradients, Optimizer, Schedule};
use crate::{Param, ParamStore};
use ferrograd::{no_grad, Error, Gradients, Result, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// How often something happens in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Every {
    Steps(u64),
    Epochs(u64),
    /// Only at the end of training.
    End,
}

/// How a run shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A bar on a terminal; plain lines on stderr when stderr is not one.
    Bar,
    /// Plain lines on stderr, about ten in a run.
    Lines,
    /// Nothing (hooks print what they like).
    Quiet,
}

/// What a hook after the optimizer step may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// End training after this step (a checkpoint is saved as at a stop).
    Stop,
}

/// A step as hooks see it.
pub struct StepInfo<'m> {
    /// Steps done, this one included.
    pub step: u64,
    pub total: u64,
    /// Epochs done, as a fraction (steps × accumulation ÷ batches per epoch); 0 for streams.
    pub epoch: f64,
    pub lr: f64,
    /// The mean loss of the step's micro-batches.
    pub loss: f64,
    pub metrics: &'m Metrics,
}

impl<'m> StepInfo<'m> {
    fn new(step: u64, total: u64, epoch: f64, lr: f64, metrics: &'m Metrics) -> StepInfo<'m> {
        let loss = metrics.mean("loss").unwrap_or(f64::NAN);
        StepInfo { step, total, epoch, lr, loss, metrics }
    }
}

type BackwardHook<'a> = Box<dyn FnMut(&mut Gradients, &StepInfo) -> Result<()> + Send + 'a>;
type StepHook<'a> = Box<dyn FnMut(&StepInfo, &mut Log) -> Result<Flow> + Send + 'a>;
type EvalHook<'a> = Box<dyn FnMut(u64, &BTreeMap<String, f64>, &mut Log) -> Result<()> + Send + 'a>;

/// How long a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    Steps(u64),
    Epochs(u64),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The step it started from (0, or where a checkpoint left off) and the step it reached.
    pub start: u64,
    pub end: u64,
    pub total: u64,
    /// Seconds spent training (evaluation and checkpoints not counted).
    pub seconds: f64,
    /// Units counted with [`Metrics::count`] per second of training.
    pub units_per_s: f64,
    /// Training means since the last evaluation (the last epoch, when evaluating each epoch).
    pub train: BTreeMap<String, f64>,
    /// The last evaluation's results, without the `eval_` prefix.
    pub eval: BTreeMap<String, f64>,
    pub history: Vec<Record>,
}

impl Report {
    /// Stopped before the end (`stop_after`, or a hook said so).
    pub fn stopped(&self) -> bool {
        self.end < self.total
    }
}

/// One training run of a model's parameters; see the module's documentation.
pub struct Trainer<'a> {
    store: ParamStore,
    params: Vec<Param>,
    optimizer: Box<dyn Optimizer + Send + 'a>,
    base_lr: f64,
    schedule: Schedule,
    length: Length,
    accumulate: usize,
    clip_norm: Option<f64>,
    eval_every: Every,
    log_every: Option<u64>,
    checkpoint: Option<(PathBuf, Every)>,
    config: serde_json::Value,
    data_settings: serde_json::Value,
    resume: Option<PathBuf>,
    out: Option<PathBuf>,
    inputs: Vec<PathBuf>,
    progress: Progress,
    title: String,
    unit: String,
    stop_after: Option<u64>,
    step: u64,
    after_backward: Vec<BackwardHook<'a>>,
    after_step: Vec<StepHook<'a>>,
    on_eval: Vec<EvalHook<'a>>,
    collective: Arc<dyn Collective>,
    overlap: bool,
    shard_optimizer: bool,
}

impl<'a> Trainer<'a> {
    /// Trains `store`'s parameters with `optimizer`, whose learning rate is the base rate the
    /// schedule scales. By default: one epoch, a constant rate, no clipping, a progress bar,
    /// no files written.
    pub fn new(store: &ParamStore, optimizer: impl Optimizer + Send + 'a) -> Trainer<'a> {
        let base_lr = optimizer.lr();
        Trainer {
            store: store.clone(),
            params: store.params(),
            optimizer: Box::new(optimizer),
            base_lr,
            schedule: Schedule::Constant,
            length: Length::Epochs(1),
            accumulate: 1,
            clip_norm: None,
            eval_every: Every::End,
            log_every: None,
            checkpoint: None,
            config: serde_json::Value::Null,
            data_settings: serde_json::Value::Null,
            resume: None,
            out: None,
            inputs: vec![],
            progress: Progress::Bar,
            title: "step".into(),
            unit: "examples".into(),
            stop_after: None,
            step: 0,
            after_backward: vec![],
            after_step: vec![],
            on_eval: vec![],
            collective: Arc::new(SingleProcess),
            overlap: false,
            shard_optimizer: true,
        }
    }

    /// Train for `n` optimizer steps.
    pub fn steps(mut self, n: u64) -> Self {
        self.length = Length::Steps(n);
        self
    }
    /// Train for `n` passes over the data (which must have epochs).
    pub fn epochs(mut self, n: u64) -> Self {
        self.length = Length::Epochs(n);
        self
    }
    /// The learning rate at each step: `schedule` applied to the optimizer's rate.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }
    /// Sum the gradients of `k` micro-batches (their mean, as of one batch `k`× as large)
    /// before each optimizer step.
    pub fn accumulate(mut self, k: usize) -> Self {
        self.accumulate = k;
        self
    }
    /// Scale the gradients to global L2 norm `max_norm` when above it (after the hooks).
    pub fn clip_grad_norm(mut self, max_norm: f64) -> Self {
        self.clip_norm = Some(max_norm);
        self
    }
    pub fn evaluate_every(mut self, every: Every) -> Self {
        self.eval_every = every;
        self
    }
    /// A line of training metrics every `n` steps (default: about 200 lines in a run).
    pub fn log_every(mut self, n: u64) -> Self {
        self.log_every = Some(n);
        self
    }
    /// Save to `path` every so often and at the end (atomically: a crash keeps the last good
    /// file), with `config` (what rebuilds the model) in its metadata.
    pub fn checkpoint(
        mut self,
        path: impl Into<PathBuf>,
        every: Every,
        config: serde_json::Value,
    ) -> Self {
        self.checkpoint = Some((path.into(), every));
        self.config = config;
        self
    }
    /// What else decides which data each step sees (batch size, context, seed): a checkpoint
    /// written with other settings cannot resume this run.
    pub fn data_settings(mut self, settings: serde_json::Value) -> Self {
        self.data_settings = settings;
        self
    }
    /// Continue from the checkpoint at `path`, which must come from the same training (the
    /// same steps per epoch, accumulation and length); the run then ends as a straight one
    /// would, to the bit.
    pub fn resume(mut self, path: impl Into<PathBuf>) -> Self {
        self.resume = Some(path.into());
        self
    }
    /// Write `metrics.csv`, `metrics.jsonl`, a TensorBoard event file and SVG curves here.
    pub fn out(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out = Some(dir.into());
        self
    }
    /// Files the run reads: no output may be one of them.
    pub fn inputs<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.inputs.extend(paths.into_iter().map(|p| p.as_ref().to_path_buf()));
        self
    }
    pub fn progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }
    /// What the progress shows before the bar, and what [`Metrics::count`] counts.
    pub fn describe(mut self, title: &str, unit: &str) -> Self {
        self.title = title.into();
        self.unit = unit.into();
        self
    }
    /// Stop after step `n`, as an interrupted run would (the checkpoint is saved).
    pub fn stop_after(mut self, n: Option<u64>) -> Self {
        self.stop_after = n;
        self
    }
    /// Train data-parallel as one rank of `collective`: rank 0's parameters are sent to all,
    /// each rank takes its shard of every global batch ([`Data::shard`]), the gradients are
    /// summed into the global batch's mean before every (then identical) optimizer step, the
    /// metrics are reduced, and only rank 0 evaluates, shows progress and writes files.
    pub fn distributed(mut self, collective: Arc<dyn Collective>) -> Self {
        self.collective = collective;
        self
    }
    /// Whether a data-parallel step starts summing each piece of the gradients as soon as
    /// backward has finished it, on a thread of the collective's, to overlap communication
    /// with the rest of backward; else (the default) it sums them all after backward. Overlap
    /// pays where that thread waits on a network while the cores compute; where every core
    /// already computes (ranks sharing one machine), the thread takes cores from backward
    /// (docs/distributed.md has the measurements). Without accumulation only.
    pub fn overlap_communication(mut self, overlap: bool) -> Self {
        self.overlap = overlap;
        self
    }
    /// Whether a data-parallel step is sharded (the default): each rank receives its part of
    /// the summed gradients only, updates that part of the parameters and optimizer state,
    /// and the parameters are then gathered ([`Sharded`]: each element updated as the whole
    /// step updates it, the optimizer's work divided among the ranks). Not sharded: an
    /// optimizer that is not [`Optimizer::shardable`], and steps that need every gradient on
    /// every rank (overlapped communication, clipping by norm, an `after_backward` hook).
    pub fn shard_optimizer(mut self, shard: bool) -> Self {
        self.shard_optimizer = shard;
        self
    }
    /// Runs on the gradients of every step (summed across ranks when data-parallel) before
    /// clipping and the optimizer.
    pub fn after_backward(
        mut self,
        hook: impl FnMut(&mut Gradients, &StepInfo) -> Result<()> + Send + 'a,
    ) -> Self {
        self.after_backward.push(Box::new(hook));
        self
    }
    /// Runs after every optimizer step.
    pub fn after_step(
        mut self,
        hook: impl FnMut(&StepInfo, &mut Log) -> Result<Flow> + Send + 'a,
    ) -> Self {
        self.after_step.push(Box::new(hook));
        self
    }
    /// Runs after every evaluation with its results (without the `eval_` prefix).
    pub fn on_evaluate(
        mut self,
        hook: impl FnMut(u64, &BTreeMap<String, f64>, &mut Log) -> Result<()> + Send + 'a,
    ) -> Self {
        self.on_eval.push(Box::new(hook));
        self
    }

    /// The optimizer steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }
    pub fn optimizer(&self) -> &dyn Optimizer {
        &*self.optimizer
    }

    /// Trains on `data`, each micro-batch turned into a scalar loss by `loss` (which may
    /// [`Metrics::add`] and [`Metrics::count`]).
    pub fn fit<D, E>(
        &mut self,
        data: &mut D,
        loss: impl FnMut(D::Batch, &mut Metrics) -> std::result::Result<Tensor, E> + Send,
    ) -> std::result::Result<Report, E>
    where
        D: Data,
        E: From<Error> + std::fmt::Display + Send,
    {
        self.fit_evaluating(data, loss, None::<fn(u64, &mut Metrics) -> std::result::Result<(), E>>)
    }

    /// [`Trainer::fit`], evaluating with `evaluate(step, metrics)` (in evaluation mode,
    /// recording no graph) as often as [`Trainer::evaluate_every`] says and at the end; its
    /// metrics are logged with an `eval_` prefix.
    pub fn fit_evaluating<D, E>(
        &mut self,
        data: &mut D,
        loss: impl FnMut(D::Batch, &mut Metrics) -> std::result::Result<Tensor, E> + Send,
        evaluate: Option<impl FnMut(u64, &mut Metrics) -> std::result::Result<(), E> + Send>,
    ) -> std::result::Result<Report, E>
    where
        D: Data,
        E: From<Error> + std::fmt::Display + Send,
    {
        // On a worker of a pool already (the ferrograd command runs on one), or in a pool of
        // our own: parallel ops then split their work with the other workers directly.
        if rayon::current_thread_index().is_some() {
            return self.run(data, loss, evaluate);
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .stack_size(64 << 20)
            .build()
            .map_err(|e| Error::value("Trainer", format!("cannot start worker threads: {e}")))?;
        pool.install(|| self.run(data, loss, evaluate))
    }

    /// The optimizer steps a run on `data` takes, with this length and accumulation.
    pub fn total_steps(&self, data: &impl Data) -> Result<u64> {
        self.steps_for(data.batches_per_epoch())
    }

    fn steps_for(&self, per_epoch: Option<usize>) -> Result<u64> {
        if self.accumulate == 0 {
            return Err(Error::value("Trainer", "accumulate must be at least 1, got 0"));
        }
        match (self.length, per_epoch) {
            (Length::Steps(n), _) => Ok(n),
            (Length::Epochs(n), Some(p)) => {
                Ok((n.saturating_mul(p as u64)).div_ceil(self.accumulate as u64))
            }
            (Length::Epochs(_), None) => Err(Error::value(
                "Trainer",
                "the data is an endless stream: give the length in steps, not epochs",
            )),
        }
    }

    /// How this run maps steps to data: a checkpoint from a run where it differs cannot
    /// continue this one.
    fn shape(&self, total: u64, per_epoch: Option<usize>) -> serde_json::Value {
        serde_json::json!({
            "total_steps": total,
            "accumulate": self.accumulate,
            "batches_per_epoch": per_epoch,
            "data": self.data_settings,
        })
    }

    /// [`Trainer::train`], telling the other ranks when this one fails so that none waits.
    fn run<D, E>(
        &mut self,
        data: &mut D,
        loss: impl FnMut(D::Batch, &mut Metrics) -> std::result::Result<Tensor, E>,
        evaluate: Option<impl FnMut(u64, &mut Metrics) -> std::result::Result<(), E>>,
    ) -> std::result::Result<Report, E>
    where
        D: Data,
        E: From<Error> + std::fmt::Display,
    {
        let result = self.train(data, loss, evaluate);
        if let Err(e) = &result {
            self.collective.abort(&e.to_string());
        }
        result
    }

    fn train<D, E>(
        &mut self,
        data: &mut D,
        mut loss: impl FnMut(D::Batch, &mut Metrics) -> std::result::Result<Tensor, E>,
        mut evaluate: Option<impl FnMut(u64, &mut Metrics) -> std::result::Result<(), E>>,
    ) -> std::result::Result<Report, E>
    where
        D: Data,
        E: From<Error>,
    {
        let c = self.collective.clone();
        let (rank, ranks) = (c.rank(), c.size());
        let lead = rank == 0;
        let _warm = ferrograd::KeepWarm::new();
        let per_epoch = data.batches_per_epoch();
        if per_epoch == Some(0) {
            return Err(Error::value("Trainer", "the data has no batches").into());
        }
        let total = self.steps_for(per_epoch)?;
        let shape = self.shape(total, per_epoch);
        if lead {
            self.check_outputs()?;
        }
        let (mut resumed_at, mut since_eval) = (None, Metrics::default());
        let mut reported: Option<Metrics> = None;
        if let Some(path) = self.resume.take() {
            let info = inspect_checkpoint(&path)?;
            let saved = info.trainer.unwrap_or_default();
            if saved.get("shape").is_some_and(|s| *s != shape) {
                return Err(Error::value(
                    "resume",
                    format!(
                        "{} comes from another training ({}); this one is {shape}: resume with the same data settings, accumulation and length",
                        path.display(),
                        saved["shape"]
                    ),
                )
                .into());
            }
            let info = load_checkpoint(&path, &self.store, Some(&mut *self.optimizer))?;
            self.step = info.step;
            resumed_at = Some(info.step);
            // The means since the last evaluation continue, so the next one reports the same;
            // they were saved summed over the ranks, so rank 0 alone takes them up again.
            if let Some(m) = saved
                .get("since_eval")
                .filter(|_| lead)
                .and_then(|m| serde_json::from_value(m.clone()).ok())
            {
                since_eval = m;
            }
        }
        // What decides which collectives a step makes: ranks that differ would wait forever.
        let every = |e: Every| match e {
            Every::Steps(n) => n as f64,
            Every::Epochs(n) => -(n as f64),
            Every::End => 0.0,
        };
        let facts = [
            total as f64,
            per_epoch.map_or(-1.0, |p| p as f64),
            self.accumulate as f64,
            self.log_every.map_or(-1.0, |n| n as f64),
            f64::from(u8::from(evaluate.is_some())),
            every(self.eval_every),
            self.checkpoint.as_ref().map_or(-1.0, |(_, e)| every(*e)),
            self.stop_after.map_or(-1.0, |n| n as f64),
        ];
        check_agreement(&self.store, &facts, &*c)?;
        broadcast_parameters(&self.params, &*c)?;
        let mut log = Log::open(self.out.as_deref().filter(|_| lead), resumed_at)?;
        let start = self.step.min(total);
        let end = self.stop_after.map_or(total, |s| s.clamp(start, total));
        let log_every = self.log_every.unwrap_or((total / 200).max(1));
        let progress = if lead { self.progress } else { Progress::Quiet };
        let mut view = View::new(progress, total, start, &self.title);
        let acc = self.accumulate as u64;
        // Gradients are summed while backward goes on when one backward makes the step's.
        let overlap = ranks > 1 && acc == 1 && self.overlap;
        let sharding = ranks > 1
            && self.shard_optimizer
            && self.optimizer.shardable()
            && !overlap
            && self.clip_norm.is_none()
            && self.after_backward.is_empty();
        let mut sharded: Option<Sharded> = None;
        let epoch_of = |step: u64| per_epoch.map_or(0.0, |p| (step * acc) as f64 / p as f64);
        let epochs_done = |step: u64| per_epoch.map_or(0, |p| step * acc / p as u64);

        self.store.train();
        let (mut window, mut all) = (Metrics::default(), Metrics::default());
        let mut last_eval = BTreeMap::new();
        let mut seconds = 0.0;
        let mut smoothed = f64::NAN;
        let mut step = start;
        while step < end {
            let done = step + 1;
            let began = Instant::now();
            let mut metrics = Metrics::default();
            let mut grads: Option<Gradients> = None;
            let mut reducing = Reducing::default();
            for j in 0..acc {
                let at = At::of(step * acc + j, per_epoch);
                let before = metrics.units();
                let batch = data.batch(at);
                let (batch, weight) =
                    if ranks > 1 { data.shard(batch, rank, ranks)? } else { (batch, 1.0) };
                let l = loss(batch, &mut metrics)?;
                let value = l.item()?;
                if !value.is_finite() {
                    // A step on it would make every parameter NaN.
                    return Err(Error::value(
                        "Trainer",
                        format!("the loss at step {done} is {value}; training stops here (a lower learning rate, or bad data?)"),
                    )
                    .into());
                }
                let weight = match metrics.take_mean_over() {
                    Some(items) if ranks > 1 => {
                        // A rank repeating an example at weight 0 holds no items of its own.
                        let mine = if weight > 0.0 { items as f64 } else { 0.0 };
                        let mut all = [mine];
                        all_reduce_values(&mut all, &*c)?;
                        if all[0] > 0.0 {
                            mine / all[0]
                        } else {
                            weight
                        }
                    }
                    _ => weight,
                };
                // Each rank's gradient carries its share of the global batch; the sum over
                // ranks is then the global mean.
                let l = if ranks > 1 { l.mul_scalar(weight)? } else { l };
                let g = if overlap {
                    self.store.backward_streaming(&l, GRADIENT_PIECES, &mut |piece| {
                        reducing.start(piece, &*c)
                    })?
                } else {
                    self.store.backward(&l)?
                };
                drop(l);
                let units = metrics.units() - before;
                metrics.add("loss", value, if units > 0 { units as f64 } else { 1.0 });
                match &mut grads {
                    None => grads = Some(g),
                    Some(sum) => sum.accumulate(g)?,
                }
            }
            let mut grads = grads.expect("at least one micro-batch");
            if acc > 1 {
                scale_gradients(&mut grads, &self.params, 1.0 / acc as f64)?;
            }
            let lr = self.schedule.lr(self.base_lr, step);
            let epoch = epoch_of(done);
            self.optimizer.set_lr(lr);
            if sharding {
                if !sharded.as_ref().is_some_and(|s| s.fits(&grads, &self.params)) {
                    // The state each rank kept is its part under the old plan.
                    if let Some(old) = &mut sharded {
                        old.gather_state(&self.params, &mut *self.optimizer, &*c)?;
                    }
                    sharded = Some(Sharded::new(&grads, &self.params, &*c)?);
                }
                let plan = sharded.as_mut().expect("made above");
                plan.reduce(&mut grads, &*c)?;
                self.optimizer.step_shard(&grads, plan.shard())?;
                plan.gather_params(&self.params, &mut grads, &*c)?;
            } else {
                if overlap {
                    reducing.finish(&mut grads)?;
                } else {
                    all_reduce_gradients(&mut grads, &*c)?;
                }
                for hook in &mut self.after_backward {
                    hook(&mut grads, &StepInfo::new(done, total, epoch, lr, &metrics))?;
                }
                if let Some(max_norm) = self.clip_norm {
                    let norm = clip_grad_norm(&mut grads, &self.params, max_norm)?;
                    metrics.add("grad_norm", norm, 1.0);
                }
                self.optimizer.step(&grads)?;
            }
            drop(grads);
            self.step = done;
            seconds += began.elapsed().as_secs_f64();
            metrics.add("lr", lr, 1.0);
            let mut flow = Flow::Continue;
            log.at(done);
            for hook in &mut self.after_step {
                if hook(&StepInfo::new(done, total, epoch, lr, &metrics), &mut log)? == Flow::Stop {
                    flow = Flow::Stop;
                }
            }
            if ranks > 1 {
                // Every rank stops where any one's hook asked to.
                let mut stop = [f64::from(u8::from(flow == Flow::Stop))];
                all_reduce_values(&mut stop, &*c)?;
                flow = if stop[0] > 0.0 { Flow::Stop } else { Flow::Continue };
            }
            let l = metrics.mean("loss").unwrap_or(f64::NAN);
            smoothed = if smoothed.is_nan() { l } else { 0.95 * smoothed + 0.05 * l };
            window.merge(&metrics);
            since_eval.merge(&metrics);
            all.merge(&metrics);
            let rate = all.units() as f64 / seconds.max(1e-9);
            view.update(done, &format!("loss {smoothed:.4}  {} {}/s", si(rate), self.unit));
            let last = done == end || flow == Flow::Stop;
            if done.is_multiple_of(log_every) || last {
                let mut values = window.all_reduced(&*c)?.means();
                if window.units() > 0 {
                    values.insert(format!("{}_per_s", self.unit), rate);
                }
                log.record(Record { step: done, epoch: epoch_of(done), values })?;
                window = Metrics::default();
            }
            let due = |every: Every| {
                done == total
                    || match every {
                        Every::Steps(n) => done.is_multiple_of(n.max(1)),
                        Every::Epochs(n) => {
                            epochs_done(done) > epochs_done(step)
                                && epochs_done(done).is_multiple_of(n.max(1))
                        }
                        Every::End => false,
                    }
            };
            let evaluating = evaluate.is_some() && due(self.eval_every);
            let train =
                if evaluating { since_eval.all_reduced(&*c)?.means() } else { BTreeMap::new() };
            if let Some(eval) = evaluate.as_mut().filter(|_| evaluating && lead) {
                let mut m = Metrics::default();
                {
                    let _g = no_grad();
                    self.store.eval();
                    let result = eval(done, &mut m);
                    self.store.train();
                    result?;
                }
                last_eval = m.means();
                let line =
                    describe(done, total, epoch_of(done), per_epoch.is_some(), &train, &last_eval);
                let values: BTreeMap<String, f64> =
                    last_eval.iter().map(|(k, v)| (format!("eval_{k}"), *v)).collect();
                log.record(Record { step: done, epoch: epoch_of(done), values })?;
                for hook in &mut self.on_eval {
                    hook(done, &last_eval, &mut log)?;
                }
                view.println(&line);
                for note in m.notes() {
                    view.println(&format!("    {note}"));
                }
            }
            if evaluating {
                // The report of a run that stops here gives these; a checkpoint saved now must
                // not, or a resume would count them again.
                if done == end {
                    reported = Some(since_eval.clone());
                }
                since_eval = Metrics::default();
            }
            if let Some((path, every)) = &self.checkpoint {
                if due(*every) || last {
                    let since_eval = since_eval.all_reduced(&*c)?;
                    if let Some(plan) = &mut sharded {
                        plan.gather_state(&self.params, &mut *self.optimizer, &*c)?;
                    }
                    if lead {
                        let trainer = serde_json::json!({"shape": shape, "since_eval": since_eval});
                        let opt: Option<&dyn Optimizer> = Some(&*self.optimizer);
                        save_training_checkpoint(
                            path,
                            &self.store,
                            opt,
                            done,
                            &self.config,
                            &trainer,
                        )?;
                    }
                }
            }
            step = done;
            if flow == Flow::Stop {
                break;
            }
        }
        view.finish();
        log.write_tables_and_curves()?;
        if let Some(plan) = &mut sharded {
            // The optimizer is the whole one again, as `optimizer()` shows it.
            plan.gather_state(&self.params, &mut *self.optimizer, &*c)?;
        }
        check_replicas(&self.params, &*c)?;
        let all = all.all_reduced(&*c)?;
        Ok(Report {
            start,
            end: step,
            total,
            seconds,
            units_per_s: all.units() as f64 / seconds.max(1e-9),
            train: reported.unwrap_or(since_eval).all_reduced(&*c)?.means(),
            eval: last_eval,
            history: log.history().to_vec(),
        })
    }

    /// Every output path is checked before the first step: a run must not train for an hour
    /// and then fail to save, or overwrite what it reads.
    fn check_outputs(&self) -> Result<()> {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if let Some(dir) = &self.out {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(
                    "Trainer",
                    format!("cannot create the output folder {}: {e}", dir.display()),
                )
            })?;
            probe(dir, dir)?;
        }
        if let Some((path, _)) = &self.checkpoint {
            if path.is_dir() {
                return Err(Error::io(
                    "Trainer",
                    format!("the checkpoint path {} is a folder; give a file name", path.display()),
                ));
            }
            if let Some(input) = self.inputs.iter().find(|i| same(i, path)) {
                return Err(Error::io(
                    "Trainer",
                    format!(
                        "the checkpoint path {} is the input {}: it would be overwritten",
                        path.display(),
                        input.display()
                    ),
                ));
            }
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !dir.is_dir() {
                return Err(Error::io(
                    "Trainer",
                    format!(
                        "cannot save the checkpoint {}: {} is not a folder",
                        path.display(),
                        dir.display()
                    ),
                ));
            }
            probe(dir, path)?;
        }
        Ok(())
    }
}

/// Creates and removes a file in `dir`, to learn before training whether `target` can be
/// written.
fn probe(dir: &Path, target: &Path) -> Result<()> {
    let file = dir.join(format!(".ferrograd-probe-{}", std::process::id()));
    std::fs::write(&file, b"")
        .map_err(|e| Error::io("Trainer", format!("cannot write {}: {e}", target.display())))?;
    let _ = std::fs::remove_file(&file);
    Ok(())
}

/// `12,345` or `1.2e6`-ish: a rate readable at a glance.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

/// `step 750/750 (epoch 3)  loss 0.0123  accuracy 0.99  │ held-out: accuracy 0.98`.
fn describe(
    step: u64,
    total: u64,
    epoch: f64,
    epochs: bool,
    train: &BTreeMap<String, f64>,
    eval: &BTreeMap<String, f64>,
) -> String {
    let mut line = format!("step {step:>6}/{total}");
    if epochs {
        line.push_str(&format!(" (epoch {epoch:.0})"));
    }
    let show = |m: &BTreeMap<String, f64>| -> String {
        m.iter()
            .filter(|(k, _)| *k != "lr" && *k != "grad_norm")
            .map(|(k, v)| format!("  {} {v:.4}", k.replace('_', " ")))
            .collect()
    };
    line.push_str(&show(train));
    line.push_str("  │ held-out:");
    line.push_str(&show(eval));
    line
}

/// The progress display.
enum View {
    Bar(ProgressBar),
    Lines { total: u64, every: u64, title: String, message: String },
    Quiet,
}

impl View {
    fn new(progress: Progress, total: u64, start: u64, title: &str) -> View {
        let lines = || View::Lines {
            total,
            every: (total / 10).max(1),
            title: title.into(),
            message: String::new(),
        };
        match progress {
            Progress::Quiet => View::Quiet,
            Progress::Lines => lines(),
            Progress::Bar => {
                let bar = ProgressBar::new(total);
                if bar.is_hidden() {
                    return lines();
                }
                let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style.progress_chars("=> "));
                bar.set_prefix(title.to_string());
                bar.set_position(start);
                View::Bar(bar)
            }
        }
    }

    fn update(&mut self, step: u64, message: &str) {
        match self {
            View::Bar(bar) => {
                bar.set_position(step);
                bar.set_message(message.to_string());
            }
            View::Lines { total, every, title, message: last } => {
                *last = message.to_string();
                if step.is_multiple_of(*every) || step == *total {
                    eprintln!("{title} {step}/{total}  {message}");
                }
            }
            View::Quiet => {}
        }
    }

    /// A result line (an evaluation): on stdout, above the bar.
    fn println(&self, line: &str) {
        match self {
            View::Bar(bar) => bar.suspend(|| println!("{line}")),
            View::Lines { .. } => println!("{line}"),
            View::Quiet => {}
        }
    }

    fn finish(&self) {
        if let View::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
