"""What the torch_reference_*.py scripts share: tensors as fixture JSON, and perturbed modules."""
import torch


def enc(t):
    """A tensor as `{"shape", "dtype": "f32" | "i64", "data"}`; bools become 0/1 i64."""
    kind = "i64" if t.dtype in (torch.int64, torch.bool) else "f32"
    data = t.detach().to(torch.int64 if kind == "i64" else torch.float32).flatten().tolist()
    if kind == "f32":
        data = [float(f"{v:.9g}") for v in data]
    return {"shape": list(t.shape), "dtype": kind, "data": data}


def perturbed(module):
    """PyTorch starts biases at 0 and norms at (1, 0): move every parameter so each one shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return module
