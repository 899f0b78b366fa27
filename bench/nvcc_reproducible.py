"""What makes two nvcc compiles of one kernel file differ, and what builder's flags leave: the same
file compiled twice in separate processes under each setting builder/building/reproducible.py
names, the differing bytes of the two objects counted (`cmp -l`).

    python bench/nvcc_reproducible.py [--arch 86] [--nvcc /usr/local/cuda/bin/nvcc]
    python bench/nvcc_reproducible.py --tree causal_conv1d-1.7.0 --file csrc/causal_conv1d_fwd.cu \\
        -- -I$TORCH/include -I$TORCH/include/torch/csrc/api/include -Icsrc -std=c++20 -O3 ...

Without --tree the kernel file is written here: anonymous-namespace device variables and a template
kernel, internal-linkage entities whose names nvcc makes from the source's path. With --tree, the
tree is copied twice and --file compiled in it with the arguments after `--`. The settings: plain;
`--objdir-as-tempdir` (temporary files named after the object, not /tmp/tmpxft_<pid>_...); that and
`-frandom-seed=<file>` (no pid in the names); the same from another folder (the path hash stays: why
builds compile at one path). A table goes to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from measure import append_results

ROOT = Path(__file__).resolve().parent.parent

KERNEL = """namespace {
__device__ float bias;
__constant__ float table[4];
template <typename T> __global__ void scale(T* x, T a, long n) {
  long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
  if (i < n) x[i] = x[i] * a + bias + table[i & 3];
}
}  // namespace

void run_scale(float* x, float a, long n) { scale<float><<<(n + 255) / 256, 256>>>(x, a, n); }
"""


def settings(file: str) -> dict[str, list[str]]:
    """Each setting's nvcc flags, as builder/building/reproducible.py and gate.py add them."""
    return {"plain": [], "--objdir-as-tempdir": ["--objdir-as-tempdir"],
            f"--objdir-as-tempdir -frandom-seed={file}": ["--objdir-as-tempdir", f"-frandom-seed={file}"]}


def compile_once(nvcc: str, arch: str, folder: Path, file: str, flags: list[str]) -> bytes:
    """One compile of folder/`file`, run from `folder`, in a process of its own; the object."""
    command = [nvcc, f"-gencode=arch=compute_{arch},code=sm_{arch}", *flags, "-c", file, "-o", "kernel.o"]
    subprocess.run(command, cwd=folder, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (folder / "kernel.o").read_bytes()


def differing_bytes(a: bytes, b: bytes) -> int:
    """What `cmp -l` counts: positions that differ, plus the length difference."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def row(setting: str, first: bytes, second: bytes) -> str:
    return f"| {setting} | {differing_bytes(first, second)} of {len(first)} bytes differ |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="86")
    parser.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc")
    parser.add_argument("--tree", type=Path, help="a source tree to compile in (default: the kernel file above)")
    parser.add_argument("--file", default="kernel.cu", help="the file to compile, relative to the tree")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("extra", nargs="*", help="nvcc's other arguments (after --)")
    args = parser.parse_args()
    version = subprocess.run([args.nvcc, "--version"], capture_output=True, text=True, check=True).stdout
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        one, other = Path(tmp, "one"), Path(tmp, "other")
        for folder in (one, other):
            if args.tree:
                shutil.copytree(args.tree, folder)
            else:
                folder.mkdir()
                (folder / args.file).write_text(KERNEL)
        for name, flags in settings(args.file).items():
            first, second = (compile_once(args.nvcc, args.arch, one, args.file, [*flags, *args.extra])
                             for _ in range(2))
            rows.append(row(f"{name}, twice in one folder", first, second))
        seeded = [*list(settings(args.file).values())[-1], *args.extra]
        here, there = (compile_once(args.nvcc, args.arch, folder, args.file, seeded) for folder in (one, other))
        rows.append(row("the last, once from another folder", here, there))
    given = ["--arch", args.arch, "--nvcc", args.nvcc] + (["--tree", str(args.tree), "--file", args.file] if args.tree
                                                          else []) + (["--", *args.extra] if args.extra else [])
    what = f"{args.file} of {args.tree.name}" if args.tree else "the kernel file the script writes"
    intro = (f"`python bench/nvcc_reproducible.py {shlex.join(given)}`: {version.strip().splitlines()[-1]}; each "
             f"compile `nvcc -gencode=arch=compute_{args.arch},code=sm_{args.arch} [flags] -c {args.file} -o kernel.o` "
             f"in a process of its own (another pid), of {what}.")
    print(append_results(args.results, "two nvcc compiles of one kernel file: the bytes that differ",
                         ("setting", "objects compared"), rows, intro))


if __name__ == "__main__":
    main()
