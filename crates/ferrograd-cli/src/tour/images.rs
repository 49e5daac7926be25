//! Chapter 2: convolution and pooling, feature maps, and FeedForward³ against a CNN.

use crate::features::{feature_maps, save_filters_svg, save_maps_svg};
use crate::CliResult;
use ferrograd::{no_grad, Result, Rng, Tensor};
use ferrograd_data::glyphs;
use ferrograd_nn::losses::accuracy;
use ferrograd_nn::optim::{Adam, AdamConfig};
use ferrograd_nn::trainer::{Epochs, Metrics};
use ferrograd_nn::{
    formula, models, Activation, Conv, ConvOptions, FeedForward, Flatten, MaxPool, Module,
    ParamStore, Progress, Sequential, Trainer,
};
use std::path::Path;

/// Chapter 2: the lecture's convolution and pooling examples, feature maps of a built-in
/// picture, then FeedForward³ against a CNN on generated shape images.
pub fn chapter(out: &Path) -> CliResult<()> {
    // The lecture's worked examples, computed.
    let image = Tensor::from_vec(
        vec![
            1.0f32, 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 1., 1., 0., 0.,
            1., 1., 0., 0.,
        ],
        &[1, 1, 5, 5],
    )?;
    let filter = Tensor::from_vec(vec![1.0f32, 0., 1., 0., 1., 0., 1., 0., 1.], &[1, 1, 3, 3])?;
    let map = image.conv2d(&filter, None, (1, 1), (0, 0))?;
    println!("   the 5×5 image ⋆ the 3×3 filter = feature map {}", rows(&map)?);
    let x = Tensor::from_vec(
        vec![1.0f32, 1., 2., 4., 5., 6., 7., 8., 3., 2., 1., 0., 1., 2., 3., 4.],
        &[1, 1, 4, 4],
    )?;
    println!(
        "   max pool (2×2 filters, stride 2) of the 4×4 input = {}",
        rows(&MaxPool::new(2, 2)?.forward(&x)?)?
    );

    // Producing feature maps: the lecture's filters on a built-in picture.
    let picture = glyphs::picture(96).reshape(&[1, 1, 96, 96])?;
    let mut maps = Vec::new();
    for (name, m) in feature_maps(&picture)? {
        let m = if name == "original" { m } else { m.abs()? }; // |response|: edges of both signs
        maps.push((name, m));
    }
    let title = "the lecture's filters on a built-in picture (|response| for edges)";
    save_maps_svg(&maps, title, &out.join("feature_maps.svg"))?;
    println!("   feature maps of a built-in picture, titled side by side: feature_maps.svg");

    // Six kinds of shapes at random places, sizes and brightness; 20×20 pixels.
    let mut rng = Rng::seed(11);
    let (x, y) = glyphs::shapes(3600, 20, &mut rng)?;
    let (train_x, test_x, train_y, test_y) = (
        x.narrow(0, 0, 3000)?,
        x.narrow(0, 3000, 600)?,
        y.narrow(0, 0, 3000)?,
        y.narrow(0, 3000, 600)?,
    );
    println!(
        "\n   classifying 6 kinds of shapes ({}): 3,000 training images, 600 held out",
        glyphs::SHAPES.join(", ")
    );

    let ff_store = ParamStore::new(1);
    let ff = models::feed_forward3(&ff_store, [400, 128, 64, 6])?;
    let acc = fit(&ff_store, &ff, (&train_x, &train_y), (&test_x, &test_y), 4)?;
    println!("     {:<48} held-out accuracy {:5.1}%", formula(&ff), 100.0 * acc);

    let cnn_store = ParamStore::new(2);
    let relu =
        |padding| ConvOptions { padding, activation: Activation::Relu, ..Default::default() };
    let cnn = Sequential::new()
        .then(Conv::new(cnn_store.sub(0), 1, 8, 5, relu(2))?)
        .then(MaxPool::new(2, 2)?)
        .then(Conv::new(cnn_store.sub(3), 8, 16, 3, relu(1))?)
        .then(MaxPool::new(2, 2)?)
        .then(Flatten)
        .then(FeedForward::new(cnn_store.sub(7), 16 * 5 * 5, 64, Activation::Relu)?)
        .then(FeedForward::new(cnn_store.sub(9), 64, 6, Activation::Identity)?);
    let acc = fit(&cnn_store, &cnn, (&train_x, &train_y), (&test_x, &test_y), 4)?;
    println!("     {:<48} held-out accuracy {:5.1}%", formula(&cnn), 100.0 * acc);
    let first = cnn_store
        .params()
        .into_iter()
        .find(|p| p.name() == "0.weight")
        .ok_or("the CNN has no first filters")?;
    let title = "the CNN's first-layer filters after training";
    save_filters_svg(&first.get(), title, &out.join("cnn_filters.svg"), 12)?;
    println!("   the CNN's 8 learned 5×5 filters: cnn_filters.svg");
    Ok(())
}

/// Adam (lr 2e-3) over shuffled batches of 32 for `epochs`; returns held-out accuracy.
fn fit(
    store: &ParamStore,
    net: &dyn Module,
    train: (&Tensor, &Tensor),
    test: (&Tensor, &Tensor),
    epochs: u64,
) -> CliResult<f64> {
    let adam = Adam::new(store.params(), AdamConfig::adam(2e-3))?;
    let mut trainer = Trainer::new(store, adam).epochs(epochs).progress(Progress::Quiet);
    let n = train.0.dims()[0];
    trainer.fit(&mut Epochs::shuffled(n, 32, 5), |rows: Vec<usize>, _: &mut Metrics| {
        let ids = Tensor::from_vec(rows.iter().map(|&i| i as i64).collect(), &[rows.len()])?;
        net.forward(&train.0.index_select(0, &ids)?)?
            .cross_entropy(&train.1.index_select(0, &ids)?, None)
    })?;
    let _g = no_grad();
    Ok(accuracy(&net.forward(test.0)?, test.1)?)
}

/// A small 2-D result on one line: [[4, 3, 4], [2, 4, 3], [2, 3, 4]].
fn rows(t: &Tensor) -> Result<String> {
    let d = t.dims();
    let (h, w) = (d[d.len() - 2], d[d.len() - 1]);
    let v = t.to_vec_f64()?;
    let row = |r: usize| {
        format!("[{}]", (0..w).map(|c| format!("{}", v[r * w + c])).collect::<Vec<_>>().join(", "))
    };
    Ok(format!("[{}]", (0..h).map(row).collect::<Vec<_>>().join(", ")))
}
