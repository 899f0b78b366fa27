"""Bad input: one clear line, a non-zero exit, and nothing in the cache."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import pytest

import builder
from builder.errors import CommandTimeout, FileAccessError
from builder.files import sha256_of
from builder.process import capture
from builder.store.cache import Cache
from tests.conftest import TORCHEXT, run_builder, running_torch_cuda, small_tmpfs, write_recipe

ARCHS_11_8 = "35 37 50 52 53 60 61 62 70 72 75 80 86 87 89 90"


def fake_toolkit(root: Path, release: str, archs: str) -> Path:
    """A tree shaped like a CUDA toolkit whose nvcc answers only --version and --list-gpu-arch:
    enough for the checks that must refuse a plan before anything compiles."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime_api.h").write_text("")
    listed = "\\n".join(f"compute_{a}" for a in archs.split())
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$1" in
          --version) echo "Cuda compilation tools, release {release}, V{release}.89";;
          --list-gpu-arch) printf '{listed}\\n';;
          *) echo "this nvcc compiles nothing" >&2; exit 1;;
        esac
        """))
    nvcc.chmod(0o755)
    return root


def assert_refused(result, code: int, *fragments: str, cache: Path | None = None) -> None:
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if cache is not None:
        entries = cache / "entries"
        assert not entries.exists() or not any(entries.iterdir())


def test_unknown_recipe(tmp_path: Path) -> None:
    result = run_builder("build", "flash-atn", "--arch", "86", "--cache", str(tmp_path))
    assert_refused(result, 3, "unknown recipe 'flash-atn'", "did you mean 'flash-attn'?", cache=tmp_path)


def test_unknown_version(tmp_path: Path) -> None:
    result = run_builder("build", "flash-attn", "--version", "1.0", "--arch", "86", "--cache", str(tmp_path))
    assert_refused(result, 3, "flash-attn has no version '1.0'", "2.8.3", cache=tmp_path)


def test_malformed_arch(tmp_path: Path) -> None:
    result = run_builder("build", "flash-attn", "--arch", "ampere", "--cache", str(tmp_path))
    assert_refused(result, 2, "malformed arch 'ampere'", cache=tmp_path)


def test_no_gpu_and_no_arch(tmp_path: Path) -> None:
    result = run_builder("plan", "flash-attn", "--cache", str(tmp_path))
    assert_refused(result, 2, "no GPU is visible and no --arch was given", "--arch 86")


def test_arch_beyond_the_local_toolkit(tmp_path: Path) -> None:
    result = run_builder("build", "causal-conv1d", "--arch", "35", "--cache", str(tmp_path))
    assert_refused(result, 4, f"CUDA {running_torch_cuda()}", "cannot target sm_35", cache=tmp_path)


def test_arch_beyond_cuda_11_8(tmp_path: Path) -> None:
    cuda = fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)
    result = run_builder("plan", "flash-attn", "--version", "2.6.3", "--cuda", "11.8", "--arch", "100",
                         "--torch", "2.0.1",
                         "--torch-index", "https://download.pytorch.org/whl/cu118",
                         "--cache", str(tmp_path), env={"CUDA_HOME": str(cuda)})
    assert_refused(result, 4, "CUDA 11.8", "cannot target sm_100")


def test_no_toolkit_for_cuda(tmp_path: Path) -> None:
    result = run_builder("build", "causal-conv1d", "--cuda", "12.4", "--arch", "86", "--cache", str(tmp_path))
    assert_refused(result, 4, "no CUDA 12.4 toolkit found", f"{running_torch_cuda()} at", cache=tmp_path)


def test_torch_cuda_major_mismatch(tmp_path: Path, fixture_recipe: Path) -> None:
    cuda = fake_toolkit(tmp_path / "cuda-11.8", "11.8", ARCHS_11_8)
    result = run_builder("build", str(fixture_recipe), "--cuda", "11.8", "--arch", "86",
                         "--cache", str(tmp_path / "cache"), env={"CUDA_HOME": str(cuda)})
    assert_refused(result, 4, f"torch is built with CUDA {running_torch_cuda()} but the toolkit is CUDA 11.8",
                   cache=tmp_path / "cache")


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sha256_mismatch(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "pkg-0.1.0.tar.gz", {"pkg/setup.py": b"print('hi')\n"})
    recipe = write_recipe(tmp_path, "pkg", f'{{ path = "{archive}", sha256 = "{"0" * 64}" }}')
    cache = tmp_path / "cache"
    result = run_builder("build", str(recipe), "--arch", "86", "--cache", str(cache))
    assert_refused(result, 6, "sha256", sha256_of(archive), cache=cache)


def test_archive_escaping_its_tree(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "evil.tar.gz", {"pkg/setup.py": b"", "../escaped.txt": b"owned"})
    recipe = write_recipe(tmp_path, "evil", f'{{ path = "{archive}", sha256 = "{sha256_of(archive)}" }}')
    cache = tmp_path / "cache"
    result = run_builder("build", str(recipe), "--arch", "86", "--cache", str(cache),
                         env={"BUILDER_BUILD_DIR": str(tmp_path / "build")})
    assert_refused(result, 6, "../escaped.txt", cache=cache)
    assert not list(tmp_path.rglob("escaped.txt"))  # the cache and the build directory included


def test_patch_that_does_not_apply(tmp_path: Path) -> None:
    patch = tmp_path / "broken.patch"
    patch.write_text(textwrap.dedent("""\
        --- a/setup.py
        +++ b/setup.py
        @@ -1,3 +1,3 @@
         this line
        -is not in
        +the fixture
         setup.py
        """))
    extra = f'[[patches]]\nfile = "{patch}"\n'
    recipe = write_recipe(tmp_path, "fixture-ext", f'{{ path = "{TORCHEXT}" }}', extra=extra)
    cache = tmp_path / "cache"
    result = run_builder("build", str(recipe), "--arch", "86", "--cache", str(cache))
    assert_refused(result, 7, "broken.patch does not apply", "setup.py hunk #1", cache=cache)


@pytest.mark.parametrize("jobs", ["0", "-3"])
def test_bad_jobs(tmp_path: Path, jobs: str) -> None:
    result = run_builder("plan", "flash-attn", "--arch", "86", "--jobs", jobs)
    assert_refused(result, 2, f"--jobs '{jobs}'", "at least 1")


def test_cache_on_a_regular_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    for args in (("plan", "causal-conv1d", "--arch", "86"), ("cache", "list"), ("cache", "verify")):
        result = run_builder(*args, "--cache", str(afile))
        assert_refused(result, 13, f"the cache directory {afile} is a file", "point --cache")
    below = run_builder("cache", "list", "--cache", str(afile / "cache"))
    assert_refused(below, 13, f"lies under {afile}, which is a file")
    as_json = run_builder("plan", "causal-conv1d", "--arch", "86", "--cache", str(afile), "--json")
    assert as_json.returncode == 13
    document = json.loads(as_json.stdout)
    assert document["kind"] == "FileAccessError" and document["exit_code"] == 13 and "hint" in document


def test_a_cache_where_no_folder_can_be_made_is_refused_before_compiling(fixture_recipe: Path) -> None:
    cache = Path("/proc/builder-cache")  # /proc takes no new folder, not even from root
    result = run_builder("build", str(fixture_recipe), "--arch", "86", "--cache", str(cache))
    assert_refused(result, 13, f"cannot make the cache {cache}", "point builder at a writable cache")
    assert "==> compile" not in result.stderr and not cache.exists()


@pytest.mark.parametrize(("python", "what"), [("/tmp", "is a directory"), ("/etc/passwd", "is not executable"),
                                              ("/no/such/python", "does not exist")])
def test_python_that_is_no_interpreter(tmp_path: Path, python: str, what: str) -> None:
    result = run_builder("plan", "causal-conv1d", "--arch", "86", "--python", python, "--cache", str(tmp_path))
    assert_refused(result, 2, f"the target interpreter {python} {what}", "--python the path of a Python")


def test_install_of_a_wheel_that_is_not_a_zip(tmp_path: Path) -> None:
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    wheel.write_text("not a zip\n")
    result = run_builder("install", str(wheel), "--cache", str(tmp_path / "cache"))
    assert_refused(result, 10, "is not a wheel (not a readable zip file", "a wheel builder made")


@pytest.mark.parametrize(("given", "said"), [("missing.whl", ": no such file"), ("", " is not a wheel file"),
                                             ("setup.py", " is not a wheel file")])
def test_install_of_a_path_that_is_no_wheel_says_so_not_that_no_key_matches(tmp_path: Path, given: str,
                                                                           said: str) -> None:
    (tmp_path / "setup.py").write_text("")
    path = str(tmp_path / given)  # "": the folder itself
    result = run_builder("install", path, "--cache", str(tmp_path / "cache"))
    assert_refused(result, 2, path + said, "or a cache key")


def _cache_with_a_corrupt_entry(root: Path) -> tuple[Cache, str, str]:
    """A cache holding one good entry and one whose entry.json is cut off mid-write."""
    cache = Cache(root)
    wheel = root.parent / "good-1.0-py3-none-any.whl"
    wheel.write_bytes(b"a stored wheel")
    good = cache.store("a" * 24, wheel, {"recipe": "good", "version": "1.0"}).key
    bad = "b" * 24
    (root / "entries" / bad).mkdir()
    (root / "entries" / bad / "entry.json").write_text('{"wheel": "bad-1.0-py3-none-any.whl", "sha2')
    return cache, good, bad


def test_corrupt_entry_json_is_skipped_by_list_and_gc_and_quarantined_by_verify(tmp_path: Path) -> None:
    cache, good, bad = _cache_with_a_corrupt_entry(tmp_path / "cache")
    listed = run_builder("cache", "list", "--cache", str(cache.root))
    assert listed.returncode == 0, listed.stderr
    assert good[:12] in listed.stdout and f"skipped corrupt entry {bad}" in listed.stdout
    assert "Traceback" not in listed.stderr
    rows = json.loads(run_builder("cache", "list", "--cache", str(cache.root), "--json").stdout)
    assert {row["key"]: "corrupt" in row for row in rows} == {good: False, bad: True}
    collected = run_builder("cache", "gc", "--keep", "1", "--cache", str(cache.root), "--json")
    assert collected.returncode == 0, collected.stderr
    assert bad in json.loads(collected.stdout)["skipped_corrupt"]
    verified = run_builder("cache", "verify", "--cache", str(cache.root))
    assert verified.returncode == 9, verified.stderr
    assert f"quarantined: {bad}" in verified.stdout and "Traceback" not in verified.stderr
    assert [e.key for e in cache.entries()] == [good] and not (cache.root / "entries" / bad).exists()
    assert [p.name[:24] for p in (cache.root / "quarantine").iterdir()] == [bad]


def test_patch_entry_without_file(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "nofile", f'{{ path = "{TORCHEXT}" }}',
                          extra='[[patches]]\nwhen = { version = ">=0.1" }\n')
    result = run_builder("plan", str(recipe), "--arch", "86", "--cache", str(tmp_path / "cache"))
    assert_refused(result, 3, "patches[0]: missing required key 'file'")


def test_a_query_that_hangs_is_stopped_with_one_error() -> None:
    with pytest.raises(CommandTimeout) as caught:
        capture(["sleep", "30"], timeout=0.5)
    assert caught.value.message == "`sleep 30` did not finish within 0.5 s and was stopped"
    assert caught.value.exit_code == 15 and caught.value.hint


def test_an_escaping_disk_full_is_one_line(tmp_path: Path) -> None:
    """A real full disk under the local cache: pulling a 2 MB entry into a 1 MB tmpfs."""
    shared = Cache(tmp_path / "shared")
    wheel = tmp_path / "big-1.0-py3-none-any.whl"
    wheel.write_bytes(os.urandom(2 * 1024 * 1024))
    key = shared.store("c" * 24, wheel, {"recipe": "big", "version": "1.0"}).key
    with small_tmpfs(tmp_path / "full") as full:
        args = ("cache", "pull", key, "--cache-url", str(shared.root), "--cache", str(full / "cache"))
        result = run_builder(*args)
        assert_refused(result, 13, "No space left on device", "the disk is full")
        document = json.loads(run_builder(*args, "--json").stdout)
        assert document["kind"] == "FileAccessError" and "No space left on device" in document["error"]
        debug = run_builder(*args, "--debug")
        assert "Traceback" in debug.stderr and "OSError" in debug.stderr


def test_each_kind_of_escaping_os_error_gets_its_hint(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(NotADirectoryError) as not_a_directory:
        (afile / "x").write_text("")
    error = FileAccessError.from_os_error(not_a_directory.value)
    assert error.message == f"Not a directory: {afile / 'x'}" and "a part of that path is a file" in str(error.hint)
    denied = FileAccessError.from_os_error(PermissionError(errno.EACCES, "Permission denied", "/srv/cache/locks"))
    assert denied.message == "Permission denied: /srv/cache/locks" and "point --cache" in str(denied.hint)
    full = FileAccessError.from_os_error(OSError(errno.ENOSPC, "No space left on device", "/srv/cache/x"))
    assert "the disk is full" in str(full.hint) and full.exit_code == 13


def test_build_dir_with_a_comma_is_refused_before_compiling(fixture_recipe: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_builder("build", str(fixture_recipe), "--arch", "86", "--no-install", "--cache", str(cache),
                         env={"BUILDER_BUILD_DIR": str(tmp_path / "a,b")})
    assert_refused(result, 2, "contains a comma", "nvcc", "build-dir", cache=cache)


def _not_python(tmp_path: Path, kind: str) -> Path:
    """An executable that answers builder's probe with something other than its JSON line."""
    if kind == "true":
        return Path("/bin/true")
    script = tmp_path / f"{kind}.sh"
    answer = "junk" if kind == "junk" else '{"python": "3.11"}'  # valid JSON, most keys missing
    script.write_text(f"#!/bin/sh\necho '{answer}'\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize(("kind", "why"), [("true", "it printed nothing"), ("junk", "it printed 'junk'"),
                                           ("partial", "its answer to builder's probe lacks python_tag, platform")])
def test_python_that_answers_no_probe_is_one_line_from_every_command(tmp_path: Path, kind: str, why: str) -> None:
    python = _not_python(tmp_path, kind)
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:  # a wheel without builder's provenance: install probes first
        archive.writestr("pkg/__init__.py", "")
        archive.writestr("pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    cache = tmp_path / "cache"
    for args in (("build", "causal-conv1d", "--arch", "86"), ("install", str(wheel)), ("doctor",), ("index-url",)):
        result = run_builder(*args, "--python", str(python), "--cache", str(cache))
        assert_refused(result, 2, f"{python} is not a Python interpreter builder can use: {why}",
                       "--python the path of a Python 3 executable", cache=cache)


def test_an_arch_suffix_the_toolkit_lacks_is_refused_at_plan_time(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = run_builder("build", "causal-conv1d", "--arch", "86a", "--cache", str(cache))
    assert_refused(result, 4, f"CUDA {running_torch_cuda()}", "cannot target sm_86a (it targets ", cache=cache)
    listed = result.stderr.split("(it targets ", 1)[1].split(")", 1)[0].split(", ")
    assert "86" in listed and "86a" not in listed
    assert "90a" in listed  # the toolkit's suffix forms, from its nvcc --help, are named and planned
    assert run_builder("plan", "causal-conv1d", "--arch", "90a", "--cache", str(cache)).returncode == 0


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_cache_serve_on_a_port_that_is_none(tmp_path: Path, port: str) -> None:
    result = run_builder("cache", "serve", f"--port={port}", "--cache", str(tmp_path))
    assert_refused(result, 2, f"argument --port: '{port}' is not a port", "0 to 65535")


@pytest.mark.parametrize("cuda", ["abc", "13", "1.2.3.4"])
def test_toolchain_install_of_a_malformed_version(tmp_path: Path, cuda: str) -> None:
    cache = tmp_path / "cache"
    result = run_builder("toolchain", "install", cuda, "--cache", str(cache))
    assert_refused(result, 2, f"malformed CUDA version '{cuda}' to install", "builder toolchain install 13.0")
    assert not cache.exists()


def test_builder_config_naming_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config.toml"
    for args in (("config",), ("plan", "causal-conv1d", "--arch", "86")):
        result = run_builder(*args, "--cache", str(tmp_path / "cache"), env={"BUILDER_CONFIG": str(missing)})
        assert_refused(result, 14, f"BUILDER_CONFIG names {missing}, which does not exist", "unset BUILDER_CONFIG")


def test_a_malformed_recipe_sha256_is_refused_at_load_naming_file_and_version(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "badsha", '{ pypi = "badsha", file = "badsha-0.1.0.tar.gz", sha256 = "xyz" }')
    cache = tmp_path / "cache"
    for args in (("plan", str(recipe), "--arch", "86"), ("fetch", str(recipe))):
        result = run_builder(*args, "--cache", str(cache))
        assert_refused(result, 3, 'badsha.toml: versions."0.1.0".source.sha256: expected a sha256 (64 hex digits), '
                                  'got "xyz"', cache=cache)
    assert not (cache / "sources").exists()


def test_install_of_a_key_whose_entry_json_is_corrupt_names_the_corruption(tmp_path: Path) -> None:
    cache, _, bad = _cache_with_a_corrupt_entry(tmp_path / "cache")
    for key in (bad, bad[:6]):
        result = run_builder("install", key, "--python", str(tmp_path / "no-python"), "--cache", str(cache.root))
        assert_refused(result, 9, f"cache entry {bad} is corrupt: entry.json is unreadable", "cache verify")
    missing = run_builder("install", "c" * 8, "--cache", str(cache.root))
    assert_refused(missing, 9, "no cache entries in", "match 'cccccccc'")


def test_a_target_without_torch_is_offered_python_and_torch(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    result = run_builder("plan", "causal-conv1d", "--arch", "86", "--python", str(bare / "bin" / "python"),
                         "--cache", str(tmp_path / "cache"))
    assert_refused(result, 4, "cannot build CUDA extensions", "--python PATH of an interpreter that has a CUDA build "
                   "of torch", "--torch VERSION")


def test_an_install_the_recipe_cannot_make_is_refused_by_plan_and_build_alike(tmp_path: Path,
                                                                              fixture_recipe: Path) -> None:
    cache = tmp_path / "cache"
    for command in ("plan", "build"):
        result = run_builder(command, str(fixture_recipe), "--arch", "86", "--install-mode", "artifacts",
                             "--cache", str(cache))
        assert_refused(result, 2, "fixture-ext builds no libraries to install as artifacts",
                       "use --install-mode wheel", cache=cache)
    ignored = run_builder("build", str(fixture_recipe), "--arch", "86", "--install-dir", str(tmp_path / "libs"),
                          "--cache", str(cache))
    assert_refused(ignored, 2, "--install-dir is where artifacts go, and fixture-ext installs as a wheel",
                   "drop --install-dir", cache=cache)
    assert not (tmp_path / "libs").exists()


def test_version_is_builders_before_a_command_and_the_packages_after_it(tmp_path: Path) -> None:
    for flag in ("--version", "-V"):
        shown = run_builder(flag)
        assert shown.returncode == 0 and shown.stdout.strip() == f"builder {builder.__version__}"
    planned = run_builder("plan", "causal-conv1d", "--version", "1.7.0", "--arch", "86", "--json",
                          "--cache", str(tmp_path / "cache"))
    assert planned.returncode == 0, planned.stderr
    assert json.loads(planned.stdout)["version"] == "1.7.0"
