"""Runs workloads on both sides, one after the other on this machine, and prints the README
table: ferrograd, PyTorch, and their ratio for every key.

    python3 bench/compare.py W1 [W2 ... W8]              # builds ferrograd in release mode first
    python3 bench/compare.py --rounds 1 W7               # one pair of runs instead of three
    python3 bench/compare.py --ours /tmp/before W2 W7    # another ferrograd binary (no build)

Each round runs every workload on our side and then on PyTorch's; the table gives each side's
median over the rounds, their ratio, and the lowest and highest ratio of a single round. This
machine's speed changes by a fifth from one minute to the next (another tenant's load), so a
single pair of runs can catch one side in a slow minute and the other in a fast one; rounds
interleaved in time give both sides the same minutes.
"""
import json
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Keys of ours also compared with other keys of the other side: W5's generation (ours with its
# cache) against PyTorch with a cache written by hand, and against PyTorch recomputing the
# prefix; W6 in f32 against ONNX Runtime fp32 as well as PyTorch, and W6 in int8 against ONNX
# Runtime's dynamic int8 quantization (PyTorch eager has no fast int8 path to compare with).
ALSO = {
    ("W5", "generate_tokens_per_s"): ["generate_uncached_tokens_per_s"],
    ("W6", "sentences_per_s_b32_t128"): ["sentences_per_s_b32_t128_ort_fp32"],
    ("W6", "sentences_per_s_b32_t128_int8"): ["sentences_per_s_b32_t128_ort_int8"],
    ("W6", "sentences_per_s_b32_t128_bf16"): ["sentences_per_s_b32_t128_ort_fp32"],
}


def run_json(cmd):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def ours_command(w, binary):
    cmd = [binary, "bench", w, "--json"]
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    text = ROOT.parent / "shared" / "data" / "text" / "tinyshakespeare.txt"
    if w in ("W2", "W3") and mnist.exists():
        cmd += ["--data", str(mnist)]
    if w in ("W4", "W5") and text.exists():
        cmd += ["--data", str(text)]
    if w == "W6":
        cmd += ["--data", str(ROOT.parent / "shared" / "models" / "all-MiniLM-L6-v2")]
    # W1 and W7 (random matrices; random token ids) take no --data.
    return cmd


def main():
    args, rounds = sys.argv[1:], 3
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i : i + 2]
    binary = None
    if "--ours" in args:
        i = args.index("--ours")
        binary = args[i + 1]
        del args[i : i + 2]
    workloads = [w.upper() for w in args] or ["W1"]
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "ferrograd-cli"], cwd=ROOT, check=True)
        binary = str(ROOT / "target/release/ferrograd")
    ours, theirs = {}, {}
    for _ in range(rounds):
        for w in workloads:
            for key, value in run_json(ours_command(w, binary)).items():
                ours.setdefault((w, key), []).append(value)
            torch = [sys.executable, str(ROOT / "bench/torch_workloads.py"), w, "--json"]
            for key, value in run_json(torch).items():
                theirs.setdefault((w, key), []).append(value)
    print("| workload | key | ferrograd | PyTorch | ferrograd / PyTorch | rounds (lowest–highest) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (w, key), values in ours.items():
        mine = statistics.median(values)
        others = [o for o in ALSO.get((w, key), []) if (w, o) in theirs]
        refs = theirs.get((w, key))
        if refs:
            ref = statistics.median(refs)
            each = [a / b for a, b in zip(values, refs)]
            spread = f"{len(each)} ({min(each):.2f}–{max(each):.2f}×)"
            print(f"| {w} | `{key}` | {mine:,.1f} | {ref:,.1f} | {mine / ref:.2f}× | {spread} |")
        elif not others:
            print(f"| {w} | `{key}` | {mine:,.1f} | n/a | n/a | {len(values)} |")
        for other in others:
            refs = theirs[(w, other)]
            ref = statistics.median(refs)
            each = [a / b for a, b in zip(values, refs)]
            spread = f"{len(each)} ({min(each):.2f}–{max(each):.2f}×)"
            print(f"| {w} | `{key}` vs `{other}` | {mine:,.1f} | {ref:,.1f} | {mine / ref:.2f}× | {spread} |")


if __name__ == "__main__":
    main()
