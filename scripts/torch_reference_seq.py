"""PyTorch reference values for ferrograd's sequence blocks: nn.RNN and nn.LSTM (padded
batches, both directions: outputs, final states and every gradient), nn.Embedding with a
padding index, collapsing a padded sequence, and stacked nn.LSTM / nn.RNN from initial states
with their state_dicts saved as safetensors. Writes crates/ferrograd-nn/tests/fixtures/seq.json
and rnn_stack_*.safetensors.

    python3 scripts/torch_reference_seq.py
"""
import json
import pathlib

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

torch.manual_seed(0)
OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/ferrograd-nn/tests/fixtures"


def enc(t):
    kind = "i64" if t.dtype == torch.int64 else "f32"
    data = t.detach().flatten().tolist()
    if kind == "f32":
        data = [float(f"{v:.9g}") for v in data]
    return {"shape": list(t.shape), "dtype": kind, "data": data}


def rnn_case(kind, bidirectional, lengths, b=3, t=5, d=3, h=4):
    cls = nn.LSTM if kind == "lstm" else nn.RNN
    net = cls(d, h, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(b, t, d, requires_grad=True)
    mask = torch.tensor([[1 if i < n else 0 for i in range(t)] for n in lengths])
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, state = net(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
    h_n, c_n = state if kind == "lstm" else (state, torch.zeros_like(state))
    r_out, r_h, r_c = torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n)
    loss = (out * r_out).sum() + (h_n * r_h).sum() + ((c_n * r_c).sum() if kind == "lstm" else 0)
    loss.backward()
    return {
        "kind": kind, "bidirectional": bidirectional, "hidden": h,
        "x": enc(x), "mask": enc(mask),
        "params": {k: enc(v) for k, v in net.named_parameters()},
        "out": enc(out), "h_n": enc(h_n), "c_n": enc(c_n),
        "r_out": enc(r_out), "r_h": enc(r_h), "r_c": enc(r_c),
        "grad_x": enc(x.grad),
        "grads": {k: enc(v.grad) for k, v in net.named_parameters()},
    }


rnn = [
    rnn_case("lstm", False, [5, 5, 5]),
    rnn_case("lstm", False, [5, 3, 1]),
    rnn_case("lstm", True, [5, 2, 4]),
    rnn_case("rnn", False, [5, 5, 5]),
    rnn_case("rnn", True, [4, 5, 2]),
]

# EmbedToken with a padding id, then mean and max over the real positions.
emb = nn.Embedding(7, 3, padding_idx=0)
ids = torch.tensor([[3, 1, 4, 0], [5, 2, 0, 0]])
mask = (ids != 0).long()
e = emb(ids)
m = mask.unsqueeze(-1).float()
mean = (e * m).sum(1) / m.sum(1)
mx = e.masked_fill(m == 0, float("-inf")).amax(1)
last = e[torch.arange(2), mask.sum(1) - 1]
r_mean, r_max, r_last = torch.randn_like(mean), torch.randn_like(mx), torch.randn_like(last)
((mean * r_mean).sum() + (mx * r_max).sum() + (last * r_last).sum()).backward()
embed = {
    "weight": enc(emb.weight), "ids": enc(ids), "mask": enc(mask),
    "embedded": enc(e), "mean": enc(mean), "max": enc(mx), "last": enc(last),
    "r_mean": enc(r_mean), "r_max": enc(r_max), "r_last": enc(r_last), "grad_weight": enc(emb.weight.grad),
}



def stack_case(kind, layers, bidirectional, lengths, b=3, t=5, d=3, h=4):
    """A stacked RNN from random initial states (layers·directions, B, H); its state_dict goes
    to a safetensors file, as a user would save it."""
    from safetensors.torch import save_file
    cls = nn.LSTM if kind == "lstm" else nn.RNN
    net = cls(d, h, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    n = layers * (2 if bidirectional else 1)
    x = torch.randn(b, t, d, requires_grad=True)
    h0 = torch.randn(n, b, h, requires_grad=True)
    c0 = torch.randn(n, b, h, requires_grad=True)
    mask = torch.tensor([[1 if i < m else 0 for i in range(t)] for m in lengths])
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, state = net(packed, (h0, c0) if kind == "lstm" else h0)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
    h_n, c_n = state if kind == "lstm" else (state, torch.zeros_like(state))
    r_out, r_h, r_c = torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n)
    loss = (out * r_out).sum() + (h_n * r_h).sum() + ((c_n * r_c).sum() if kind == "lstm" else 0)
    loss.backward()
    file = f"rnn_stack_{kind}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(OUT / file))
    case = {
        "kind": kind, "layers": layers, "bidirectional": bidirectional, "hidden": h, "file": file,
        "x": enc(x), "mask": enc(mask), "h0": enc(h0), "c0": enc(c0),
        "out": enc(out), "h_n": enc(h_n), "c_n": enc(c_n),
        "r_out": enc(r_out), "r_h": enc(r_h), "r_c": enc(r_c),
        "grad_x": enc(x.grad), "grad_h0": enc(h0.grad),
        "grads": {k: enc(v.grad) for k, v in net.named_parameters()},
    }
    if kind == "lstm":
        case["grad_c0"] = enc(c0.grad)
    return case


OUT.mkdir(parents=True, exist_ok=True)
stacks = [stack_case("lstm", 2, True, [5, 3, 4]), stack_case("rnn", 2, False, [4, 5, 2])]
(OUT / "seq.json").write_text(json.dumps({"torch": torch.__version__, "rnn": rnn, "embed": embed,
                                          "stacks": stacks}))
print(f"wrote {OUT / 'seq.json'}")
