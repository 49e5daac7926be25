"""PyTorch's side of `ferrograd train lm --model lstm`: the same character LSTM language model
(EmbedToken 64, LSTM 256, untied output), data (the whole text, the last 10% held out), batches
(32 random windows of 64 characters), optimizer (Adam 2e-3) and number of steps; prints the
held-out loss in nats per character, measured the same way (32 random held-out batches).

    python3 bench/torch_lm.py ../shared/data/text/tinyshakespeare.txt [--steps 2000]
"""
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from torch_workloads import ensure_torch  # noqa: E402


def main():
    ensure_torch()
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    steps = int(sys.argv[sys.argv.index("--steps") + 1]) if "--steps" in sys.argv else 2000
    text = open(args[0], encoding="utf-8").read()
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    held = round(len(ids) * 0.1)
    train, test = ids[:-held], ids[-held:]
    v = len(chars)
    torch.manual_seed(0)

    class Lm(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.lstm, self.head = nn.Embedding(v, 64), nn.LSTM(64, 256, batch_first=True), nn.Linear(256, v)

        def forward(self, x):
            return self.head(self.lstm(self.embed(x))[0])

    def batch(data, g):
        s = torch.randint(0, len(data) - 64, (32,), generator=g)
        return torch.stack([data[i:i + 64] for i in s]), torch.stack([data[i + 1:i + 65] for i in s])

    model = Lm()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    for step in range(steps):
        x, y = batch(train, g)
        loss = F.cross_entropy(model(x).reshape(-1, v), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    secs = time.perf_counter() - start
    g = torch.Generator().manual_seed(12345)
    with torch.no_grad():
        losses = []
        for _ in range(32):
            x, y = batch(test, g)
            losses.append(F.cross_entropy(model(x).reshape(-1, v), y.reshape(-1)).item())
    print(f"PyTorch {torch.__version__}: held-out loss {sum(losses) / len(losses):.4f} nats/char after {steps} steps "
          f"({steps * 32 * 64 / secs:.0f} tokens/s)")


if __name__ == "__main__":
    main()
