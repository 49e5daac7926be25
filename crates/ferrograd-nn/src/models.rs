//! The lecture's image models as compositions of blocks: FeedForward³, a small CNN, AlexNet.

use crate::{
    Activation, Conv, ConvOptions, Dropout, EmbedToken, FeedForward, Flatten, GenerateToken,
    LanguageModel, LayerNorm, MaxPool, ParamStore, Positions, SequenceModel, SequenceStack,
    Sequential, TransformerBlock,
};
use ferrograd::{Error, Result};

/// FeedForward³ for flattened images: `sizes[0]`→…→`sizes[3]`, ReLU between (W2: 784, 256,
/// 256, 10). Layers are named `1`, `3`, `5` as in PyTorch's
/// `nn.Sequential(nn.Flatten(), nn.Linear, nn.ReLU(), nn.Linear, nn.ReLU(), nn.Linear)`.
pub fn feed_forward3(store: &ParamStore, sizes: [usize; 4]) -> Result<Sequential> {
    Ok(Sequential::new()
        .then(Flatten)
        .then(FeedForward::new(store.sub(1), sizes[0], sizes[1], Activation::Relu)?)
        .then(FeedForward::new(store.sub(3), sizes[1], sizes[2], Activation::Relu)?)
        .then(FeedForward::new(store.sub(5), sizes[2], sizes[3], Activation::Identity)?))
}

/// The CNN of workload W3 for 28×28 images: FeedForward²(MaxPool(Conv(MaxPool(Conv(x))))).
/// Named as PyTorch's `nn.Sequential(Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d,
/// Flatten, Linear, ReLU, Linear)`: `0`, `3`, `7`, `9`.
pub fn cnn(store: &ParamStore, in_channels: usize, classes: usize) -> Result<Sequential> {
    let conv = |p| ConvOptions { padding: p, activation: Activation::Relu, ..Default::default() };
    Ok(Sequential::new()
        .then(Conv::new(store.sub(0), in_channels, 32, 5, conv(2))?)
        .then(MaxPool::new(2, 2)?)
        .then(Conv::new(store.sub(3), 32, 64, 5, conv(2))?)
        .then(MaxPool::new(2, 2)?)
        .then(Flatten)
        .then(FeedForward::new(store.sub(7), 64 * 7 * 7, 256, Activation::Relu)?)
        .then(FeedForward::new(store.sub(9), 256, classes, Activation::Identity)?))
}

/// The sizes of an AlexNet: input, the five convolutions' widths, the first convolution's
/// kernel/stride/padding, the FeedForward width and dropout.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlexNetConfig {
    pub in_channels: usize,
    pub image_size: usize,
    pub classes: usize,
    pub widths: [usize; 5],
    pub first_kernel: usize,
    pub first_stride: usize,
    pub first_padding: usize,
    pub hidden: usize,
    pub dropout: f64,
}

impl AlexNetConfig {
    /// torchvision's AlexNet: 3×224×224 images, 1000 classes.
    pub fn imagenet() -> AlexNetConfig {
        AlexNetConfig {
            in_channels: 3,
            image_size: 224,
            classes: 1000,
            widths: [64, 192, 384, 256, 256],
            first_kernel: 11,
            first_stride: 4,
            first_padding: 2,
            hidden: 4096,
            dropout: 0.5,
        }
    }
    /// A narrow AlexNet for 1×28×28 digits that trains in minutes on two cores.
    pub fn mnist() -> AlexNetConfig {
        AlexNetConfig {
            in_channels: 1,
            image_size: 28,
            classes: 10,
            widths: [32, 64, 96, 96, 64],
            first_kernel: 3,
            first_stride: 1,
            first_padding: 1,
            hidden: 256,
            dropout: 0.3,
        }
    }
}

/// The lecture's AlexNet: FeedForward³(MaxPool(Conv³(MaxPool(Conv(MaxPool(Conv(x))))))).
/// Parameter names follow torchvision (`features.0.weight` … `classifier.6.bias`), so its
/// weights load by name; torchvision's adaptive average pool is left out (it is the identity
/// at 224×224).
pub fn alexnet(store: &ParamStore, c: &AlexNetConfig) -> Result<Sequential> {
    let (f, k) = (store.sub("features"), store.sub("classifier"));
    let relu = |padding, stride| ConvOptions {
        padding,
        stride,
        activation: Activation::Relu,
        ..Default::default()
    };
    let w = c.widths;
    // The spatial size after each stage, to size the first FeedForward and catch images too
    // small for the stack.
    let mut s = c.image_size;
    let mut shrink = |k: usize, st: usize, p: usize, what: &str| -> Result<()> {
        if k == 0 || st == 0 {
            return Err(Error::value(
                "alexnet",
                format!("the {what}'s kernel and stride must be positive, got {k} and {st}"),
            ));
        }
        if s + 2 * p < k {
            return Err(Error::shape(
                "alexnet",
                format!("images of size {} shrink below the {what} window", c.image_size),
            ));
        }
        s = (s + 2 * p - k) / st + 1;
        Ok(())
    };
    shrink(c.first_kernel, c.first_stride, c.first_padding, "first Conv")?;
    shrink(3, 2, 0, "first MaxPool")?;
    shrink(3, 2, 0, "second MaxPool")?;
    shrink(3, 2, 0, "third MaxPool")?;
    Ok(Sequential::new()
        .then(Conv::new(
            f.sub(0),
            c.in_channels,
            w[0],
            c.first_kernel,
            relu(c.first_padding, c.first_stride),
        )?)
        .then(MaxPool::new(3, 2)?)
        .then(Conv::new(f.sub(3), w[0], w[1], 5, relu(2, 1))?)
        .then(MaxPool::new(3, 2)?)
        .then(Conv::new(f.sub(6), w[1], w[2], 3, relu(1, 1))?)
        .then(Conv::new(f.sub(8), w[2], w[3], 3, relu(1, 1))?)
        .then(Conv::new(f.sub(10), w[3], w[4], 3, relu(1, 1))?)
        .then(MaxPool::new(3, 2)?)
        .then(Flatten)
        .then(Dropout::new(store, c.dropout)?)
        .then(FeedForward::new(k.sub(1), w[4] * s * s, c.hidden, Activation::Relu)?)
        .then(Dropout::new(store, c.dropout)?)
        .then(FeedForward::new(k.sub(4), c.hidden, c.hidden, Activation::Relu)?)
        .then(FeedForward::new(k.sub(6), c.hidden, c.classes, Activation::Identity)?))
}

/// A GPT-style LanguageModel: EmbedToken, learned positions, `layers` pre-norm causal
/// TransformerBlocks (FeedForward `4·dim`, GELU), a final LayerNorm, and GenerateToken tied to
/// EmbedToken (W5: vocab 65, dim 128, 4 heads, 4 layers, context 128).
pub fn transformer_lm(
    store: &ParamStore,
    vocab: usize,
    dim: usize,
    heads: usize,
    layers: usize,
    context: usize,
) -> Result<LanguageModel> {
    let ff = 4 * dim;
    let (activation, eps) = (Activation::Gelu, 1e-5);
    let shape =
        LmShape { vocab, dim, heads, layers, context, ff, activation, eps, ..LmShape::NO_DROPOUT };
    lm_of_shape(store, &shape)
}

/// The sizes and choices of a GPT-style LanguageModel (GPT-2's come from its `config.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LmShape {
    pub vocab: usize,
    pub dim: usize,
    pub heads: usize,
    pub layers: usize,
    /// Positions it can see: the longest prompt and continuation together.
    pub context: usize,
    /// The FeedForward's hidden size.
    pub ff: usize,
    pub activation: Activation,
    /// LayerNorm's epsilon.
    pub eps: f64,
    /// Dropout in training on each block's sublayer outputs before they are added back
    /// (GPT-2's `resid_pdrop`).
    pub dropout: f64,
    /// On the attention weights (`attn_pdrop`).
    pub attention_dropout: f64,
    /// On the embeddings with their positions (`embd_pdrop`).
    pub embed_dropout: f64,
}

impl LmShape {
    /// The sizes to fill in, without dropout.
    pub const NO_DROPOUT: LmShape = LmShape {
        vocab: 0,
        dim: 0,
        heads: 0,
        layers: 0,
        context: 0,
        ff: 0,
        activation: Activation::Gelu,
        eps: 1e-5,
        dropout: 0.0,
        attention_dropout: 0.0,
        embed_dropout: 0.0,
    };
}

/// [`transformer_lm`] of any shape: parameters `embed`, `positions`, `blocks.{i}.*` and
/// `final_norm` under `store`.
pub fn lm_of_shape(store: &ParamStore, s: &LmShape) -> Result<LanguageModel> {
    let embed = EmbedToken::new(store.sub("embed"), s.vocab, s.dim, None)?;
    // Tied to the output, N(0, 1) embeddings would start with huge scores: GPT-2's N(0, 0.02).
    embed.weight.set(&embed.weight.get().mul_scalar(0.02)?)?;
    let mut positions = Positions::new(store.sub("positions"), s.context, s.dim)?;
    if s.embed_dropout > 0.0 {
        positions.dropout = Some(Dropout::new(store, s.embed_dropout)?);
    }
    let mut body: Vec<Box<dyn SequenceModel>> = vec![Box::new(positions)];
    for i in 0..s.layers {
        let mut block =
            TransformerBlock::new(&store.sub("blocks").sub(i), s.dim, s.heads, s.ff, true, true)?;
        block.ff_in.activation = s.activation;
        block.attention_norm.norm.eps = s.eps;
        block.ff_norm.norm.eps = s.eps;
        if s.dropout > 0.0 {
            block.attention_norm.dropout = Some(Dropout::new(store, s.dropout)?);
            block.ff_norm.dropout = Some(Dropout::new(store, s.dropout)?);
        }
        if s.attention_dropout > 0.0 {
            block.attention.dropout = Some(Dropout::new(store, s.attention_dropout)?);
        }
        body.push(Box::new(block));
    }
    body.push(Box::new(LayerNorm::new(store.sub("final_norm"), s.dim, s.eps)?));
    let head = GenerateToken::tied(&embed);
    Ok(LanguageModel { embed, body: Box::new(SequenceStack { layers: body }), head })
}
