"""`builder ci github`: a GitHub Actions workflow that builds a matrix on self-hosted GPU runners.

The matrix is computed here (impossible cells dropped, builder/matrix.py) and embedded, a cell
per line as JSON, which YAML reads as it is: one job per chunk of at most 256 cells (GitHub's
limit per matrix), named build-1, build-2, ... Each cell installs builder into the cell's Python,
lists the runner's CUDA toolkits, and runs `builder build` with `--provision` (a toolkit is installed only
where the runner lacks it) and `--cache-url` (a cell any runner built before is a download; a new
one is uploaded); `--no-companions`, since each recipe of the matrix is its own cell.
builder's cache is `cache/` in the job's workspace, so the uploaded logs are this cell's. Cell
values reach the shell through `env:`, never pasted into a script.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from builder.errors import UsageError
from builder.fleet.matrix import GITHUB_MAX_JOBS, Cell, github_matrices

# Labels a GPU runner registers with; `--runner-label` replaces them (e.g. self-hosted, h100).
DEFAULT_RUNNER_LABELS = ("self-hosted", "linux", "gpu")
# A repository secret, so an http(s) URL with credentials stays out of logs; any expression or a
# literal URL works (`${{ vars.BUILDER_CACHE_URL }}` for a plain variable).
DEFAULT_CACHE_URL = "${{ secrets.BUILDER_CACHE_URL }}"

# Job-level env: the cell's values and the shared cache, for the steps' shell.
JOB_ENV = """\
    env:
      BUILDER_CACHE_URL: {cache_url}
      CELL_RECIPE: ${{{{ matrix.recipe }}}}
      CELL_VERSION: ${{{{ matrix.version }}}}
      CELL_TORCH: ${{{{ matrix.torch }}}}
      CELL_CUDA: ${{{{ matrix.cuda }}}}
      CELL_ARCH: ${{{{ matrix.arch }}}}
"""

# A cell without an arch is a recipe without GPU code: it gets no --arch.
BUILD_STEPS = """\
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python }}
      - name: install builder
        run: python -m pip install ".[s3]"
      - name: CUDA toolkits on this runner
        run: builder toolchain list --cache cache
      - name: build
        run: >-
          builder build "$CELL_RECIPE" --version "$CELL_VERSION"
          --torch "$CELL_TORCH" --cuda "$CELL_CUDA" ${CELL_ARCH:+--arch "$CELL_ARCH"}
          --provision --cache cache --cache-url "$BUILDER_CACHE_URL" --no-install --no-companions --json
      - name: upload logs
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: logs-${{ github.job }}-${{ strategy.job-index }}
          path: cache/logs/
          if-no-files-found: ignore
"""


def render_workflow(cells: Sequence[Cell], *, name: str = "builder matrix",
                    runner_labels: Sequence[str] = DEFAULT_RUNNER_LABELS,
                    cache_url: str = DEFAULT_CACHE_URL, max_jobs: int = GITHUB_MAX_JOBS,
                    timeout_minutes: int = 360) -> str:
    """The workflow's text: one job per chunk of the cells, each cell one build."""
    if not cells:
        raise UsageError("no cells to build: the workflow would have no jobs")
    if not runner_labels or not all(label.strip() for label in runner_labels):
        raise UsageError("runs-on needs at least one runner label, none of them empty")
    jobs = [_job(number, matrix, runner_labels, cache_url, timeout_minutes)
            for number, matrix in enumerate(github_matrices(cells, max_jobs), start=1)]
    return (f"# Written by `builder ci github` ({len(cells)} cells); regenerate it rather than editing.\n"
            f"name: {json.dumps(name)}\n"
            "on:\n"
            "  workflow_dispatch:\n"
            "  push:\n"
            "    branches: [main]\n"
            "permissions:\n"
            "  contents: read\n"
            "jobs:\n" + "\n".join(jobs))


def _job(number: int, matrix: dict[str, Any], runner_labels: Sequence[str], cache_url: str,
         timeout_minutes: int) -> str:
    """One build-N job: its runner, its chunk of the matrix, the cell's env and the steps."""
    return (f"  build-{number}:\n"
            "    name: ${{ matrix.label }}\n"
            f"    runs-on: {json.dumps(list(runner_labels))}\n"
            f"    timeout-minutes: {timeout_minutes}\n"
            "    strategy:\n"
            "      fail-fast: false\n"
            "      matrix:\n"
            "        include:\n"
            + "".join(f"          - {json.dumps(cell)}\n" for cell in matrix["include"])
            + JOB_ENV.format(cache_url=json.dumps(cache_url))
            + BUILD_STEPS)
