"""The rational approximation of erf behind ferrograd's f32 GELU (backend/cpu/mod.rs, `erf_f32`).

erf(z) ≈ z·P(z²)/Q(z²) on 0 ≤ z ≤ 3.9 (beyond, erf is 1 to within 4e-8), P of degree 6 and Q of
degree 4 with Q(0) = 1: linearized least squares, z·P − erf·Q = erf, reweighted each round by
1/|Q| (toward the true error) and by the error itself (Lawson's step toward minimax). Prints the
coefficients and the largest error in f64 and in f32 Horner arithmetic.

    .venv-bench/bin/python scripts/fit_erf.py     # needs numpy (bench/torch_workloads.py's venv has it)
"""
import math

import numpy as np

Z_MAX, P_TERMS, Q_TERMS, ROUNDS = 3.9, 7, 5, 100

z = np.linspace(0.0, Z_MAX, 20001)[1:]
f = np.array([math.erf(v) for v in z])
z2 = z * z


def horner(coefficients, x):
    acc = x.dtype.type(coefficients[-1])
    for c in coefficients[-2::-1]:
        acc = acc * x + x.dtype.type(c)
    return acc


scale, lawson, best = np.ones_like(z), np.ones_like(z), None
for _ in range(ROUNDS):
    a = np.column_stack([z * z2**k for k in range(P_TERMS)] + [-f * z2**k for k in range(1, Q_TERMS)])
    w = scale * lawson
    sol, *_ = np.linalg.lstsq(a * w[:, None], f * w, rcond=None)
    p, q = sol[:P_TERMS], np.concatenate([[1.0], sol[P_TERMS:]])
    err = z * horner(p, z2) / horner(q, z2) - f
    scale = 1.0 / np.abs(horner(q, z2))
    lawson = lawson * (np.abs(err) + 1e-300) ** 0.3
    lawson /= lawson.mean()
    if best is None or np.abs(err).max() < best[0]:
        best = (np.abs(err).max(), p, q)

worst, p, q = best
z32 = z.astype(np.float32)
f32_err = np.abs((z32 * horner(p, z32 * z32) / horner(q, z32 * z32)).astype(np.float64) - f).max()
print(f"largest error: {worst:.3g} in f64, {f32_err:.3g} in f32")
print("P:", ", ".join(f"{c:.9e}" for c in p))
print("Q:", ", ".join(f"{c:.9e}" for c in q))
