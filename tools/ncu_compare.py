"""Compares two kernels from ncu source pages (tools/gpu_check.sh's ncu step writes them).

    python tools/ncu_compare.py A_src.csv B_src.csv [--top N]

Each file is `ncu -i REPORT --csv --page source --print-source sass` of one kernel (a profile
with the SourceCounters section). Prints the executed warp instructions per opcode for both
(and B - A), each opcode's share of the warp-state samples, the instructions of each file
with the most excess shared-memory wavefronts (bank conflicts), and where each kernel's warps
wait: the share of the samples in its tile loop (sass_tile_loop.py's rule, applied to the
page's own SASS) with the loop's leading stall reasons, and the instructions holding the most
samples (offsets from the kernel's first instruction, as in cuobjdump) with theirs, their
executions (which tell the roles apart: once per tile per consumer warp, once per tile for the
loader, ...) and, for a branch of an mbarrier wait, the barrier it polls (its shared-memory
offset, to match against the kernel's Smem layout). The
comparisons behind docs/perf-notes.md's "Our D=128 kernels against FA4's in ncu" and "The D=128
backward against FA4's in ncu".
"""
import argparse
import collections
import csv
import re

from sass_tile_loop import opcode, tile_loop  # noqa: E402  (tools/, the script's own folder)

SAMPLES = "Warp Stall Sampling (All Samples)"
COLUMNS = {"inst": "Instructions Executed", "samples": SAMPLES, "excess": "L1 Wavefronts Shared Excessive"}


def number(text):
    return float(text.replace(",", "") or 0)


def load(path):
    """The SASS lines of one source page: opcode, source text, offset from the kernel's first
    instruction, the counters above and the samples per stall reason ("stalls")."""
    rows = list(csv.reader(open(path, newline="")))
    start = next(i for i, r in enumerate(rows) if "Source" in r)
    header = {name: j for j, name in enumerate(rows[start])}
    reasons = [n for n in header if n.startswith("stall_") and "Not Issued" not in n]
    lines = []
    for r in rows[start + 1:]:
        if len(r) < len(header):
            continue
        text = r[header["Source"]].strip()
        counters = {key: number(r[header[col]]) if col in header else 0.0 for key, col in COLUMNS.items()}
        stalls = {n[len("stall_"):]: number(r[header[n]]) for n in reasons}
        # The page's reasons leave some samples out (a wgmma's own wait, most of an HGMMA's).
        stalls["unlisted"] = max(counters["samples"] - sum(stalls.values()), 0.0)
        lines.append(dict(text=text, opcode=opcode(text), address=int(r[header["Address"]], 16), stalls=stalls,
                          **counters))
    base = min((line["address"] for line in lines), default=0)
    for line in lines:
        line["offset"] = line["address"] - base
    return lines


def leading(stalls, total, n):
    """The n stall reasons with the most samples, as 'reason share%' of total."""
    top = sorted(stalls.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in top if v > 0)


def mbarrier_of(lines, i):
    """The mbarrier operand a predicated branch at lines[i] waits on, or "": the
    `SYNCS.PHASECHK` that last sets its predicate (up to 64 instructions before it, where
    ptxas hoists the first try; none if another instruction sets it later), else the one at
    its target (the retry loop)."""
    m = re.match(r"@!?(P\d+)\s+BRA\S*\s+(0x[0-9a-f]+)", lines[i]["text"])
    if not m:
        return ""
    pred, target = m.group(1), int(m.group(2), 16)
    trywait = re.compile(r"SYNCS\.PHASECHK\S*\s+" + pred + r",\s*(\[[^\]]*\])")
    sets_pred = re.compile(r"^(@!?P\d+\s+)?\S+\s+" + pred + r",")
    for line in reversed(lines[max(0, i - 64):i]):
        found = trywait.search(line["text"])
        if found:
            return found.group(1)
        if sets_pred.match(line["text"]):
            return ""
    for line in lines:
        if line["address"] == target:
            found = trywait.search(line["text"])
            return found.group(1) if found else ""
    return ""


def waits(name, lines, top):
    """Where the kernel's warps wait: its tile loop's share of the samples and stall reasons,
    and the `top` instructions with the most samples."""
    total = max(sum(line["samples"] for line in lines), 1.0)
    found = tile_loop([(line["address"], line["text"]) for line in lines])  # branches name absolute addresses
    if found is None:
        print(f"{name}: no tile loop found")
    else:
        loop = [line for line in lines if found[0] <= line["address"] <= found[1]]
        head, tail = loop[0]["offset"], loop[-1]["offset"]
        in_loop = sum(line["samples"] for line in loop)
        reasons = collections.Counter()
        for line in loop:
            reasons.update(line["stalls"])
        print(f"{name}: tile loop {head:#x}-{tail:#x} holds {100 * in_loop / total:.1f}% of the samples; "
              f"there: {leading(reasons, max(in_loop, 1.0), 6)}")
    order = sorted(range(len(lines)), key=lambda i: -lines[i]["samples"])
    for i in order[:top]:
        line, barrier = lines[i], mbarrier_of(lines, i)
        print(f"  {line['offset']:#7x} {100 * line['samples'] / total:5.2f}%  {line['text'][:64]:64s} "
              f"x{line['inst']:<11.4g} {leading(line['stalls'], max(line['samples'], 1.0), 2)}"
              + (f"; waits on mbarrier {barrier}" if barrier else ""))


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
    ap.add_argument("--top-lines", type=int, default=12, help="instructions to list per kernel (by samples)")
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
    for name, lines in (("A", a), ("B", b)):
        waits(name, lines, args.top_lines)


if __name__ == "__main__":
    main()
