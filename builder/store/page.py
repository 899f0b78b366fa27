"""The page `builder cache serve` answers at `/`: what a team's cache holds, for people.

One server-rendered HTML page, made from the entries at each request (like the index pages):

- every build, by recipe and version, with the environment it was made for (Python tag, torch,
  torch's CUDA, the toolkit, archs, variant choices, the PEP 825 variant label when the entry has
  one), when it was stored, who stored it and where when the entry records that, the builder and
  toolchain that made it, and its size;
- for one environment (chosen with `?env=<python>/torch<v>/cu<c>/cxx11abi<A>/sm<gpu>`, the part of
  its root after env/, as builder/store/environments.py names it): the builds its root lists, and
  the install line for each project, in the README's form (`builder index-url --server ...`) and
  with the root written out;
- with a matrix file (`cache serve --matrix-file`), each cell: built (its keys), missing, or one
  that cannot be built (the reason `builder matrix` gives).

Everything that comes from an entry is escaped (html.escape). No path of the serving machine is
shown: not the entry's log, the target interpreter, the source or the toolkit's root; the host
compiler by its name and version. A little inline script filters the tables by text and by the
chosen environment; without it the page still works (the environment is a GET form).
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion

from builder.delivery.index_url import index_url
from builder.fleet.matrix import Cell
from builder.store.environments import Environment, base_of, environments_of, select

PYPI = "https://pypi.org/simple"
_HOST = re.compile(r"^[A-Za-z0-9.-]+(?::\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::\d{1,5})?$")


@dataclass(frozen=True)
class MatrixCell:
    """One cell of the served matrix file: the cell as `builder matrix` makes it, the name of its
    recipe (a cell may name a recipe file) and why it cannot be built (None: it can)."""

    cell: Cell
    recipe: str
    impossible: str | None = None


def server_base(host_header: str | None, fallback: str) -> str:
    """The URL the page's client reached the server at: http://<Host header>, or `fallback`
    when the header is missing or not a plain host[:port] (never echoed unchecked)."""
    host = (host_header or "").strip()
    return f"http://{host}" if _HOST.match(host) else fallback


def install_lines(project: str, base: str, env: Environment) -> list[str]:
    """The README's ways to install `project` in `env` from the server at `base`: through
    `builder index-url` (run with the interpreter that installs, or give it --python), then pip and
    uv with the root written out."""
    root = index_url(env, base)
    pip = f"--only-binary {project} --index-url"
    return [f'ROOT=$(builder index-url --server {base} --arch {env.gpu}) && pip install {pip} "$ROOT" '
            f"--extra-index-url {PYPI} {project}",
            f"pip install {pip} {root} --extra-index-url {PYPI} {project}",
            f"uv pip install --only-binary {project} --extra-index-url {root} {project}"]


def env_id(env: Environment) -> str:
    """What `?env=` takes: the root's path after env/."""
    return env.path.removeprefix("env/")


def parse_env(value: str | None) -> Environment | None:
    return Environment.from_path(value.strip("/").split("/")) if value else None


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """data[key] when it is a table, else an empty one (entries of older builders lack fields)."""
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def _plan(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    return _table(meta, "plan")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def variant_label(meta: Mapping[str, Any]) -> str:
    """The PEP 825 label of the entry's variant wheel ("" for an entry without one)."""
    return _text(_table(meta, "variant").get("label"))


def built_by(meta: Mapping[str, Any]) -> str:
    """Who stored the entry and on which machine, when the entry records it ("built_by": {"user",
    "host"}); "" when it does not (entries of builder 0.1.0 record neither)."""
    who = _table(meta, "built_by")
    user, host = _text(who.get("user")), _text(who.get("host"))
    return f"{user}@{host}" if user and host else user or host


def toolchain(meta: Mapping[str, Any], provenance: Mapping[str, Any]) -> str:
    """The builder, toolkit, host compiler and libc that made the build, without their paths."""
    plan = _plan(meta)
    host = _table(plan, "host_compiler")
    compiler = f"{_text(host.get('cxx')).rsplit('/', 1)[-1]} {_text(host.get('version'))}".strip()
    toolkit = _table(plan, "toolkit")
    target = _table(plan, "target")
    parts = [f"builder {provenance['builder']}" if provenance.get("builder") else "",
             f"nvcc {toolkit['version']}" if toolkit.get("version") else "", compiler,
             _text(target.get("libc"))]
    return ", ".join(p for p in parts if p)


def _size(meta: Mapping[str, Any]) -> tuple[str, str]:
    size = meta.get("size")
    if not isinstance(size, int):
        return "", ""
    return f"{size / 1e6:.1f} MB", f"{size} bytes"


def _when(meta: Mapping[str, Any]) -> str:
    created = _text(meta.get("created"))
    try:
        return time.strftime("%Y-%m-%d %H:%M UTC", time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return created


def _cells(values: Iterable[str]) -> str:
    return "".join(f"<td>{v}</td>" for v in values)


def build_row(meta: Mapping[str, Any], provenance: Mapping[str, Any], fits: bool) -> str:
    """One build: every value escaped; `fits`: the chosen environment's root lists it."""
    e = html.escape
    plan, base = _plan(meta), base_of(meta)
    wheel, key = _text(meta.get("wheel")), _text(meta.get("key"))
    try:
        name, parsed, _, _ = parse_wheel_filename(wheel)
        project, version = str(canonicalize_name(name)), parsed.public
    except (InvalidWheelFilename, InvalidVersion):
        project, version = wheel, _text(meta.get("version"))
    archs = ", ".join(f"sm_{a}" for a in plan.get("archs") or ()) or "no GPU code"
    variants = _table(plan, "variants")
    choices = ", ".join(f"{k}={v}" for k, v in sorted(variants.items()))
    size, exact = _size(meta)
    toolkit = _table(plan, "toolkit")
    cuda = base.cuda if base else ""
    if toolkit.get("version"):
        cuda = f"{cuda} (nvcc {toolkit['version']})".strip()
    values = [e(_text(meta.get("recipe")) or project), e(version),
              e(base.python_tag if base else ""), e(base.torch if base else ""), e(cuda),
              e(archs), e(choices), e(variant_label(meta)), e(_when(meta)), e(built_by(meta) or "not recorded"),
              e(toolchain(meta, provenance)), f'<span title="{e(exact)}">{e(size)}</span>',
              f'<a href="entries/{e(key)}/{e(wheel)}">{e(wheel)}</a><br><code>{e(key)}</code>']
    cls = ' class="fits"' if fits else ""
    return f'<tr data-fits="{int(fits)}"{cls}>{_cells(values)}</tr>\n'


_BUILD_COLUMNS = ("recipe", "version", "Python", "torch", "CUDA", "archs", "variant choices", "variant label",
                  "stored", "by", "made with", "size", "wheel and key")


def _sort_key(meta: Mapping[str, Any]) -> tuple[str, ...]:
    plan = _plan(meta)
    return (_text(meta.get("recipe")), _text(meta.get("version")), repr(base_of(meta)),
            ",".join(plan.get("archs") or ()), _text(meta.get("created")))


def _builds_table(metas: Sequence[Mapping[str, Any]], provenance: Callable[[Mapping[str, Any]], Mapping[str, Any]],
                  fitting: set[str]) -> str:
    head = "".join(f"<th>{c}</th>" for c in _BUILD_COLUMNS)
    rows = "".join(build_row(m, provenance(m), _text(m.get("key")) in fitting) for m in sorted(metas, key=_sort_key))
    return f'<table id="builds" class="filterable"><thead><tr>{head}</tr></thead><tbody>\n{rows}</tbody></table>\n'


def _summary(metas: Sequence[Mapping[str, Any]]) -> str:
    count = Counter((_text(m.get("recipe")), _text(m.get("version"))) for m in metas)
    items = "".join(f"<li>{html.escape(r)} {html.escape(v)}: {n} build{'s' if n != 1 else ''}</li>"
                    for (r, v), n in sorted(count.items()))
    return f"<ul id=summary>{items}</ul>\n" if items else "<p>The cache holds no builds yet.</p>\n"


def _env_form(envs: Sequence[Environment], chosen: Environment | None) -> str:
    options = ['<option value="">choose one</option>'] + [
        f'<option value="{html.escape(env_id(env))}"{" selected" if env == chosen else ""}>'
        f"{html.escape(describe(env))}</option>" for env in envs]
    return ('<form method="get" action="./"><label>Environment: <select id="env" name="env">'
            f"{''.join(options)}</select></label> <noscript><button>show</button></noscript></form>\n")


def describe(env: Environment) -> str:
    """"cp311, torch 2.14.1 (cu130), C++11 ABI, sm_86": an environment as people name it."""
    b = env.base
    return f"{b.python_tag}, torch {b.torch} ({b.cuda}), {'C++11 ABI' if b.cxx11_abi else 'old C++ ABI'}, sm_{env.gpu}"


def _install(metas: Sequence[Mapping[str, Any]], chosen: Environment | None, base: str) -> str:
    if chosen is None:
        return "<p>Choose an environment to see the builds it installs and the line that installs them.</p>\n"
    picked = select(metas, chosen)
    projects = sorted({canonicalize_name(parse_wheel_filename(_text(m["wheel"]))[0]) for m in picked})
    root = html.escape(index_url(chosen, base))
    if not projects:
        return f'<p>Nothing in this cache loads in {html.escape(describe(chosen))}.</p>\n'
    blocks = "".join(
        f'<h3>{html.escape(p)}</h3>\n' + "".join(f'<pre class="install">{html.escape(line)}</pre>\n'
                                                  for line in install_lines(p, base, chosen))
        for p in projects)
    return (f'<p>The root of {html.escape(describe(chosen))}: <code id="root">{root}</code> '
            "(run <code>builder index-url</code> with the interpreter that installs, or give it "
            "<code>--python PATH</code>; uv asks <code>--extra-index-url</code> first).</p>\n" + blocks)


def matrix_status(cell: MatrixCell, metas: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    """("built", keys) when an entry was made for the cell (its recipe, version, Python, torch
    release, toolkit X.Y and arch; any variant choice); ("missing", []) or ("cannot be built", [])."""
    if cell.impossible is not None:
        return "cannot be built", []
    c = cell.cell
    python_tag = "cp" + "".join(c.python.split(".")[:2])
    keys = []
    for meta in metas:
        plan, base = _plan(meta), base_of(meta)
        toolkit = _table(plan, "toolkit")
        cuda = ".".join(_text(toolkit.get("version")).split(".")[:2])
        archs = list(plan.get("archs") or ())
        if (_text(meta.get("recipe")) == cell.recipe and _text(meta.get("version")) == c.version
                and base is not None and base.python_tag == python_tag and base.torch == c.torch.split("+")[0]
                and cuda == c.cuda and (c.arch in archs if c.arch else not archs)):
            keys.append(_text(meta.get("key")))
    return ("built", keys) if keys else ("missing", [])


def _matrix(cells: Sequence[MatrixCell], metas: Sequence[Mapping[str, Any]]) -> str:
    rows, counts = [], {"built": 0, "missing": 0, "cannot be built": 0}
    for cell in cells:
        status, keys = matrix_status(cell, metas)
        counts[status] += 1
        c = cell.cell
        detail = ", ".join(keys) if keys else cell.impossible or ""
        values = [html.escape(v) for v in (cell.recipe, c.version, c.python, c.torch, c.cuda,
                                           f"sm_{c.arch}" if c.arch else "no GPU code", status, detail)]
        rows.append(f'<tr class="{status.split()[0]}">{_cells(values)}</tr>\n')
    head = "".join(f"<th>{c}</th>" for c in ("recipe", "version", "Python", "torch",
                                              "CUDA toolkit", "arch", "status", "keys or reason"))
    said = ", ".join(f"{n} {s}" for s, n in counts.items())
    return (f'<h2>Matrix</h2>\n<p id="matrix-counts">{len(cells)} cells: {said}.</p>\n'
            f'<table id="matrix" class="filterable"><thead><tr>{head}</tr></thead><tbody>\n'
            f"{''.join(rows)}</tbody></table>\n")


_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;
vertical-align:top}th{background:#f2f2f2}tr.fits td{background:#eef8ee}tr.missing td{background:#fdeeee}
tr.cannot td{color:#777}pre.install{background:#f6f6f6;padding:.5em;white-space:pre-wrap;word-break:break-all}
code{font-size:.9em}"""

_SCRIPT = """(function () {
  var text = document.getElementById('filter'), only = document.getElementById('only-fits');
  var env = document.getElementById('env');
  function apply() {
    var terms = text.value.toLowerCase().split(/\\s+/).filter(Boolean), shown = 0;
    document.querySelectorAll('table.filterable tbody tr').forEach(function (row) {
      var body = row.textContent.toLowerCase();
      var keep = terms.every(function (t) { return body.indexOf(t) >= 0; }) &&
        !(only.checked && row.closest('#builds') && row.dataset.fits !== '1');
      row.hidden = !keep;
      if (keep && row.closest('#builds')) { shown++; }
    });
    document.getElementById('shown').textContent = String(shown);
  }
  text.addEventListener('input', apply);
  only.addEventListener('change', apply);
  env.addEventListener('change', function () { env.form.submit(); });
  apply();
})();"""


def render(metas: Sequence[Mapping[str, Any]], *, base: str, chosen: Environment | None,
           provenance: Callable[[Mapping[str, Any]], Mapping[str, Any]],
           matrix: Sequence[MatrixCell] | None = None) -> str:
    """The whole page. `base`: the server's URL as the client reached it; `chosen`: the
    environment asked for (None: none); `provenance`: an entry's builder.json (or {})."""
    envs = [env for env in environments_of(metas) if select(metas, env)]
    fitting = {_text(m.get("key")) for m in select(metas, chosen)} if chosen else set()
    only = "" if chosen is None else " checked"
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>builder cache</title><style>{_STYLE}</style></head><body>\n"
            f"<h1>builder cache at {html.escape(base)}</h1>\n{_summary(metas)}"
            f"<h2>Install</h2>\n{_env_form(envs, chosen)}{_install(metas, chosen, base)}"
            f'<h2>Builds</h2>\n<p><label>Filter: <input id="filter" type="search" '
            'placeholder="e.g. sm_86 cp311"></label> <label><input id="only-fits" type="checkbox"'
            f"{only}> only the builds the chosen environment installs</label> "
            f'(<span id="shown">{len(metas)}</span> shown)</p>\n'
            f"{_builds_table(metas, provenance, fitting)}"
            f"{_matrix(matrix, metas) if matrix is not None else ''}"
            f"<p>Indexes: <a href=\"simple/\">simple/</a> (every build), one root per environment "
            f"(above); <a href=\"index.json\">index.json</a>.</p>\n<script>{_SCRIPT}</script>\n</body></html>\n")
