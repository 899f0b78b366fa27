"""torch facts discovered, not only tabled: the CUDA of a torch release compat's table does not
list is read from the configured index (PEP 658 metadata, else HTTP range requests on the wheel),
kept in the cache and used offline; `builder plan` and `builder matrix` decide each torch x CUDA
cell with the same function. The index is a real HTTP server on 127.0.0.1 serving a tiny fake
torch wheel."""

from __future__ import annotations

import io
import json
import os
import platform
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from builder.errors import ToolchainError
from builder.fleet.matrix import Cell, MatrixSpec, cell_version, expand, filter_cells, impossible
from builder.planning import compat
from builder.planning.buildpython import build_python
from builder.planning.plan import choose_version
from builder.planning.recipe import RecipeBook
from builder.planning.request import Request
from builder.planning.toolchain import Toolkit
from builder.planning.torch_facts import TorchFacts, cuda_of_requirements
from builder.settings import load_settings
from builder.workspace import Workspace
from tests.conftest import builder_json, run_builder

UNTABLED = "2.16.0"  # newer than compat.PYPI_TORCH_CUDA goes


def test_the_table_does_not_know_the_torch_these_tests_discover() -> None:
    assert compat.pypi_torch_cuda(UNTABLED) is None


def test_cuda_from_requirement_lines() -> None:
    """The lines of real torch wheels (2.14.1, 2.8.0, 2.0.1 on PyPI) and of builds naming only a major."""
    torch_2_14 = ['filelock', 'cuda-toolkit[cublas,cudart,cufft,cufile,cupti,curand,cusolver,cusparse,nvjitlink,'
                  'nvrtc,nvtx]==13.0.3; platform_system == "Linux"', 'nvidia-cudnn-cu13==9.24.0.43; '
                  'platform_system == "Linux"', 'optree>=0.13.0; extra == "optree"']
    assert cuda_of_requirements(torch_2_14) == "13.0"
    assert cuda_of_requirements(['nvidia-cuda-runtime-cu12==12.8.90; platform_system == "Linux" and '
                                 'platform_machine == "x86_64"']) == "12.8"
    assert cuda_of_requirements(['nvidia-cuda-runtime-cu11==11.7.99; platform_system == "Linux"']) == "11.7"
    assert cuda_of_requirements(["nvidia-cuda-runtime==13.0.96"]) == "13.0"
    assert cuda_of_requirements(["nvidia-cublas-cu12>=12.1", "nvidia-nccl-cu12"]) == "12"
    assert cuda_of_requirements(["filelock", "sympy", 'nvidia-nccl-cu12; extra == "x"']) is None


def fake_torch_wheel(version: str, requires: list[str]) -> tuple[str, bytes]:
    """A wheel named like torch's Linux wheels for this machine: METADATA first, then 600 KB of
    another member, so reading it by ranges takes a block at each end and none between."""
    name = f"torch-{version}-cp311-cp311-manylinux_2_28_{platform.machine()}.whl"
    body = io.BytesIO()
    with zipfile.ZipFile(body, "w") as archive:
        archive.writestr(f"torch-{version}.dist-info/METADATA", "Metadata-Version: 2.1\nName: torch\n"
                         f"Version: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))
        archive.writestr("torch/_big.bin", os.urandom(600 * 1024))
        archive.writestr(f"torch-{version}.dist-info/RECORD", "")
    return name, body.getvalue()


@dataclass
class FakeIndex:
    """A PEP 691 index of one project, torch, whose files answer range requests."""

    pep658: bool
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def add(self, version: str, requires: list[str]) -> None:
        name, data = fake_torch_wheel(version, requires)
        self.files[name] = data

    def page(self) -> bytes:
        entries = [{"filename": name, "url": f"/files/{name}", "hashes": {},
                    **({"core-metadata": True} if self.pep658 else {})} for name in self.files]
        return json.dumps({"meta": {"api-version": "1.1"}, "name": "torch", "files": entries}).encode()

    def metadata(self, name: str) -> bytes:
        with zipfile.ZipFile(io.BytesIO(self.files[name])) as archive:
            return archive.read(next(n for n in archive.namelist() if n.endswith("METADATA")))


def handler_for(index: FakeIndex) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            index.requests.append(f"{self.path} {self.headers.get('Range', '')}".strip())
            name = self.path.removeprefix("/files/")
            if self.path == "/simple/torch/":
                self._send(200, index.page(), "application/vnd.pypi.simple.v1+json")
            elif name.endswith(".metadata") and index.pep658 and name[:-9] in index.files:
                self._send(200, index.metadata(name[:-9]), "text/plain")
            elif name in index.files:
                self._ranged(index.files[name])
            else:
                self._send(404, b"not found", "text/plain")

        def _ranged(self, data: bytes) -> None:
            asked = self.headers.get("Range", "")
            if not asked.startswith("bytes="):
                self._send(200, data, "application/octet-stream")
                return
            first, last = asked[6:].split("-")
            start, end = ((len(data) - int(last), len(data) - 1) if not first
                          else (int(first), min(len(data) - 1, int(last) if last else len(data) - 1)))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            self.wfile.write(data[start:end + 1])

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def serving(index: FakeIndex) -> Iterator[FakeIndex]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(index))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    index.url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("pep658", [True, False], ids=["pep658", "ranges"])
def test_an_untabled_torch_is_read_from_the_index_and_kept(tmp_path: Path, pep658: bool) -> None:
    index = FakeIndex(pep658)
    index.add(UNTABLED, ["filelock", "nvidia-cuda-runtime==13.0.96", "nvidia-cudnn-cu13==9.13.0.50"])
    kept = tmp_path / "facts" / "torch.json"
    with serving(index):
        facts = TorchFacts(index.url, kept)
        assert facts.cuda_of(UNTABLED) == "13.0"
        ranged = [r for r in index.requests if "bytes=" in r]
        if pep658:
            assert any(r.endswith(".whl.metadata") for r in index.requests) and ranged == []
        else:
            assert len(ranged) == 2 and not any(".metadata" in r for r in index.requests)  # the end, the start
        asked = len(index.requests)
        assert facts.cuda_of(UNTABLED) == "13.0" and len(index.requests) == asked  # kept: not asked again
    stored = json.loads(kept.read_text())[index.url][UNTABLED]
    assert stored["cuda"] == "13.0" and stored["source"].endswith(".whl")
    assert TorchFacts(index.url, kept).cuda_of(UNTABLED) == "13.0"  # the server is gone: read from the cache


def test_an_index_that_cannot_answer_is_one_clear_error(tmp_path: Path) -> None:
    index = FakeIndex(pep658=False)
    index.add("2.13.0", ["nvidia-cuda-runtime==13.0.96"])
    with serving(index):
        url = index.url
        with pytest.raises(ToolchainError) as missing:
            TorchFacts(url, tmp_path / "torch.json").cuda_of(UNTABLED)
    assert f"has no Linux {platform.machine()} wheel of torch {UNTABLED}" in missing.value.message
    with pytest.raises(ToolchainError) as offline:
        TorchFacts(url, tmp_path / "torch.json").cuda_of(UNTABLED)
    assert offline.value.message.startswith(f"builder does not know which CUDA torch {UNTABLED}'s build uses")
    assert f"reading it from {url} failed" in offline.value.message and "--torch-index" in str(offline.value.hint)


def test_builder_plan_with_an_untabled_torch_works_then_offline(tmp_path: Path) -> None:
    """`builder plan flash-attn --arch 86 --torch 2.16.0`, first reading the index, then with the
    index gone, from the cache."""
    index = FakeIndex(pep658=False)
    index.add(UNTABLED, ["nvidia-cuda-runtime==13.0.96"])
    cache = tmp_path / "cache"
    args = ("plan", "flash-attn", "--arch", "86", "--torch", UNTABLED, "--cache", str(cache))
    with serving(index):
        plan = builder_json(*args, "--index-url", index.url)
    assert plan["target"]["torch"] == UNTABLED and plan["target"]["torch_cuda"] == "13.0"
    assert plan["toolkit"]["version"].startswith("13.") and plan["version"] == "2.8.3.post2"
    offline = builder_json(*args, "--index-url", index.url)
    assert offline["target"]["torch_cuda"] == "13.0" and offline["cache_key"] == plan["cache_key"]
    elsewhere = run_builder(*args, "--index-url", index.url, "--cache", str(tmp_path / "empty"))
    assert elsewhere.returncode == 4 and f"builder does not know which CUDA torch {UNTABLED}" in elsewhere.stderr


def described(cuda: str) -> Toolkit:
    root = Path(f"/opt/cuda-{cuda}")
    return Toolkit(root=root, nvcc=root / "bin" / "nvcc", version=f"{cuda}.0", archs=("80", "86", "90"))


def test_plan_and_matrix_decide_every_torch_x_cuda_cell_alike(tmp_path: Path) -> None:
    index = FakeIndex(pep658=True)
    index.add(UNTABLED, ["cuda-toolkit[cudart]==13.0.3"])
    with serving(index):
        ws = Workspace.open(load_settings({"cache-dir": tmp_path, "index-url": index.url}))
        recipe = RecipeBook().load("flash-attn")
        for torch in ("2.0.1", "2.5.1", "2.7.1", "2.8.0", UNTABLED):
            for cuda in ("11.8", "12.4", "12.8", "13.0"):
                cell = Cell("flash-attn", cell_version(recipe, "3.11", torch, cuda, "80"), "3.11", torch, cuda, "80")
                matrix = impossible(cell, ws.recipes, ws.torch_cuda)
                request = Request("flash-attn", torch=torch, cuda=cuda, archs=("80",))
                try:
                    python = build_python(request, recipe, tmp_path / "envs", tmp_path / "logs", make_env=False,
                                          package_index=lambda: index.url, default_cuda=ws.torch_cuda)
                    choose_version(request, recipe, python.target, [described(cuda)], this_environment=False)
                    plan = None
                except ToolchainError as exc:
                    plan = exc.message
                assert matrix == plan, (torch, cuda)
    assert impossible(Cell("flash-attn", "2.8.3", "3.11", UNTABLED, "13.0", "80"), ws.recipes, ws.torch_cuda) is None
    assert impossible(Cell("flash-attn", "2.8.3", "3.11", UNTABLED, "12.8", "80"), ws.recipes, ws.torch_cuda) == (
        f"no known torch {UNTABLED} build for CUDA 12.8: PyPI's is CUDA 13.0")


def test_a_matrix_cell_takes_the_version_its_target_fits() -> None:
    book = RecipeBook()
    spec = MatrixSpec.from_mapping({"recipe": ["flash-attn"], "python": ["3.11"], "arch": ["80"],
                                    "torch": ["2.0.1", "2.7.1"], "cuda": ["11.8"]}, "test", book)
    kept, dropped = filter_cells(expand(spec, book), book)
    assert [(c.torch, c.version) for c in kept] == [("2.0.1", "2.6.3"), ("2.7.1", "2.8.3.post2")] and dropped == []
