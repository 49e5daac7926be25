"""PyTorch reference values for ferrograd's parity tests.

Writes crates/ferrograd/tests/fixtures/ops.json (every op: inputs, output, and the gradient of
sum(output * upstream) for each float input) and tiny_mlp.json (a two-layer network trained
200 steps with plain gradient descent: initial weights, data, and the loss at every step).

    python3 scripts/torch_reference.py          # needs torch; bench/torch_env.sh makes a venv
"""
import json
import pathlib

import torch
import torch.nn.functional as F

torch.manual_seed(0)
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/ferrograd/tests/fixtures"


def rand(*shape, positive=False, dtype=torch.float32):
    x = torch.randn(*shape, dtype=dtype)
    return x.abs() + 0.5 if positive else x


def enc(t):
    kind = "i64" if t.dtype == torch.int64 else ("f64" if t.dtype == torch.float64 else "f32")
    data = t.flatten().tolist()
    if kind == "f32":  # 9 significant digits round-trip an f32 exactly
        data = [float(f"{v:.9g}") for v in data]
    return {"shape": list(t.shape), "dtype": kind, "data": data}


cases = []


def case(name, fn, inputs, **params):
    """Runs fn(*inputs) and records output and the gradients of sum(output * upstream)."""
    leaves = [x.clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*leaves)
    upstream = torch.randn(out.shape, dtype=out.dtype) if out.is_floating_point() else None
    grads = [None] * len(leaves)
    if upstream is not None and any(x.requires_grad for x in leaves):
        (out * upstream).sum().backward()
        grads = [enc(x.grad) if x.grad is not None else None for x in leaves]
    cases.append({
        "name": name,
        "params": params,
        "inputs": [enc(x.detach()) for x in inputs],
        "output": enc(out.detach()),
        "upstream": enc(upstream) if upstream is not None else None,
        "grads": grads,
    })


# Broadcasting arithmetic
for name, fn in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul), ("div", torch.div)]:
    case(name, fn, [rand(2, 3, 4), rand(3, 1, positive=name == "div")], op=name)
    case(name, fn, [rand(4), rand(2, 1, 4, positive=name == "div")], op=name)
    case(name, fn, [rand(3, 5), rand(3, 5, positive=name == "div")], op=name)

# Unary functions
unary = {
    "neg": (torch.neg, False), "exp": (torch.exp, False), "log": (torch.log, True),
    "sqrt": (torch.sqrt, True), "abs": (torch.abs, False), "tanh": (torch.tanh, False),
    "sigmoid": (torch.sigmoid, False), "relu": (torch.relu, False),
    "gelu": (F.gelu, False), "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), False),
}
for name, (fn, pos) in unary.items():
    case(name, fn, [rand(4, 7, positive=pos)], op=name)
case("pow", lambda x: x.pow(3.0), [rand(3, 4)], op="pow", p=3.0)
case("pow", lambda x: x.pow(0.5), [rand(3, 4, positive=True)], op="pow", p=0.5)
case("affine", lambda x: 2.5 * x - 1.0, [rand(3, 4)], op="affine", a=2.5, b=-1.0)

# Reductions
case("sum", lambda x: x.sum(dim=[1], keepdim=False), [rand(3, 4, 5)], op="sum", dims=[1], keepdim=False)
case("sum", lambda x: x.sum(dim=[0, 2], keepdim=True), [rand(3, 4, 5)], op="sum", dims=[0, 2], keepdim=True)
case("sum", lambda x: x.sum(dim=[-1], keepdim=False), [rand(30, 40)], op="sum", dims=[-1], keepdim=False)
case("mean", lambda x: x.mean(dim=[0], keepdim=False), [rand(3, 4, 5)], op="mean", dims=[0], keepdim=False)
case("mean", lambda x: x.mean(dim=[1, 2], keepdim=True), [rand(3, 4, 5)], op="mean", dims=[1, 2], keepdim=True)
case("max", lambda x: x.amax(dim=[1], keepdim=False), [rand(3, 4, 5)], op="max", dims=[1], keepdim=False)
case("max", lambda x: x.amax(dim=[0, 2], keepdim=True), [rand(3, 4, 5)], op="max", dims=[0, 2], keepdim=True)
case("min", lambda x: x.amin(dim=[-1], keepdim=False), [rand(3, 4, 5)], op="min", dims=[-1], keepdim=False)

# Softmax family and losses
case("softmax", lambda x: torch.softmax(x, dim=-1), [rand(4, 6)], op="softmax", dim=-1)
case("softmax", lambda x: torch.softmax(x, dim=1), [rand(2, 5, 3)], op="softmax", dim=1)
case("log_softmax", lambda x: torch.log_softmax(x, dim=-1), [rand(4, 6)], op="log_softmax", dim=-1)
case("log_softmax", lambda x: torch.log_softmax(x, dim=0), [rand(5, 3)], op="log_softmax", dim=0)
targets = torch.tensor([0, 3, 2, 2, 1, 4, 0, 3])
case("cross_entropy", lambda x, t: F.cross_entropy(x, t), [rand(8, 5), targets], op="cross_entropy")
ignore = torch.tensor([0, -100, 2, 2, -100, 4, 0, 3])
case("cross_entropy", lambda x, t: F.cross_entropy(x, t, ignore_index=-100), [rand(8, 5), ignore],
     op="cross_entropy", ignore_index=-100)
case("mse_loss", lambda a, b: F.mse_loss(a, b), [rand(4, 5), rand(4, 5)], op="mse_loss")

# Matrix products
case("matmul", torch.matmul, [rand(3, 4), rand(4, 5)], op="matmul")
case("matmul", torch.matmul, [rand(2, 3, 4, 5), rand(5, 6)], op="matmul")
case("matmul", torch.matmul, [rand(2, 1, 3, 4), rand(1, 5, 4, 2)], op="matmul")
case("matmul", torch.matmul, [rand(64, 96), rand(96, 80)], op="matmul")

case("linear", lambda x, w, b: F.linear(x, w, b), [rand(4, 5), rand(3, 5), rand(3)], op="linear")
case("linear", lambda x, w: F.linear(x, w), [rand(2, 3, 5), rand(4, 5)], op="linear")

# Movement
case("reshape", lambda x: x.reshape(4, 6), [rand(2, 3, 4)], op="reshape", dims=[4, 6])
case("permute", lambda x: x.permute(2, 0, 1), [rand(2, 3, 4)], op="permute", perm=[2, 0, 1])
case("transpose", lambda x: x.transpose(0, 2), [rand(2, 3, 4)], op="transpose", d0=0, d1=2)
case("narrow", lambda x: x.narrow(1, 1, 2), [rand(2, 4, 3)], op="narrow", dim=1, start=1, len=2)
case("concat", lambda a, b: torch.cat([a, b], dim=1), [rand(2, 3, 4), rand(2, 2, 4)], op="concat", dim=1)
case("stack", lambda a, b: torch.stack([a, b], dim=1), [rand(2, 3), rand(2, 3)], op="stack", dim=1)
case("broadcast_to", lambda x: x.expand(2, 3, 4), [rand(3, 1)], op="broadcast_to", dims=[2, 3, 4])
ids = torch.tensor([2, 0, 2, 1])
case("index_select", lambda x, i: x.index_select(0, i), [rand(3, 4), ids], op="index_select", dim=0)
case("index_select", lambda x, i: x.index_select(1, i), [rand(2, 3, 2), ids], op="index_select", dim=1)
gidx = torch.tensor([[0, 2, 1], [1, 1, 0]])
case("gather", lambda x, i: x.gather(0, torch.cat([i, i[:1]])), [rand(3, 3), gidx], op="gather", dim=0)
case("gather", lambda x, i: x.gather(1, i), [rand(2, 5), gidx], op="gather", dim=1)
case("scatter_add", lambda x, i, s: x.scatter_add(1, i, s), [rand(2, 4), gidx, rand(2, 3)],
     op="scatter_add", dim=1)
cond = torch.tensor([[1, 0, 1], [0, 0, 1]])
case("where_cond", lambda c, a, b: torch.where(c != 0, a, b), [cond, rand(2, 3), rand(1, 3)], op="where_cond")
case("masked_fill", lambda x, m: x.masked_fill(m != 0, -2.0), [rand(2, 3), cond], op="masked_fill", value=-2.0)

# Comparisons (no gradient) and dtype casts
for name, fn in [("eq", torch.eq), ("ne", torch.ne), ("lt", torch.lt), ("le", torch.le), ("gt", torch.gt), ("ge", torch.ge)]:
    a = torch.randint(0, 3, (3, 4)).float()
    case(name, lambda x, y, fn=fn: fn(x, y).long(), [a, torch.randint(0, 3, (4,)).float()], op=name)
case("to_dtype", lambda x: x.double(), [rand(3, 4)], op="to_dtype", dtype="f64")

# Convolution: strides 1 and 2, paddings 0-2, several channels, batch > 1, with and without bias
for (n, c, h, w, o, k, stride, pad, bias) in [
    (2, 3, 7, 6, 4, 3, 1, 0, True), (2, 3, 8, 8, 5, 3, 2, 1, True), (3, 2, 6, 7, 3, 5, 1, 2, False),
    (1, 1, 5, 5, 1, 3, 1, 0, False), (2, 4, 9, 9, 2, 2, 2, 0, True), (2, 2, 6, 6, 3, (3, 1), (2, 1), (1, 0), True),
]:
    kh, kw = k if isinstance(k, tuple) else (k, k)
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    ph, pw = pad if isinstance(pad, tuple) else (pad, pad)
    inputs = [rand(n, c, h, w), rand(o, c, kh, kw)] + ([rand(o)] if bias else [])
    case("conv2d", lambda x, wt, b=None, s=(sh, sw), p=(ph, pw): F.conv2d(x, wt, b, stride=s, padding=p),
         inputs, op="conv2d", stride=[sh, sw], padding=[ph, pw])

# Max pooling: 2x2/2, 3x3/2 (overlapping), 3x3/1, with padding
for (shape, k, stride, pad) in [((2, 3, 6, 6), 2, 2, 0), ((2, 2, 7, 7), 3, 2, 0), ((1, 2, 5, 6), 3, 1, 0),
                                ((2, 2, 6, 5), 3, 2, 1), ((1, 1, 4, 4), 2, 2, 0)]:
    case("max_pool2d", lambda x, k=k, s=stride, p=pad: F.max_pool2d(x, k, s, p), [rand(*shape)],
         op="max_pool2d", kernel=[k, k], stride=[stride, stride], padding=[pad, pad])

# f64 through the same paths
case("matmul", torch.matmul, [rand(3, 4, dtype=torch.float64), rand(4, 2, dtype=torch.float64)], op="matmul")
case("softmax", lambda x: torch.softmax(x, dim=-1), [rand(3, 4, dtype=torch.float64)], op="softmax", dim=-1)

OUT.mkdir(parents=True, exist_ok=True)
(OUT / "ops.json").write_text(json.dumps({"torch": torch.__version__, "cases": cases}))


# A tiny MLP trained with plain gradient descent: the loss at every one of 200 steps.
def tiny_mlp():
    g = torch.Generator().manual_seed(1)
    n, d, h, c = 64, 4, 16, 3
    x = torch.randn(n, d, generator=g)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).long() + (x[:, 3] > 1).long()
    w1 = (torch.randn(d, h, generator=g) * 0.5).requires_grad_()
    b1 = torch.zeros(h).requires_grad_()
    w2 = (torch.randn(h, c, generator=g) * 0.5).requires_grad_()
    b2 = torch.zeros(c).requires_grad_()
    init = {k: enc(v.detach().clone()) for k, v in dict(w1=w1, b1=b1, w2=w2, b2=b2).items()}
    losses, lr = [], 0.5
    for _ in range(200):
        loss = F.cross_entropy(torch.relu(x @ w1 + b1) @ w2 + b2, y)
        losses.append(loss.item())
        for p in (w1, b1, w2, b2):
            p.grad = None
        loss.backward()
        with torch.no_grad():
            for p in (w1, b1, w2, b2):
                p -= lr * p.grad
    return {"x": enc(x), "y": enc(y), "init": init, "lr": lr, "losses": losses}


(OUT / "tiny_mlp.json").write_text(json.dumps(tiny_mlp()))
print(f"wrote {len(cases)} op cases and the tiny MLP curve to {OUT}")
