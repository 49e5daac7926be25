"""PyTorch reference values for ferrograd-nn: losses, optimizer steps and a small composed
network. Writes crates/ferrograd-nn/tests/fixtures/nn.json.

    python3 scripts/torch_reference_nn.py
"""
import json
import pathlib

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/ferrograd-nn/tests/fixtures"


def enc(t):
    kind = "i64" if t.dtype == torch.int64 else "f32"
    data = t.detach().flatten().tolist()
    if kind == "f32":
        data = [float(f"{v:.9g}") for v in data]
    return {"shape": list(t.shape), "dtype": kind, "data": data}


def loss_case(name, fn, scores, target, **params):
    s = scores.clone().requires_grad_()
    loss = fn(s, target)
    loss.backward()
    return {"name": name, "params": params, "scores": enc(scores), "target": enc(target),
            "loss": loss.item(), "grad": enc(s.grad)}


scores = torch.randn(6, 5)
ids = torch.tensor([0, 4, 2, 2, 1, 3])
ids_ignored = torch.tensor([0, -100, 2, 2, -100, 3])
binary = torch.randn(4, 3)
losses = [
    loss_case("cross_entropy", lambda s, t: F.cross_entropy(s, t), scores, ids, smoothing=0.0),
    loss_case("cross_entropy", lambda s, t: F.cross_entropy(s, t, label_smoothing=0.1), scores, ids, smoothing=0.1),
    loss_case("cross_entropy", lambda s, t: F.cross_entropy(s, t, label_smoothing=0.2, ignore_index=-100),
              scores, ids_ignored, smoothing=0.2, ignore_index=-100),
    loss_case("mse", F.mse_loss, binary, torch.randn(4, 3)),
    loss_case("bce_with_logits", F.binary_cross_entropy_with_logits, binary, (torch.rand(4, 3) > 0.5).float()),
    loss_case("hinge", lambda s, y: torch.clamp(1 - s * y, min=0).mean(), binary,
              torch.where(torch.rand(4, 3) > 0.5, 1.0, -1.0)),
]

# Optimizers: two parameters, three steps with fixed gradients; parameters after each step.
w0, b0 = torch.randn(3, 4), torch.randn(4)
grads = [(torch.randn(3, 4), torch.randn(4)) for _ in range(3)]
optimizers = []
for name, make, params in [
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.1), {"lr": 0.1}),
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
     {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd", lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True),
     {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("adam", lambda p: torch.optim.Adam(p, lr=0.01), {"lr": 0.01}),
    ("adam", lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1), {"lr": 0.01, "weight_decay": 0.1}),
    ("adamw", lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), {"lr": 0.01, "weight_decay": 0.1}),
]:
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = make([w, b])
    after = []
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        after.append([enc(w), enc(b)])
    optimizers.append({"name": name, "params": params, "after": after})

# A small composition: Conv+ReLU, MaxPool, Flatten, Linear — forward and every gradient.
net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
x = torch.randn(2, 2, 6, 6)
y = torch.tensor([1, 3])
loss = F.cross_entropy(net(x), y)
loss.backward()
composed = {
    "x": enc(x), "y": enc(y), "loss": loss.item(),
    "state": {k: enc(v) for k, v in net.state_dict().items()},
    "grads": {k: enc(v.grad) for k, v in net.named_parameters()},
}

OUT.mkdir(parents=True, exist_ok=True)
(OUT / "nn.json").write_text(json.dumps({
    "torch": torch.__version__, "losses": losses, "optimizers": optimizers,
    "w0": enc(w0), "b0": enc(b0), "grads": [[enc(a), enc(b)] for a, b in grads], "composed": composed,
}))
print(f"wrote {OUT / 'nn.json'}")
