//! `ferrograd summary`: a model in the lecture's notation with a table of its layers.

use crate::CliResult;
use ferrograd_nn::{models, summary, ParamStore};

pub fn run(model: &str) -> CliResult<()> {
    let store = ParamStore::new(0);
    let (net, input): (Box<dyn ferrograd_nn::Module>, Vec<usize>) = match model {
        "alexnet" => (
            Box::new(models::alexnet(&store, &models::AlexNetConfig::mnist())?),
            vec![1, 1, 28, 28],
        ),
        "alexnet-imagenet" => (
            Box::new(models::alexnet(&store, &models::AlexNetConfig::imagenet())?),
            vec![1, 3, 224, 224],
        ),
        "cnn" => (Box::new(models::cnn(&store, 1, 10)?), vec![1, 1, 28, 28]),
        "feedforward" => {
            (Box::new(models::feed_forward3(&store, [784, 256, 256, 10])?), vec![1, 1, 28, 28])
        }
        other => {
            return Err(format!(
                "unknown model {other:?}; available: alexnet, alexnet-imagenet, cnn, feedforward"
            )
            .into())
        }
    };
    print!("{}", summary(net.as_ref(), &input)?);
    Ok(())
}
