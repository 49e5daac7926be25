"""PyTorch's side of WORKLOADS.md, measured the way `ferrograd bench` measures ours: f32, all
cores, median seconds per repetition after a warm-up.

    python3 bench/torch_workloads.py W1 [--json]

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
            subprocess.check_call([python, "-m", "pip", "install", "-q", "torch", "numpy"])
    os.execv(python, [python, *sys.argv])


def median_seconds(fn, min_time=1.5):
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
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


WORKLOADS = {"W1": w1}


def main():
    ensure_torch()
    import torch
    torch.set_num_threads(os.cpu_count())
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    workload = (args[0] if args else "W1").upper()
    if workload not in WORKLOADS:
        sys.exit(f"unknown workload {workload}; available: {', '.join(WORKLOADS)}")
    result = WORKLOADS[workload]()
    if "--json" in sys.argv:
        print(json.dumps(result))
    else:
        print(f"{workload} (PyTorch {torch.__version__}, {torch.get_num_threads()} threads)")
        for k, v in result.items():
            print(f"  {k:<24} {v:>10.1f}")


if __name__ == "__main__":
    main()
