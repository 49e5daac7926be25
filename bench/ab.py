"""Compares two ferrograd binaries on one workload, runs interleaved (A, B, B, A, A, B, ...), and
prints each key's median and best for both: how a change is measured on a noisy machine.

    cp target/release/ferrograd /tmp/before   # build, copy, change, build again
    python3 bench/ab.py W4 /tmp/before target/release/ferrograd --runs 5
"""
import json
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DATA = {
    "W2": SHARED / "data" / "mnist",
    "W3": SHARED / "data" / "mnist",
    "W4": SHARED / "data" / "text" / "tinyshakespeare.txt",
    "W5": SHARED / "data" / "text" / "tinyshakespeare.txt",
    "W6": SHARED / "models" / "all-MiniLM-L6-v2",
}


def measure(binary, workload):
    cmd = [binary, "bench", workload, "--json"]
    if workload in DATA and DATA[workload].exists():
        cmd += ["--data", str(DATA[workload])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    args, runs = sys.argv[1:], 5
    if "--runs" in args:
        i = args.index("--runs")
        runs = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 3:
        sys.exit(__doc__)
    workload, a, b = args[0].upper(), args[1], args[2]
    results = {a: [], b: []}
    for run in range(runs):
        # Which binary goes first alternates: the first of a pair can find the machine in
        # another state than the second, and a fixed order would credit that to one binary.
        for binary in (a, b) if run % 2 == 0 else (b, a):
            results[binary].append(measure(binary, workload))
    for binary, rows in results.items():
        cells = [
            f"{key}: median {statistics.median(r[key] for r in rows):,.1f}, best {max(r[key] for r in rows):,.1f}"
            for key in sorted(rows[0])
        ]
        print(f"{binary}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
