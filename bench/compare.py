"""Runs workloads on both sides, one after the other on this machine, and prints the README
table: ferrograd, PyTorch, and their ratio for every key.

    python3 bench/compare.py W1 [W2 ... W7]  # builds ferrograd in release mode first
"""
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_json(cmd):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    workloads = [w.upper() for w in sys.argv[1:]] or ["W1"]
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferrograd-cli"], cwd=ROOT, check=True)
    rows = []
    for w in workloads:
        cmd = [str(ROOT / "target/release/ferrograd"), "bench", w, "--json"]
        mnist = ROOT.parent / "shared" / "data" / "mnist"
        text = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
        if w in ("W2", "W3") and mnist.exists():
            cmd += ["--data", str(mnist)]
        if w in ("W4", "W5") and text.exists():
            cmd += ["--data", str(text)]
        if w == "W6":
            cmd += ["--data", str(ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2")]
        # W1 and W7 (random matrices; random token ids) take no --data.
        ours = run_json(cmd)
        theirs = run_json([sys.executable, str(ROOT / "bench/torch_workloads.py"), w, "--json"])
        for key, value in ours.items():
            ref = theirs.get(key)
            ratio = f"{value / ref:.2f}×" if ref else "n/a"
            rows.append(f"| {w} | `{key}` | {value:,.1f} | {ref:,.1f} | {ratio} |")
    print("| workload | key | ferrograd | PyTorch | ferrograd / PyTorch |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
