"""Counts the instructions a Hopper forward consumer runs per unmasked key tile, from SASS.

    nvcc $(python3 tools/cuda_flags.py compile --archs 90a) -Icsrc/include -Icsrc/cuda -cubin \\
        csrc/cuda/instantiations/flashmask_fwd_bf16_hdim128.cu -o /tmp/fwd128.cubin
    cuobjdump -sass /tmp/fwd128.cubin > /tmp/fwd128.sass
    python3 tools/sass_tile_loop.py /tmp/fwd128.sass [--kernel FwdSm90ConfigILi128ELi128]

The forward consumer's path between its turns is bound by its instruction count (docs/design.md,
the lesson of v19-v22), so the count is what a change to that path can be judged by before any
device time is spent. cuobjdump comes with the CUDA toolkit (the GPU machine has it); where only
nvcc is installed, the `nvidia-cuda-cuobjdump` wheel carries it (nvidia/cu13/bin/cuobjdump).

In each `flashmask_fwd_sm90_kernel` (or those whose mangled name contains --kernel), the tile
loop is the smallest loop that issues HGMMAs and waits for them twice (`WARPGROUP.DEPBAR.LE
gsb0, 0x1`, then `0x0`). Its unmasked path is the body without the partial-tile masking, which
the first forward branch after the first wait jumps over. Prints the path's length and its
opcodes by count.
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
    """(head, tail) addresses of the smallest loop that issues HGMMAs and waits for them once
    each way (the outer item loop waits more often; the mbarrier waits' retry stubs at the
    kernel's end branch back into the loop from far below it, over more than one tile)."""
    best = None
    for address, ins in code:
        target = branch_target(ins)
        if target is None or target >= address:
            continue
        body = [i for a, i in code if target <= a <= address]
        waits = [sum(f"DEPBAR.LE gsb0, 0x{n}" in i for i in body) for n in (1, 0)]
        if waits == [1, 1] and any(opcode(i) == "HGMMA" for i in body) and (best is None or len(body) < best[0]):
            best = (len(body), target, address)
    if best is None:
        raise SystemExit("no tile loop (a backward branch around HGMMAs and two wgmma waits) found")
    return best[1], best[2]


def unmasked_path(code, head, tail):
    """The loop body's instructions without the masking that the first branch after the first
    wait (`DEPBAR.LE gsb0, 0x1`) skips."""
    body = [(a, i) for a, i in code if head <= a <= tail]
    first_wait = next(k for k, (_, i) in enumerate(body) if "DEPBAR.LE gsb0, 0x1" in i)
    for k in range(first_wait + 1, len(body)):
        target = branch_target(body[k][1])
        if target is not None and body[k][0] < target <= tail:
            return [i for a, i in body if a <= body[k][0] or a >= target]
    return [i for _, i in body]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sass", help="cuobjdump -sass output")
    parser.add_argument("--kernel", default="flashmask_fwd_sm90_kernel",
                        help="substring of the mangled kernel names to count (default: every Hopper forward)")
    args = parser.parse_args(argv)
    chosen = {n: c for n, c in kernels(open(args.sass).read()).items() if args.kernel in n}
    if not chosen:
        raise SystemExit(f"--kernel: no function in {args.sass} contains {args.kernel!r}")
    for name, code in chosen.items():
        path = unmasked_path(code, *tile_loop(code))
        counts = collections.Counter(opcode(i) for i in path)
        print(f"{name}\n  {len(path)} instructions per unmasked tile: "
              + " ".join(f"{op} {n}" for op, n in counts.most_common()))


if __name__ == "__main__":
    main()
