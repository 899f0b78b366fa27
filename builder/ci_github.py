"""`builder ci github`: a GitHub Actions workflow that builds a matrix on self-hosted GPU runners.

Each job builds its cell with `builder build ... --provision --cache-url`: the runner's toolkit,
or one builder installs when the runner lacks it; a cell that any runner built before is a
download. Logs are uploaded whatever the outcome. The matrix is computed here (impossible cells
dropped) and embedded, split into jobs of at most 256 cells (GitHub's per-matrix limit).
Values are written as JSON, which YAML reads as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from builder.matrix import GITHUB_MAX_JOBS, Cell, github_matrices

# Labels every self-hosted Linux x64 runner has; add the one that marks GPU runners (--runner-label).
DEFAULT_RUNNER_LABELS = ("self-hosted", "linux", "x64")
# A repository secret, so a bucket's name stays out of logs; any expression or literal URL works.
DEFAULT_CACHE_URL = "${{ secrets.BUILDER_CACHE_URL }}"

BUILD_STEPS = """\
    steps:
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python }}
      - name: install builder
        run: python -m pip install ".[s3]"
      - name: build ${{ matrix.recipe }} ${{ matrix.version }} for sm_${{ matrix.arch }}
        run: >-
          builder build "${{ matrix.recipe }}" --version "${{ matrix.version }}"
          --torch "${{ matrix.torch }}" --cuda "${{ matrix.cuda }}" --arch "${{ matrix.arch }}"
          --provision --cache-url "$BUILDER_CACHE_URL" --no-install --json
      - name: logs
        if: always()
        uses: actions/upload-artifact@v4
        with:
          name: logs-${{ github.job }}-${{ strategy.job-index }}-${{ matrix.recipe }}-sm${{ matrix.arch }}
          path: cache/logs/
          if-no-files-found: ignore
"""


def render_workflow(cells: Sequence[Cell], *, name: str = "builder matrix",
                    runner_labels: Sequence[str] = DEFAULT_RUNNER_LABELS,
                    cache_url: str = DEFAULT_CACHE_URL, max_jobs: int = GITHUB_MAX_JOBS,
                    timeout_minutes: int = 360) -> str:
    """The workflow text: one job per chunk of the matrix, named build-1, build-2, ..."""
    jobs = []
    for number, matrix in enumerate(github_matrices(cells, max_jobs), start=1):
        jobs.append(
            f"  build-{number}:\n"
            f"    runs-on: {json.dumps(list(runner_labels))}\n"
            f"    timeout-minutes: {timeout_minutes}\n"
            f"    strategy:\n"
            f"      fail-fast: false\n"
            f"      matrix: {json.dumps(matrix)}\n"
            f"    env:\n"
            f"      BUILDER_CACHE_URL: {json.dumps(cache_url)}\n"
            + BUILD_STEPS)
    return (f"# Written by `builder ci github`; regenerate it rather than editing.\n"
            f"name: {json.dumps(name)}\n"
            "on:\n"
            "  workflow_dispatch:\n"
            "  push:\n"
            "    branches: [main]\n"
            "permissions:\n"
            "  contents: read\n"
            "jobs:\n" + "\n".join(jobs))
