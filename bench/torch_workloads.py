"""PyTorch's side of WORKLOADS.md, measured the way `ferrograd bench` measures ours: f32, all
cores, median seconds per repetition after a warm-up.

    python3 bench/torch_workloads.py W1 [--json]
    torchrun --nproc-per-node 2 bench/torch_workloads.py W2 --json   # DDP, W2, W3 and W7

Under torchrun, W2, W3 and W7 train with DistributedDataParallel (gloo): each rank takes its
contiguous share of the same global batch and the cores divided by the ranks; rank 0 prints
the global throughput.

Without torch installed it makes a virtual environment (.venv-bench at the repository root),
installs torch there from PyPI, and runs itself inside it. Set TORCH_PYTHON to use another
interpreter that has torch.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def ensure_torch():
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    python = os.environ.get("TORCH_PYTHON")
    if not python:
        venv = ROOT / ".venv-bench"
        python = str(venv / "bin" / "python")
        if not pathlib.Path(python).exists():
            print(f"torch is missing: creating {venv} and installing torch (once)", file=sys.stderr)
            subprocess.check_call([sys.executable, "-m", "venv", str(venv)])
            subprocess.check_call([python, "-m", "pip", "install", "-q", "torch", "numpy", "transformers"])
    os.execv(python, [python, *sys.argv])


# (rank, ranks) under torchrun, else None: set by main.
RANKS = None


def data_parallel(model):
    """`model` wrapped in DDP under torchrun."""
    if RANKS is None:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model)


def share(*tensors):
    """This rank's contiguous share of a global batch (all of it alone)."""
    if RANKS is None:
        return tensors
    rank, n = RANKS
    size = len(tensors[0]) // n
    return tuple(t[rank * size:(rank + 1) * size] for t in tensors)


def median_seconds(fn, min_time=1.5, steps=None):
    """Median seconds of `fn` after a warm-up: for `min_time`, or under DDP for `steps`
    repetitions, since every rank must make the same number of calls."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < min_time if RANKS is None else len(times) < steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def w1():
    import torch
    out = {}
    g = torch.Generator().manual_seed(0)
    for n in (256, 1024, 2048):
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        with torch.no_grad():
            secs = median_seconds(lambda: torch.matmul(a, b))
        out[f"gflops_{n}"] = round(2 * n**3 / secs / 1e9, 1)
    return out


def mnist_or_random(n=8000):
    """The first n MNIST test images (../shared/data/mnist, as ferrograd reads them) or
    random images of the same shape."""
    import gzip
    import numpy as np
    import torch
    root = ROOT.parent / "shared" / "data" / "mnist"
    images, labels = root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        x = np.frombuffer(gzip.open(images).read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
        y = np.frombuffer(gzip.open(labels).read(), dtype=np.uint8, offset=8)[:n]
        return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.int64)
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_images_per_s(model, batch, steps):
    """Adam (lr 1e-3) steps with cross-entropy over shuffled batches; images per second."""
    import torch
    import torch.nn.functional as F
    x, y = mnist_or_random()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(2))
    batches = [(x[perm[i:i + batch]], y[perm[i:i + batch]]) for i in range(0, len(x) - batch + 1, batch)]
    model = data_parallel(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = {"i": 0}

    def step():
        bx, by = share(*batches[state["i"] % len(batches)])
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(bx), by).backward()
        opt.step()

    return round(batch / median_seconds(step, min_time=3.0, steps=steps), 1)


def w2():
    import torch.nn as nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    return {"train_images_per_s": train_images_per_s(model, 128, steps=1500)}


def w3():
    import torch.nn as nn
    model = nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
                          nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                          nn.Linear(64 * 7 * 7, 256), nn.ReLU(), nn.Linear(256, 10))
    return {"train_images_per_s": train_images_per_s(model, 64, steps=80)}


def w4():
    """LSTM character LM: Embedding(65→64), LSTM(64→256), Linear(256→65) at every position;
    batch 32 × 64 tokens from the first 200,000 characters of Tiny Shakespeare; Adam 2e-3."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    ids, v = char_ids()

    class Lm(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.lstm, self.head = nn.Embedding(v, 64), nn.LSTM(64, 256, batch_first=True), nn.Linear(256, v)

        def forward(self, x):
            return self.head(self.lstm(self.embed(x))[0])

    model = Lm()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    return {"train_tokens_per_s": round(32 * 64 / lm_step_seconds(model, opt, ids, v, 32, 64), 1)}


def char_ids():
    """The first 200,000 characters of Tiny Shakespeare as ids, or random ids (65 symbols)."""
    import torch
    path = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
    if path.exists():
        text = path.read_text()[:200_000]
        chars = sorted(set(text))
        ids = torch.tensor([chars.index(c) for c in text])
    else:
        ids = torch.randint(0, 65, (200_000,), generator=torch.Generator().manual_seed(1))
    return ids, max(65, int(ids.max()) + 1)


def lm_step_seconds(model, opt, ids, v, batch, context):
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(2)
    starts = [torch.randint(0, len(ids) - context - 1, (batch,), generator=g) for _ in range(64)]
    batches = [(torch.stack([ids[s:s + context] for s in st]), torch.stack([ids[s + 1:s + context + 1] for s in st]))
               for st in starts]
    state = {"i": 0}

    def step():
        x, y = batches[state["i"] % len(batches)]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).reshape(-1, v), y.reshape(-1)).backward()
        opt.step()

    return median_seconds(step, min_time=3.0)


def w5_model(v):
    """W5's model (also bench/torch_lm.py's transformer): 4 pre-norm blocks, d 128, 4 heads,
    FF 512 GELU, 128 learned positions, tied output, embeddings N(0, 0.02) as ferrograd's."""
    import torch
    import torch.nn as nn

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(v, 128)
            nn.init.normal_(self.embed.weight, std=0.02)
            self.pos = nn.Parameter(torch.randn(128, 128) * 0.02)
            layer = nn.TransformerEncoderLayer(128, 4, 512, dropout=0.0, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.blocks = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(128)

        def forward(self, x):
            t = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(t)
            h = self.blocks(self.embed(x) + self.pos[:t], mask=mask, is_causal=True)
            return self.norm(h) @ self.embed.weight.T

    return Gpt()


def w5():
    """Transformer character LM: 4 pre-norm blocks, d 128, 4 heads, FF 512 GELU, learned
    positions, context 128, tied output; batch 16 × 128; AdamW 1e-3. Then greedy generation of
    127 tokens, batch 1, with a key/value cache written by hand (the model has none), and,
    for comparison, recomputing the whole prefix for each token."""
    import torch
    import torch.nn as nn
    ids, v = char_ids()

    model = w5_model(v)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train = 16 * 128 / lm_step_seconds(model, opt, ids, v, 16, 128)

    def generate_uncached():
        x = torch.tensor([[1]])
        with torch.no_grad():
            for _ in range(127):
                nxt = model(x)[:, -1].argmax(-1, keepdim=True)
                x = torch.cat([x, nxt], 1)
        return x

    def generate():
        """The same greedy loop with a key/value cache: each step runs only the new token."""
        import torch.nn.functional as F
        tok, out, cache = torch.tensor([[1]]), [1], [None] * len(model.blocks.layers)
        with torch.no_grad():
            for t in range(127):
                h = model.embed(tok) + model.pos[t:t + 1]
                for i, layer in enumerate(model.blocks.layers):
                    attn = layer.self_attn
                    q, k, v = F.linear(layer.norm1(h), attn.in_proj_weight, attn.in_proj_bias).split(128, -1)
                    if cache[i] is not None:
                        k, v = torch.cat([cache[i][0], k], 1), torch.cat([cache[i][1], v], 1)
                    cache[i] = (k, v)
                    heads = lambda x: x.view(1, -1, 4, 32).transpose(1, 2)
                    a = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
                    h = h + attn.out_proj(a.transpose(1, 2).reshape(1, 1, 128))
                    h = h + layer.linear2(F.gelu(layer.linear1(layer.norm2(h))))
                tok = (model.norm(h) @ model.embed.weight.T)[:, -1].argmax(-1, keepdim=True)
                out.append(int(tok))
        return out

    model.eval()
    assert generate() == generate_uncached()[0].tolist(), "the cached loop must choose as the full one"
    gen = 127 / median_seconds(generate, min_time=3.0)
    uncached = 127 / median_seconds(generate_uncached, min_time=3.0)
    return {"train_tokens_per_s": round(train, 1), "generate_tokens_per_s": round(gen, 1),
            "generate_uncached_tokens_per_s": round(uncached, 1)}


def w6():
    """all-MiniLM-L6-v2 (Hugging Face BertModel from ../shared/models), batch 32 × 128 tokens,
    no padding, mean pooling and normalization as sentence-transformers does; sentences/s. In
    PyTorch eager, and in ONNX Runtime (the model exported with torch.onnx) in fp32 and
    dynamically quantized to int8 (`quantize_dynamic`: int8 weights, activations quantized at
    every call), the int8 inference a user would pick."""
    import torch
    from transformers import BertModel
    path = ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2"
    model = BertModel.from_pretrained(str(path), local_files_only=True).eval()
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1000, 30000, (32, 128), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)

    def run():
        with torch.no_grad():
            h = model(input_ids=ids, attention_mask=mask).last_hidden_state
            torch.nn.functional.normalize(h.mean(1), dim=-1)

    result = {"sentences_per_s_b32_t128": round(32 / median_seconds(run, min_time=3.0), 1)}
    for key, session in ort_sessions(model, ids, mask).items():
        feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}

        def run_ort():
            import numpy as np
            h = session.run(None, feed)[0]
            pooled = h.mean(1)
            pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)

        result[key] = round(32 / median_seconds(run_ort, min_time=3.0), 1)
    return result


def ort_sessions(model, ids, mask):
    """ONNX Runtime sessions of `model` in fp32 and int8, exported once into .venv-bench/onnx."""
    import torch
    ensure_package("onnxruntime", "onnx")
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    out = ROOT / ".venv-bench" / "onnx"
    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / "minilm_fp32.onnx", out / "minilm_int8.onnx"
    class Hidden(torch.nn.Module):
        """The model's last hidden state from ids and mask, both given by name."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    if not fp32.exists():
        torch.onnx.export(Hidden().eval(), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}})
    if not int8.exists():
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def session(path):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    return {"sentences_per_s_b32_t128_ort_fp32": session(fp32),
            "sentences_per_s_b32_t128_ort_int8": session(int8)}


def ensure_package(*names):
    """Installs missing packages into this interpreter's environment (the bench one)."""
    import importlib.util
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        print(f"installing {', '.join(missing)} (once)", file=sys.stderr)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])


def w7():
    """Transformer encoder-decoder (torch.nn.Transformer, post-norm): 2 + 2 layers, d 128, 4 heads,
    FF 512 GELU, dropout 0, learned positions (64) added on both sides, vocabulary 1000 shared by
    source and target, output projection tied to the shared embedding; batch 32, source 32 and
    target 32 tokens (random ids), causal target mask, cross-entropy over every target position;
    AdamW 1e-3. Target tokens per second of forward, backward and optimizer step."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    v, d, batch, src_len, tgt_len = 1000, 128, 32, 32, 32
    torch.manual_seed(0)

    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.pos = nn.Embedding(v, d), nn.Embedding(64, d)
            self.transformer = nn.Transformer(d, 4, 2, 2, 512, dropout=0.0, activation="gelu", batch_first=True)

        def forward(self, src, tgt):
            s, t = src.shape[1], tgt.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(t)
            h = self.transformer(self.embed(src) + self.pos.weight[:s], self.embed(tgt) + self.pos.weight[:t],
                                 tgt_mask=mask, tgt_is_causal=True)
            return h @ self.embed.weight.T

    model = data_parallel(Seq2Seq())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randint(0, v, (batch, src_len), generator=g), torch.randint(0, v, (batch, tgt_len + 1), generator=g))
               for _ in range(16)]
    state = {"i": 0}

    def step():
        src, tgt = share(*batches[state["i"] % len(batches)])
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        logits = model(src, tgt[:, :-1])  # teacher forcing: predict tgt[1:] from tgt[:-1]
        F.cross_entropy(logits.reshape(-1, v), tgt[:, 1:].reshape(-1)).backward()
        opt.step()

    seconds = median_seconds(step, min_time=3.0, steps=40)
    return {"train_tokens_per_s": round(batch * tgt_len / seconds, 1)}


def w8():
    """GPT-2 small (transformers' GPT2LMHeadModel, the 124M configuration, random weights),
    batch 1, a 32-token prompt, 128 new tokens greedy through `generate` with its cache.
    Prefill is a call for one new token; generation counts the whole call."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    g = torch.Generator().manual_seed(8)
    prompt = torch.randint(0, model.config.vocab_size, (1, 32), generator=g)
    mask = torch.ones_like(prompt)

    def run(n):
        with torch.no_grad():
            model.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                           use_cache=True, pad_token_id=model.config.eos_token_id)

    prefill = median_seconds(lambda: run(1), min_time=3.0)
    generate = median_seconds(lambda: run(128), min_time=3.0)
    return {"prefill_tokens_per_s": round(32 / prefill, 1), "generate_tokens_per_s": round(128 / generate, 1)}


WORKLOADS = {"W1": w1, "W2": w2, "W3": w3, "W4": w4, "W5": w5, "W6": w6, "W7": w7, "W8": w8}


def main():
    global RANKS
    ensure_torch()
    import torch
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    workload = (args[0] if args else "W1").upper()
    if workload not in WORKLOADS:
        sys.exit(f"unknown workload {workload}; available: {', '.join(WORKLOADS)}")
    if "WORLD_SIZE" in os.environ:
        import torch.distributed as dist
        if workload not in ("W2", "W3", "W7"):
            sys.exit(f"{workload} has no data-parallel form; W2, W3 and W7 do")
        dist.init_process_group("gloo")
        RANKS = (dist.get_rank(), dist.get_world_size())
        torch.set_num_threads(max(1, os.cpu_count() // RANKS[1]))
    else:
        torch.set_num_threads(os.cpu_count())
    result = WORKLOADS[workload]()
    if RANKS is not None:
        result.update(ranks=RANKS[1], threads_per_rank=torch.get_num_threads())
        dist.destroy_process_group()
        if RANKS[0] != 0:
            return
    if "--json" in sys.argv:
        print(json.dumps(result))
    else:
        print(f"{workload} (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)")
        for k, v in result.items():
            print(f"  {k:<24} {v:>10.1f}")


if __name__ == "__main__":
    main()
