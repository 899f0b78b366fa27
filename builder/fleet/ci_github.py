"""`builder ci github`: a GitHub Actions workflow that builds a matrix on self-hosted GPU runners.

The matrix is computed here (impossible cells dropped, builder/matrix.py) and embedded, a cell
per line as JSON, which YAML reads as it is: one job per chunk of at most 256 cells (GitHub's
limit per matrix), named build-1, build-2, ... Each cell first fails with one line when the shared
cache URL is empty (a build would upload nothing), checks out the repository, installs builder into
the cell's Python from a pip requirement (ci_sources.py: it works in the team's repository, not only
in builder's), lists the runner's CUDA toolkits, and runs `builder build` with `--provision` (a
toolkit is installed only where the runner lacks it) and `--cache-url` (a cell any runner built
before is a download; a new one is uploaded); `--no-companions`, since each recipe of the matrix is
its own cell. Recipes come by name (shipped, or from the repository's folders on
BUILDER_RECIPE_PATH) or by a path relative to the repository. builder's cache is `cache/` in the
job's workspace, so the uploaded logs are this cell's. The cells share compiled steps too
(BUILDER_COMPILE_CACHE=auto: builder/planning/compile_cache.py, `compile/` beside the wheels of the
cache URL), so a cell of another Python finds the device code another cell compiled (README,
"Compiled steps, shared"), and a cell re-run after a timeout resumes from what it stored. Where
the repository has the secrets BUILDER_FARM and BUILDER_FARM_TOKEN, the cells compile on that build
farm (builder/planning/farm.py; runners that cannot reach it compile alone). Cell values and the
requirement reach the shell through `env:`, never pasted into a script.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from builder.errors import UsageError
from builder.fleet.ci_sources import DEFAULT_REQUIREMENT
from builder.fleet.matrix import GITHUB_MAX_JOBS, Cell, github_matrices

# Labels a GPU runner registers with; `--runner-label` replaces them (e.g. self-hosted, h100).
DEFAULT_RUNNER_LABELS = ("self-hosted", "linux", "gpu")
# A repository secret, so an http(s) URL with credentials stays out of logs; any expression or a
# literal URL works (`${{ vars.BUILDER_CACHE_URL }}` for a plain variable).
DEFAULT_CACHE_URL = "${{ secrets.BUILDER_CACHE_URL }}"

# Job-level env: the shared cache, builder's pip requirement, a build farm where the repository has
# its two secrets (an empty variable is no setting: builder/settings.py), the repository's recipe
# folders and the cell's values, for the steps' shell.
JOB_ENV = """\
    env:
      BUILDER_CACHE_URL: {cache_url}
      BUILDER_REQUIREMENT: {requirement}
      BUILDER_COMPILE_CACHE: auto
      BUILDER_FARM: ${{{{ secrets.BUILDER_FARM }}}}
      BUILDER_FARM_TOKEN: ${{{{ secrets.BUILDER_FARM_TOKEN }}}}
{recipe_path}      CELL_RECIPE: ${{{{ matrix.recipe }}}}
      CELL_VERSION: ${{{{ matrix.version }}}}
      CELL_TORCH: ${{{{ matrix.torch }}}}
      CELL_CUDA: ${{{{ matrix.cuda }}}}
      CELL_ARCH: ${{{{ matrix.arch }}}}
"""

# The first step: an empty cache URL stops the job before anything is installed or built, with
# one line (an error annotation). {origin} says where the URL comes from (_cache_url_origin).
EMPTY_CACHE_URL = ("BUILDER_CACHE_URL is empty: set {origin} to the shared cache (a directory, "
                   "s3://bucket/prefix or an http(s) URL); without it a build uploads nothing")
CHECK_STEP = """\
    steps:
      - name: the shared cache URL is set
        run: |
          if [ -z "$BUILDER_CACHE_URL" ]; then
            echo '::error::{message}'
            exit 1
          fi
"""

# A cell without an arch is a recipe without GPU code: it gets no --arch.
BUILD_STEPS = """\
      - uses: actions/checkout@v4
      - uses: actions/setup-python@v5
        with:
          python-version: ${{ matrix.python }}
      - name: install builder
        run: python -m pip install "$BUILDER_REQUIREMENT"
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
                    timeout_minutes: int = 360, builder_requirement: str = DEFAULT_REQUIREMENT,
                    recipe_path: Sequence[str] = ()) -> str:
    """The workflow's text: one job per chunk of the cells, each cell one build. `builder_requirement`
    is what pip installs (ci_sources.builder_requirement); `recipe_path`, folders relative to the
    repository's root, becomes the job's BUILDER_RECIPE_PATH."""
    if not cells:
        raise UsageError("no cells to build: the workflow would have no jobs")
    if not runner_labels or not all(label.strip() for label in runner_labels):
        raise UsageError("runs-on needs at least one runner label, none of them empty")
    if not cache_url.strip():
        raise UsageError("the cache URL expression is empty: every job would stop at its first step",
                         hint="leave --cache-url-expr out (the BUILDER_CACHE_URL secret), or name a secret, "
                              "a variable or a URL")
    env = JOB_ENV.format(cache_url=json.dumps(cache_url), requirement=json.dumps(builder_requirement),
                         recipe_path=(f"      BUILDER_RECIPE_PATH: {json.dumps(':'.join(recipe_path))}\n"
                                      if recipe_path else ""))
    steps = CHECK_STEP.format(message=EMPTY_CACHE_URL.format(origin=_cache_url_origin(cache_url))) + BUILD_STEPS
    jobs = [_job(number, matrix, runner_labels, timeout_minutes) + env + steps
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


def _cache_url_origin(cache_url: str) -> str:
    """Where the jobs' cache URL comes from, in words for the empty-URL error (no expression: GitHub
    would expand it in the script)."""
    found = re.fullmatch(r"\$\{\{\s*(secrets|vars)\.(\w+)\s*\}\}", cache_url.strip())
    if found:
        return f"the {'secret' if found[1] == 'secrets' else 'variable'} {found[2]}"
    return "what --cache-url-expr of `builder ci github` names"


def _job(number: int, matrix: dict[str, Any], runner_labels: Sequence[str], timeout_minutes: int) -> str:
    """One build-N job's head: its runner and its chunk of the matrix."""
    return (f"  build-{number}:\n"
            "    name: ${{ matrix.label }}\n"
            f"    runs-on: {json.dumps(list(runner_labels))}\n"
            f"    timeout-minutes: {timeout_minutes}\n"
            "    strategy:\n"
            "      fail-fast: false\n"
            "      matrix:\n"
            "        include:\n"
            + "".join(f"          - {json.dumps(cell)}\n" for cell in matrix["include"]))
