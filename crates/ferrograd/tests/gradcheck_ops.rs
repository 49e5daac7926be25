//! Every op's analytic gradient against central finite differences in f64, on the inputs of
//! the PyTorch fixtures.

mod common;
use common::*;
use ferrograd::gradcheck;

#[test]
fn every_op_passes_gradcheck() {
    let mut checked = std::collections::BTreeSet::new();
    for c in cases() {
        if c.upstream.is_none() || c.inputs.iter().map(|t| t.numel()).sum::<usize>() > 2000 {
            continue;
        }
        gradcheck(|xs| apply(&c.name, &c.params, xs), &c.inputs, 1e-6, 1e-5)
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        checked.insert(c.name.clone());
    }
    assert!(checked.len() >= 35, "gradchecked {} ops: {checked:?}", checked.len());
}

#[test]
fn gradcheck_catches_a_wrong_gradient() {
    // x·x computed as a fresh leaf product through detach has the wrong derivative (x, not 2x).
    let x = ferrograd::Tensor::from_vec(vec![0.5f64, -1.5], &[2]).unwrap();
    let err = gradcheck(|xs| xs[0].mul(&xs[0].detach()), &[x], 1e-6, 1e-5).unwrap_err();
    assert!(err.to_string().contains("analytic gradient"), "{err}");
}
