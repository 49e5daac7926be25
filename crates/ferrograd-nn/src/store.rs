//! Parameters and where they live: a store of named, trainable tensors shared by the modules
//! of one model, with its train/eval mode and its random generator.

use ferrograd::{DType, Error, PackedWeight, Precision, Result, Rng, Tensor, Update};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// How a parameter's first value is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Zeros,
    Ones,
    Constant(f64),
    Uniform { low: f64, high: f64 },
    Normal { mean: f64, std: f64 },
}

impl Init {
    /// PyTorch's default for Linear and Conv weights and biases: Kaiming-uniform with a = √5,
    /// which is U(−1/√fan_in, 1/√fan_in).
    pub fn pytorch_default(fan_in: usize) -> Init {
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        Init::Uniform { low: -bound, high: bound }
    }
}

/// One trainable tensor with a hierarchical name (`features.3.weight`). Cloning shares it.
#[derive(Clone)]
pub struct Param {
    name: Arc<str>,
    value: Arc<RwLock<Tensor>>,
    /// The store's precision for products with weights, shared by all its parameters.
    precision: Arc<RwLock<Precision>>,
    /// The value packed in that precision, made on first use and dropped when it changes.
    packed: Arc<Mutex<Option<Arc<PackedWeight>>>>,
}

impl Param {
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The current value: a leaf that gradients flow to.
    pub fn get(&self) -> Tensor {
        self.value.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Replaces the value (an optimizer step, a checkpoint load); shape and dtype must match.
    pub fn set(&self, t: &Tensor) -> Result<()> {
        let mut slot = self.value.write().unwrap_or_else(|e| e.into_inner());
        if t.dims() != slot.dims() || t.dtype() != slot.dtype() {
            return Err(Error::shape(
                "Param::set",
                format!(
                    "{}: new value is {} {}, the parameter is {} {}",
                    self.name,
                    t.dtype(),
                    t.shape(),
                    slot.dtype(),
                    slot.shape()
                ),
            ));
        }
        *slot = t.detach().requiring_grad();
        self.drop_packed();
        Ok(())
    }
    pub fn numel(&self) -> usize {
        self.get().numel()
    }
    /// One optimizer step of the value in place ([`Tensor::update`]); errors name the
    /// parameter.
    pub fn update(&self, grad: &Tensor, slots: &mut [Tensor], rule: &Update) -> Result<()> {
        self.change(|value| value.update(grad, slots, rule))
    }
    /// [`Tensor::update_part`] of the value: elements `start..start + grad.numel()` only.
    pub fn update_part(
        &self,
        start: usize,
        grad: &Tensor,
        slots: &mut [Tensor],
        rule: &Update,
    ) -> Result<()> {
        self.change(|value| value.update_part(start, grad, slots, rule))
    }
    /// Writes `values` over elements `start..` of the value in place ([`Tensor::write_at`]).
    pub fn write_at(&self, start: usize, values: &Tensor) -> Result<()> {
        self.change(|value| value.write_at(start, values))
    }
    /// `f` on the value, in place; errors name the parameter.
    fn change(&self, f: impl FnOnce(&mut Tensor) -> Result<()>) -> Result<()> {
        let mut value = self.value.write().unwrap_or_else(|e| e.into_inner());
        self.drop_packed();
        f(&mut value).map_err(|e| {
            Error::new(e.kind, "optimizer", format!("{}: {}: {}", self.name, e.op, e.message))
        })
    }
}

impl Param {
    /// `x · Wᵀ + b` with this parameter as the (out, in) weight W: in the store's
    /// [`Precision`] when no gradient is being recorded (under [`ferrograd::no_grad`]), with
    /// the weight packed on first use; in f32 otherwise, so that training is exact.
    pub fn linear(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        match self.packed()? {
            Some(packed) => x.linear_packed(&packed, bias),
            None => x.linear(&self.get(), bias),
        }
    }

    /// This weight packed in the store's precision, packed on first use, when products take
    /// it packed: a precision other than f32 and no gradient being recorded.
    pub(crate) fn packed(&self) -> Result<Option<Arc<PackedWeight>>> {
        let precision = *self.precision.read().unwrap_or_else(|e| e.into_inner());
        if precision == Precision::F32 || ferrograd::is_grad_enabled() {
            return Ok(None);
        }
        let packed = {
            let mut slot = self.packed.lock().unwrap_or_else(|e| e.into_inner());
            match &*slot {
                Some(p) if p.precision() == precision => p.clone(),
                _ => {
                    let p = Arc::new(self.get().quantize(precision).map_err(|e| {
                        Error::new(e.kind, e.op, format!("{}: {}", self.name, e.message))
                    })?);
                    *slot = Some(p.clone());
                    p
                }
            }
        };
        Ok(Some(packed))
    }

    fn drop_packed(&self) {
        *self.packed.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl std::fmt::Debug for Param {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Param({}, {:?})", self.name, self.get())
    }
}

struct Shared {
    params: Mutex<Vec<Param>>,
    training: AtomicBool,
    rng: Mutex<Rng>,
    dtype: DType,
    precision: Arc<RwLock<Precision>>,
    /// At most this many parameter values, and the file that holds them (see `within`).
    limit: Mutex<Option<(usize, String)>>,
}

/// The parameters of one model, created by its modules under hierarchical names.
///
/// ```
/// use ferrograd_nn::{Init, ParamStore};
/// let store = ParamStore::new(0);
/// let w = store.sub("features").sub(3).param("weight", &[4, 2], Init::Zeros).unwrap();
/// assert_eq!(w.name(), "features.3.weight");
/// assert_eq!(store.num_params(), 8);
/// ```
#[derive(Clone)]
pub struct ParamStore {
    shared: Arc<Shared>,
    prefix: String,
}

impl ParamStore {
    /// An empty f32 store whose initial values come from `seed`.
    pub fn new(seed: u64) -> ParamStore {
        ParamStore::with_dtype(seed, DType::F32)
    }

    pub fn with_dtype(seed: u64, dtype: DType) -> ParamStore {
        let shared = Shared {
            params: Mutex::new(Vec::new()),
            training: AtomicBool::new(true),
            rng: Mutex::new(Rng::seed(seed)),
            dtype,
            precision: Arc::new(RwLock::new(Precision::F32)),
            limit: Mutex::new(None),
        };
        ParamStore { shared: Arc::new(shared), prefix: String::new() }
    }

    /// Runs `build`, the building of a model that is to load `source`, which holds `elements`
    /// values: a parameter that would give `build`'s model more is an error before it is
    /// allocated, so a config claiming absurd sizes cannot allocate what it claims.
    pub fn within<T>(
        &self,
        elements: usize,
        source: &str,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let held = self.num_params();
        let lock = || self.shared.limit.lock().unwrap_or_else(|e| e.into_inner());
        *lock() = Some((held.saturating_add(elements), source.to_string()));
        let built = build();
        *lock() = None;
        built
    }

    /// The same store, names below `name` (`store.sub("encoder").sub(0)` → `encoder.0.…`).
    pub fn sub(&self, name: impl std::fmt::Display) -> ParamStore {
        ParamStore { shared: self.shared.clone(), prefix: self.path(&name.to_string()) }
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    pub fn dtype(&self) -> DType {
        self.shared.dtype
    }

    /// A new parameter `name` under this store's path; names must be unique.
    pub fn param(&self, name: &str, dims: &[usize], init: Init) -> Result<Param> {
        let full = self.path(name);
        let mut params = self.shared.params.lock().unwrap_or_else(|e| e.into_inner());
        if params.iter().any(|p| *p.name == *full) {
            return Err(Error::value(
                "ParamStore::param",
                format!("a parameter named {full} already exists"),
            ));
        }
        if let Some((limit, source)) = &*self.shared.limit.lock().unwrap_or_else(|e| e.into_inner())
        {
            let held: usize = params.iter().map(|p| p.get().numel()).sum();
            let numel = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
            if numel.and_then(|n| n.checked_add(held)).is_none_or(|t| t > *limit) {
                return Err(Error::value(
                    "ParamStore::param",
                    format!(
                        "{full} of shape {dims:?} would give the model more values than \
                         {source} holds ({limit}): its config does not describe these weights"
                    ),
                ));
            }
        }
        let dtype = self.shared.dtype;
        let value = self.with_rng(|rng| match init {
            Init::Zeros => Tensor::zeros(dims, dtype),
            Init::Ones => Tensor::ones(dims, dtype),
            Init::Constant(c) => Tensor::full(dims, c, dtype),
            Init::Uniform { low, high } => Tensor::rand_uniform(dims, low, high, dtype, rng),
            Init::Normal { mean, std } => Tensor::randn(dims, mean, std, dtype, rng),
        })?;
        let p = Param {
            name: full.into(),
            value: Arc::new(RwLock::new(value.requiring_grad())),
            precision: self.shared.precision.clone(),
            packed: Arc::default(),
        };
        params.push(p.clone());
        Ok(p)
    }

    /// For every parameter, the tensor `find` gives for its name, checked for shape and dtype
    /// before anything is set (errors name `source` and the parameter): the common half of
    /// loading a checkpoint and loading pretrained weights.
    pub fn match_tensors<'t>(
        &self,
        op: &str,
        source: &str,
        find: impl Fn(&str) -> Option<&'t Tensor>,
    ) -> Result<Vec<(Param, Tensor)>> {
        self.params()
            .into_iter()
            .map(|p| {
                let t = find(p.name()).ok_or_else(|| {
                    Error::value(op, format!("{source}: tensor {} is missing", p.name()))
                })?;
                let want = p.get();
                if t.dims() != want.dims() || t.dtype() != want.dtype() {
                    return Err(Error::shape(
                        op,
                        format!(
                            "{source}: tensor {} is {} {} in the file, the model expects {} {}",
                            p.name(),
                            t.dtype(),
                            t.shape(),
                            want.dtype(),
                            want.shape()
                        ),
                    ));
                }
                Ok((p, t.clone()))
            })
            .collect()
    }

    /// Every parameter of the model, in creation order.
    pub fn params(&self) -> Vec<Param> {
        self.shared.params.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The gradients of `loss` in this store's flat layout: every parameter's place in its
    /// dtype's bucket in creation order (the same on every process running the same model).
    pub fn backward(&self, loss: &Tensor) -> Result<ferrograd::Gradients> {
        let values: Vec<Tensor> = self.params().iter().map(|p| p.get()).collect();
        loss.backward_for(&values)
    }

    /// [`ParamStore::backward`], handing each piece of the gradients to `ready` as soon as it
    /// is final ([`ferrograd::Tensor::backward_streaming`]).
    pub fn backward_streaming(
        &self,
        loss: &Tensor,
        sizes: ferrograd::PieceSizes,
        ready: &mut dyn FnMut(ferrograd::GradientPiece) -> Result<()>,
    ) -> Result<ferrograd::Gradients> {
        let values: Vec<Tensor> = self.params().iter().map(|p| p.get()).collect();
        loss.backward_streaming(&values, sizes, ready)
    }

    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }

    /// Training mode: dropout drops. The default.
    pub fn train(&self) {
        self.shared.training.store(true, Ordering::Relaxed);
    }
    /// Evaluation mode: dropout passes everything through.
    pub fn eval(&self) {
        self.shared.training.store(false, Ordering::Relaxed);
    }
    pub fn is_training(&self) -> bool {
        self.shared.training.load(Ordering::Relaxed)
    }

    /// Products with the model's weights (every FeedForward, GenerateToken) run in
    /// `precision` whenever no gradient is recorded — inference under [`ferrograd::no_grad`];
    /// gradients and training stay f32. Each weight is packed on its first such product, and
    /// again after it changes. Low precisions take an f32 store.
    ///
    /// ```
    /// use ferrograd::{no_grad, DType, Precision, Tensor};
    /// use ferrograd_nn::{Activation, FeedForward, Module, ParamStore};
    /// let store = ParamStore::new(0);
    /// let ff = FeedForward::new(store.sub("fc"), 64, 32, Activation::Relu).unwrap();
    /// let x = Tensor::ones(&[2, 64], DType::F32).unwrap();
    /// let exact = ff.forward(&x).unwrap();
    /// store.set_precision(Precision::Int8).unwrap();
    /// let int8 = { let _g = no_grad(); ff.forward(&x).unwrap() };
    /// let diff = exact.sub(&int8).unwrap().to_vec::<f32>().unwrap();
    /// assert!(diff.iter().all(|d| d.abs() < 0.05), "{diff:?}");
    /// ```
    pub fn set_precision(&self, precision: Precision) -> Result<()> {
        if precision != Precision::F32 && self.dtype() != DType::F32 {
            return Err(Error::dtype(
                "ParamStore::set_precision",
                format!("{precision} products take an f32 model, this one is {}", self.dtype()),
            ));
        }
        *self.shared.precision.write().unwrap_or_else(|e| e.into_inner()) = precision;
        self.params().iter().for_each(Param::drop_packed);
        Ok(())
    }
    pub fn precision(&self) -> Precision {
        *self.shared.precision.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` with the model's random generator (initialization, dropout).
    pub fn with_rng<R>(&self, f: impl FnOnce(&mut Rng) -> R) -> R {
        f(&mut self.shared.rng.lock().unwrap_or_else(|e| e.into_inner()))
    }
    pub fn rng_state(&self) -> String {
        self.with_rng(|r| r.state())
    }
    pub fn set_rng_state(&self, state: &str) -> Result<()> {
        let rng = Rng::from_state(state)?;
        self.with_rng(|r| *r = rng);
        Ok(())
    }
}
