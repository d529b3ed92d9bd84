"""Counts the instructions a Hopper consumer runs per unmasked tile, from SASS: the forward's
per key tile, the backward's per query tile.

    nvcc $(python3 tools/cuda_flags.py compile --archs 90a) -Icsrc/include -Icsrc/cuda -cubin \\
        csrc/cuda/instantiations/flashmask_fwd_bf16_hdim128.cu -o /tmp/fwd128.cubin
    cuobjdump -sass /tmp/fwd128.cubin > /tmp/fwd128.sass
    python3 tools/sass_tile_loop.py /tmp/fwd128.sass [--kernel FwdSm90ConfigILi128ELi128]

(the backward likewise from flashmask_bwd_bf16_hdim128.cu, with --kernel bwd). The forward
consumer's path between its turns is bound by its instruction count (docs/design.md, the lesson
of v19-v22), so the count is what a change to that path can be judged by before any device time
is spent; the backward's is not (perf-notes v55: 66 fewer per tile measured slower), and there
the count only says what a change did to the code. cuobjdump comes with the CUDA toolkit (the GPU
machine has it); where only nvcc is installed, the `nvidia-cuda-cuobjdump` wheel carries it
(nvidia/cu13/bin/cuobjdump).

In each Hopper kernel (`flashmask_fwd_sm90_kernel` or `flashmask_bwd_sm90_kernel`, or those whose
mangled name contains --kernel), the tile loop is the smallest loop that issues HGMMAs, computes
exponentials (MUFU.EX2) and holds no EXIT (the item loop around it is larger; the mbarrier waits'
retry stubs after the kernel's end branch back into it over an EXIT). Its unmasked path is the
body without the partial-tile masking, which the first forward branch after the loop's first
wgmma wait (`WARPGROUP.DEPBAR.LE`) jumps over; every other branch is counted whole. Prints the
path's length and its opcodes by count.
"""
import argparse
import collections
import re

LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
FUNCTION = re.compile(r"Function : (\S+)")
BRANCH = re.compile(r"\bBRA (0x[0-9a-f]+)")


def kernels(text):
    """{mangled name: [(address, instruction)]} of every function in cuobjdump -sass output."""
    found, current = {}, None
    for line in text.splitlines():
        name = FUNCTION.search(line)
        if name:
            current = found.setdefault(name.group(1), [])
            continue
        m = LINE.search(line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2)))
    return found


def opcode(instruction):
    """The opcode without its predicate and modifiers ("@!P0 BRA 0x70" -> "BRA"; "" for none).
    tools/ncu_compare.py reads ncu's SASS source pages with it too."""
    words = instruction.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def branch_target(instruction):
    m = BRANCH.search(instruction)
    return int(m.group(1), 16) if m else None


def tile_loop(code):
    """(head, tail) addresses of the smallest loop that issues HGMMAs, computes exponentials and
    holds no EXIT (see the module's docstring); None where there is none."""
    best = None
    for address, ins in code:
        target = branch_target(ins)
        if target is None or target >= address:
            continue
        body = [i for a, i in code if target <= a <= address]
        ops = {opcode(i) for i in body}
        exponentials = any(opcode(i) == "MUFU" and ".EX2" in i for i in body)
        if "HGMMA" in ops and exponentials and "EXIT" not in ops and (best is None or len(body) < best[0]):
            best = (len(body), target, address)
    return None if best is None else (best[1], best[2])


def unmasked_path(code, head, tail):
    """The loop body's instructions without the masking that the first branch after the first
    wgmma wait skips."""
    body = [(a, i) for a, i in code if head <= a <= tail]
    first_wait = next(k for k, (_, i) in enumerate(body) if "WARPGROUP.DEPBAR.LE" in i)
    for k in range(first_wait + 1, len(body)):
        target = branch_target(body[k][1])
        if target is not None and body[k][0] < target <= tail:
            return [i for a, i in body if a <= body[k][0] or a >= target]
    return [i for _, i in body]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sass", help="cuobjdump -sass output")
    parser.add_argument("--kernel", default="_sm90_kernel",
                        help="substring of the mangled kernel names to count (default: every Hopper forward "
                             "and backward; e.g. fwd, bwd, FwdSm90ConfigILi128ELi128)")
    args = parser.parse_args(argv)
    chosen = {n: c for n, c in kernels(open(args.sass).read()).items() if args.kernel in n}
    if not chosen:
        raise SystemExit(f"--kernel: no function in {args.sass} contains {args.kernel!r}")
    for name, code in chosen.items():
        loop = tile_loop(code)
        if loop is None:
            raise SystemExit(f"{name}: no tile loop (a backward branch around HGMMAs and exponentials, without EXIT)")
        path = unmasked_path(code, *loop)
        counts = collections.Counter(opcode(i) for i in path)
        print(f"{name}\n  {len(path)} instructions per unmasked tile: "
              + " ".join(f"{op} {n}" for op, n in counts.most_common()))


if __name__ == "__main__":
    main()
