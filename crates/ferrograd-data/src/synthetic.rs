//! Small generated data sets for the tour, examples and tests: same seed, same data.

use ferrograd::{Result, Rng, Tensor};

/// Interleaved spirals in the plane, one arm per class: `n` points, (n, 2) f32 coordinates in
/// about [-1, 1]² and (n,) i64 labels. Not linearly separable, so it needs a hidden layer.
///
/// ```
/// let mut rng = ferrograd::Rng::seed(0);
/// let (x, y) = ferrograd_data::synthetic::spirals(300, 3, 0.05, &mut rng).unwrap();
/// assert_eq!((x.dims(), y.dims()), (&[300, 2][..], &[300][..]));
/// ```
pub fn spirals(n: usize, classes: usize, noise: f64, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
    if classes == 0 {
        return Err(ferrograd::Error::value("spirals", "needs at least one class, got 0"));
    }
    let mut xy = Vec::with_capacity(2 * n);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % classes;
        let t = rng.uniform(); // position along the arm, 0 at the centre
        let angle = 4.0 * t
            + class as f64 * std::f64::consts::TAU / classes as f64
            + noise * 4.0 * rng.normal();
        xy.push((t * angle.cos()) as f32);
        xy.push((t * angle.sin()) as f32);
        labels.push(class as i64);
    }
    Ok((Tensor::from_vec(xy, &[n, 2])?, Tensor::from_vec(labels, &[n])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_balanced_classes() {
        let (a, la) = spirals(90, 3, 0.1, &mut Rng::seed(4)).unwrap();
        let (b, _) = spirals(90, 3, 0.1, &mut Rng::seed(4)).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let labels = la.to_vec::<i64>().unwrap();
        assert_eq!(
            (0..3).map(|c| labels.iter().filter(|&&l| l == c).count()).collect::<Vec<_>>(),
            vec![30; 3]
        );
        assert!(a.to_vec::<f32>().unwrap().iter().all(|v| v.abs() < 1.6));
        assert!(spirals(10, 0, 0.1, &mut Rng::seed(0)).is_err());
    }
}
