"""Compares two kernels from ncu source pages (tools/gpu_check.sh's ncu step writes them).

    python tools/ncu_compare.py A_src.csv B_src.csv [--top N]

Each file is `ncu -i REPORT --csv --page source --print-source sass` of one kernel (a profile
with the SourceCounters section). Prints the executed warp instructions per opcode for both
(and B - A), each opcode's share of the warp-state samples, and the instructions of each file
with the most excess shared-memory wavefronts (bank conflicts): the comparison behind
docs/perf-notes.md's "Our D=128 kernels against FA4's in ncu".
"""
import argparse
import collections
import csv

from sass_tile_loop import opcode  # noqa: E402  (tools/, the script's own folder)

SAMPLES = "Warp Stall Sampling (All Samples)"
COLUMNS = {"inst": "Instructions Executed", "samples": SAMPLES, "excess": "L1 Wavefronts Shared Excessive"}


def load(path):
    """The SASS lines of one source page: opcode, source text and the counters above."""
    rows = list(csv.reader(open(path, newline="")))
    start = next(i for i, r in enumerate(rows) if "Source" in r)
    header = {name: j for j, name in enumerate(rows[start])}
    lines = []
    for r in rows[start + 1:]:
        if len(r) < len(header):
            continue
        text = r[header["Source"]].strip()
        counters = {key: float(r[header[col]].replace(",", "") or 0) if col in header else 0.0
                    for key, col in COLUMNS.items()}
        lines.append(dict(text=text, opcode=opcode(text), **counters))
    return lines


def by_opcode(lines, key):
    totals = collections.Counter()
    for line in lines:
        totals[line["opcode"]] += line[key]
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--top", type=int, default=32, help="opcodes to list (by A + B instructions)")
    args = ap.parse_args()
    a, b = load(args.a), load(args.b)
    inst_a, inst_b = by_opcode(a, "inst"), by_opcode(b, "inst")
    samp_a, samp_b = by_opcode(a, "samples"), by_opcode(b, "samples")
    total_sa, total_sb = max(sum(samp_a.values()), 1.0), max(sum(samp_b.values()), 1.0)
    print(f"warp instructions: A {sum(inst_a.values()):.4g}  B {sum(inst_b.values()):.4g}")
    print(f"{'opcode':10s} {'A':>14s} {'B':>14s} {'B - A':>14s} {'samples A':>10s} {'samples B':>10s}")
    for op in sorted(set(inst_a) | set(inst_b), key=lambda o: -(inst_a[o] + inst_b[o]))[: args.top]:
        print(f"{op:10s} {inst_a[op]:14.0f} {inst_b[op]:14.0f} {inst_b[op] - inst_a[op]:14.0f} "
              f"{100 * samp_a[op] / total_sa:9.1f}% {100 * samp_b[op] / total_sb:9.1f}%")
    for name, lines in (("A", a), ("B", b)):
        excess = sum(line["excess"] for line in lines)
        print(f"excess shared-memory wavefronts, {name}: {excess:.4g}")
        for line in sorted(lines, key=lambda x: -x["excess"])[:8]:
            if line["excess"] > 0:
                print(f"  {line['excess']:12.0f} {line['inst']:12.0f}  {line['text'][:90]}")


if __name__ == "__main__":
    main()
