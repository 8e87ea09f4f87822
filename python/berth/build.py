"""``berth build``: a versioned, reproducible bundle of what ``berth serve
PATH`` serves, and an image context for it (docs/deploy.md).

A bundle is a folder laid out as a model repository, so ``berth serve
BUNDLE`` serves it::

    BUNDLE/
      berth-bundle.json     the manifest: name, version, models, locked
                            requirements, SHA-256 and size of every file
      requirements.txt      exact versions of what each runtime needs,
                            as installed where the bundle was built
      Containerfile         a Debian-based image that serves the bundle
      <model>/<version>/    each model's files, and a berth.yaml holding
                            its effective settings (runtime, batching...)

The same input gives a byte-identical bundle: files are written in sorted
order, the manifest's keys are sorted, nothing records a time or a place,
and every file's modification time is ``SOURCE_DATE_EPOCH`` (or 1980-01-01),
so an archive or an image layer made from it is reproducible too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import BerthError, ConfigError
from .frameworks import FRAMEWORKS, by_runtime

if TYPE_CHECKING:  # imported where used: `berth serve` starts without them
    from importlib import metadata

__all__ = [
    "MANIFEST",
    "add_parser",
    "build_bundle",
    "build_image",
    "containerfile",
    "lock_requirements",
    "parse_tag",
    "read_manifest",
    "run",
]

MANIFEST = "berth-bundle.json"
REQUIREMENTS = "requirements.txt"
CONTAINERFILE = "Containerfile"
#: Where a built wheel or sdist of Berth travels in the image context (a
#: hidden folder, so ``berth serve BUNDLE`` does not take it for a model).
DIST_DIR = ".berth-dist"
BUNDLE_FORMAT = 1
#: 1980-01-01, the earliest time a zip file can hold; used when
#: SOURCE_DATE_EPOCH is not set.
DEFAULT_EPOCH = 315532800
#: Where the image keeps the bundle, and the user it runs as.
IMAGE_BUNDLE = "/opt/berth/bundle"
IMAGE_UID = 10001
HTTP_PORT = 8080
GRPC_PORT = 8081

#: Runtime -> the distributions it imports (as in pyproject's extras).
RUNTIME_PACKAGES: dict[str, tuple[str, ...]] = {f.runtime: f.distributions for f in FRAMEWORKS}
#: What Berth itself needs (pyproject's dependencies).
CORE_PACKAGES = ("numpy", "PyYAML")

#: Debian packages that build berthd from source, and the libraries it runs with.
BUILD_DEBS = (
    "gcc pkg-config libuv1-dev libnghttp2-dev libjansson-dev libyaml-dev "
    "libprotobuf-c-dev protobuf-c-compiler libssl-dev"
)
RUNTIME_DEBS = "libuv1 libnghttp2-14 libjansson4 libyaml-0-2 libprotobuf-c1 libssl3"

_TAG_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_TAG_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXCLUDED = ("__pycache__", ".DS_Store")


def _say(message: str) -> None:
    print(f"berth build: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- tags


def parse_tag(value: str) -> tuple[str, str]:
    """``NAME:VERSION`` -> ``(NAME, VERSION)``, as an image reference allows
    them (NAME lowercase, VERSION a tag)."""
    name, sep, version = value.rpartition(":")
    if not sep or "/" in version:
        raise ConfigError(
            f"--tag {value!r}: expected NAME:VERSION, e.g. --tag iris:1.0.0"
        )
    if not _TAG_NAME.match(name):
        raise ConfigError(
            f"--tag {value!r}: the name {name!r} must be lowercase letters and digits, "
            "separated by '.', '_' or '-' (and '/' for a repository path), e.g. iris or team/iris"
        )
    if not _TAG_VERSION.match(version):
        raise ConfigError(
            f"--tag {value!r}: the version {version!r} must be letters, digits, '_', '.' "
            "or '-' (at most 128, not starting with '.' or '-'), e.g. 1.0.0"
        )
    return name, version


def _default_name(path: Path) -> str:
    stem = path.stem if path.is_file() else path.name
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return name or "model"


# --------------------------------------------------------- requirements


def _dist(name_options: str) -> metadata.Distribution | None:
    from importlib import metadata

    for name in name_options.split("|"):
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _requires(dist: metadata.Distribution) -> list[str]:
    """Names of the distributions ``dist`` needs unconditionally (no extra)."""
    names = []
    for line in dist.requires or []:
        requirement, _, marker = line.partition(";")
        if "extra" in marker:
            continue
        match = _REQ_NAME.match(requirement)
        if match:
            names.append(match.group(1))
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(roots: list[metadata.Distribution]) -> dict[str, str]:
    """Installed distributions ``roots`` need, transitively: name -> version."""
    from importlib import metadata

    found: dict[str, str] = {}
    names: dict[str, str] = {}
    todo = list(roots)
    while todo:
        dist = todo.pop()
        name = dist.metadata["Name"]
        key = _norm(name)
        if key in found:
            continue
        found[key] = dist.version
        names[key] = name
        for needed in _requires(dist):
            if _norm(needed) in found:
                continue
            try:
                todo.append(metadata.distribution(needed))
            except metadata.PackageNotFoundError:
                continue  # an optional platform-specific need, absent here
    return {names[k]: found[k] for k in sorted(found)}


def lock_requirements(runtimes: list[str]) -> dict[str, dict[str, str]]:
    """For Berth itself (``"berth"``) and each runtime: the distributions it
    needs, transitively, at the exact versions installed here."""
    locked: dict[str, dict[str, str]] = {}
    groups: list[tuple[str, tuple[str, ...]]] = [("berth", CORE_PACKAGES)]
    groups += [(r, RUNTIME_PACKAGES.get(r, ())) for r in sorted(set(runtimes))]
    for group, packages in groups:
        roots = []
        for options in packages:
            dist = _dist(options)
            if dist is None:
                known = by_runtime.get(group)
                extra = f"berth[{known.extra}]" if known and known.extra else "berth"
                raise ConfigError(
                    f"the {group} runtime needs {options.split('|')[0]}, which is not "
                    "installed here, so its version cannot be locked; install it "
                    f"(pip install '{extra}') and run berth build again"
                )
            roots.append(dist)
        locked[group] = _closure(roots)
    return locked


def _requirements_text(locked: Mapping[str, Mapping[str, str]]) -> str:
    merged: dict[str, str] = {}
    for versions in locked.values():
        merged.update(versions)
    lines = [
        "# Written by berth build: the exact versions installed where the bundle",
        "# was built, for Berth and the runtimes its models use.",
    ]
    for name in sorted(merged, key=_norm):
        version = merged[name]
        public, _, local = version.partition("+")
        if local:  # e.g. torch 2.13.0+cpu comes from the framework's own index
            lines.append(f"# built with {name} {version}: install that build's index to match")
        lines.append(f"{name}=={public}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------- models


def _version_folder(root: Path, entry: Mapping[str, Any]) -> Path | None:
    """The folder of a model version inside a served folder (the repository's
    ``<model>/<version>``, a versions folder's ``<version>``, or the root)."""
    model = Path(entry["path"])
    for folder in (root / entry["name"] / entry["version"], root / entry["version"], root):
        if folder.is_dir() and (model == folder or folder in model.parents):
            return folder
    return None


def _copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _copy_tree(src: Path, dst: Path) -> None:
    for item in sorted(src.iterdir()):
        if item.name.startswith(".") or item.name in _EXCLUDED:
            continue
        if item.is_symlink() and not item.exists():
            raise ConfigError(f"{item}: a broken link; remove it or point it at its file")
        if item.is_dir():
            _copy_tree(item, dst / item.name)
        elif item.is_file():
            _copy_file(item, dst / item.name)


def _settings(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The berth.yaml of a model version in the bundle: every key of its
    effective entry less those the folders give."""
    return {k: v for k, v in entry.items() if k not in ("name", "version", "path")}


def _copy_models(path: Path, entries: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    import yaml

    models = []
    for entry in entries:
        dst = out / entry["name"] / entry["version"]
        if dst.exists():
            raise ConfigError(
                f"two models would both be {entry['name']} version {entry['version']} "
                "in the bundle; give them different names"
            )
        model = Path(entry["path"])
        folder = _version_folder(path, entry) if path.is_dir() else None
        _say(f"copying {entry['name']}:{entry['version']} ({entry['runtime']}) from {model}")
        if folder is not None:
            _copy_tree(folder, dst)
            inside = model.relative_to(folder).as_posix() if model != folder else "."
        elif model.is_dir():  # a bundle folder (SavedModel, MLflow): its files
            _copy_tree(model, dst)
            inside = "."
        else:
            _copy_file(model, dst / model.name)
            inside = model.name
        settings = _settings(entry)
        with (dst / "berth.yaml").open("w", encoding="utf-8") as f:
            f.write("# Written by berth build: this model version's effective settings.\n")
            yaml.safe_dump(settings, f, sort_keys=True, default_flow_style=False)
        models.append(
            {
                "name": entry["name"],
                "version": entry["version"],
                "runtime": entry["runtime"],
                "path": f"{entry['name']}/{entry['version']}/{inside}".removesuffix("/."),
            }
        )
    return models


# --------------------------------------------------------- containerfile


def containerfile(
    name: str, version: str, *, python: str, dist: str | None = None
) -> str:
    """The Containerfile that serves a bundle. ``dist`` is the file name of a
    Berth wheel or sdist carried in ``.berth-dist/``; without one, Berth
    ``__version__`` is installed from the package index."""
    spec = f"/tmp/berth-dist/{dist}" if dist else f"berth=={__version__}"
    base = f"python:{python}-slim-bookworm"
    ready = f"http://127.0.0.1:{HTTP_PORT}/v2/health/ready"
    health = (
        '["python", "-c", "import urllib.request; '
        f"urllib.request.urlopen('{ready}', timeout=4)\"]"
    )
    return f"""\
# Written by berth build for {name}:{version} (Berth {__version__}).
# Build: buildah bud --isolation chroot --format docker -t {name}:{version} .   (or docker build)
# BASE_IMAGE must be a Debian image whose Python is {python}, the version the
# requirements were locked with.
ARG BASE_IMAGE={base}

# Stage 1: Berth as a wheel (a manylinux wheel passes through; an sdist or the
# index's source package is compiled with Debian's -dev packages).
FROM ${{BASE_IMAGE}} AS berth-wheel
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {BUILD_DEBS} \\
 && rm -rf /var/lib/apt/lists/*
COPY {DIST_DIR}/ /tmp/berth-dist/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels "{spec}"

# Stage 2: the served image.
FROM ${{BASE_IMAGE}}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {RUNTIME_DEBS} \\
 && rm -rf /var/lib/apt/lists/* \\
 && groupadd --system --gid {IMAGE_UID} berth \\
 && useradd --system --uid {IMAGE_UID} --gid berth --home-dir /opt/berth --shell /usr/sbin/nologin berth
COPY {REQUIREMENTS} /opt/berth/{REQUIREMENTS}
COPY --from=berth-wheel /wheels/ /tmp/wheels/
RUN python -m venv /opt/berth/venv \\
 && /opt/berth/venv/bin/pip install --no-cache-dir -r /opt/berth/{REQUIREMENTS} /tmp/wheels/*.whl \\
 && rm -rf /tmp/wheels
COPY . {IMAGE_BUNDLE}
ENV PATH=/opt/berth/venv/bin:$PATH \\
    PYTHONDONTWRITEBYTECODE=1 \\
    BERTH_HOST=0.0.0.0 \\
    BERTH_ALLOWED_HOSTS=* \\
    BERTH_LOG_FORMAT=json
USER {IMAGE_UID}:{IMAGE_UID}
WORKDIR /opt/berth
EXPOSE {HTTP_PORT} {GRPC_PORT}
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \\
  CMD {health}
STOPSIGNAL SIGTERM
# Exec form: berth replaces itself with berthd, which gets SIGTERM and drains.
ENTRYPOINT ["berth", "serve", "{IMAGE_BUNDLE}", "--host", "0.0.0.0", "--port", "{HTTP_PORT}", "--grpc-port", "{GRPC_PORT}"]
"""


# ---------------------------------------------------------------- bundle


def _epoch(env: Mapping[str, str]) -> int:
    raw = env.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return DEFAULT_EPOCH
    if not raw.isdigit():
        raise ConfigError(f"SOURCE_DATE_EPOCH={raw!r}: expected seconds since 1970 (an integer)")
    return int(raw)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _normalise(root: Path, epoch: int) -> None:
    """Fixed permissions and modification times, deepest first."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.utime(path, (epoch, epoch))
    os.chmod(root, 0o755)
    os.utime(root, (epoch, epoch))


def read_manifest(bundle: Path) -> dict[str, Any] | None:
    """The manifest of a bundle folder, or ``None`` when it is not one."""
    path = bundle / MANIFEST
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a readable bundle manifest ({e}); build it again") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        raise ConfigError(
            f"{path}: bundle format {doc.get('format') if isinstance(doc, dict) else '?'} "
            f"is not {BUNDLE_FORMAT}; build it again with this Berth"
        )
    return doc


def verify_bundle(bundle: Path) -> list[str]:
    """Files of a bundle whose hash or size differs from its manifest, or
    that are missing or not listed; empty when the bundle is intact."""
    doc = read_manifest(bundle)
    if doc is None:
        raise ConfigError(f"{bundle}: no {MANIFEST}; not a bundle made by berth build")
    listed = doc.get("files", {})
    problems = []
    present = {p.relative_to(bundle).as_posix() for p in _files(bundle)} - {MANIFEST}
    for rel in sorted(present | set(listed)):
        if rel not in listed:
            problems.append(f"{rel}: not in the manifest")
        elif rel not in present:
            problems.append(f"{rel}: missing")
        elif _sha256(bundle / rel) != listed[rel]["sha256"]:
            problems.append(f"{rel}: SHA-256 differs from the manifest")
    return problems


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and read_manifest(out) is None)):
        raise ConfigError(
            f"{out}: exists and is not a bundle made by berth build; choose another -o DIR "
            "or remove it"
        )


def build_bundle(
    path: str,
    out: str | None = None,
    *,
    tag: str | None = None,
    dist: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Builds the bundle of what ``berth serve PATH`` serves into ``out``
    (default ``dist/NAME-VERSION``); returns its folder."""
    from .cli import discover_models

    env = os.environ if env is None else env
    head, sep, tail = path.rpartition(":")
    source = Path(head if sep and head.endswith(".py") and tail else path).expanduser()
    if not source.exists():
        raise ConfigError(f"{path}: no such file or folder; give the model file, model folder "
                          "or model repository that berth serve would serve")
    epoch = _epoch(env)
    dist_path = Path(dist).expanduser().resolve() if dist else None
    if dist_path is not None and not (
        dist_path.is_file() and (dist_path.name.endswith((".whl", ".tar.gz")))
    ):
        raise ConfigError(f"--berth-dist {dist}: expected a Berth wheel (.whl) or sdist (.tar.gz)")
    entries = discover_models(path)
    _say(f"found {len(entries)} model version(s) in {source}")
    locked = lock_requirements([e["runtime"] for e in entries])
    name, version = parse_tag(tag) if tag else (_default_name(source), "")

    import tempfile

    with tempfile.TemporaryDirectory(prefix=".berth-build-", dir=_tmp_parent(out)) as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        models = _copy_models(source.resolve(), entries, stage)
        (stage / REQUIREMENTS).write_text(_requirements_text(locked), encoding="utf-8")
        (stage / DIST_DIR).mkdir()
        (stage / DIST_DIR / "README").write_text(
            "Berth's wheel or sdist for the image, when berth build was given one.\n",
            encoding="utf-8",
        )
        if dist_path is not None:
            shutil.copyfile(dist_path, stage / DIST_DIR / dist_path.name)
        if not version:  # versioned by content: the same input, the same version
            version = "sha-" + _content_digest(stage)[:12]
        python = f"{sys.version_info.major}.{sys.version_info.minor}"
        (stage / CONTAINERFILE).write_text(
            containerfile(name, version, python=python,
                          dist=dist_path.name if dist_path else None),
            encoding="utf-8",
        )
        files = {
            p.relative_to(stage).as_posix(): {"sha256": _sha256(p), "size": p.stat().st_size}
            for p in _files(stage)
        }
        manifest = {
            "format": BUNDLE_FORMAT,
            "name": name,
            "version": version,
            "image": f"{name}:{version}",
            "berth_version": __version__,
            "python": python,
            "models": models,
            "requirements": locked,
            "files": files,
        }
        (stage / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        _normalise(stage, epoch)
        target = Path(out) if out else Path("dist") / f"{name.replace('/', '-')}-{version}"
        _prepare_out(target)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(stage), str(target))
    _say(f"wrote {target} ({len(files) + 1} files, {sum(f['size'] for f in files.values())} "
         f"bytes); serve it with: berth serve {target}")
    return target


def _tmp_parent(out: str | None) -> str:
    parent = Path(out).expanduser().resolve().parent if out else Path("dist").resolve()
    parent.mkdir(parents=True, exist_ok=True)
    return str(parent)


def _content_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for p in _files(root):
        digest.update(p.relative_to(root).as_posix().encode() + b"\0")
        digest.update(_sha256(p).encode() + b"\n")
    return digest.hexdigest()


# ----------------------------------------------------------------- image


def _base_image(bundle: Path) -> str:
    for line in (bundle / CONTAINERFILE).read_text(encoding="utf-8").splitlines():
        if line.startswith("ARG BASE_IMAGE="):
            return line.partition("=")[2].strip()
    raise ConfigError(f"{bundle / CONTAINERFILE}: no ARG BASE_IMAGE line; build the bundle again")


def build_image(bundle: Path, image: str, *, base_image: str | None = None,
                builder: str | None = None) -> None:
    """Builds the bundle's image with buildah (``--isolation chroot``)."""
    import subprocess

    buildah = builder or shutil.which("buildah")
    if not buildah:
        raise ConfigError(
            "berth build --image needs buildah, which is not on PATH: install it "
            "(Debian: apt-get install buildah), or build the context yourself: "
            f"docker build -t {image} {bundle}"
        )
    base = base_image or _base_image(bundle)
    found = subprocess.run(
        [buildah, "inspect", "--type", "image", base], capture_output=True, text=True
    )
    if found.returncode != 0:
        _say(f"base image {base} is not here; trying to pull it")
        pulled = subprocess.run([buildah, "pull", base], capture_output=True, text=True)
        if pulled.returncode != 0:
            reason = (pulled.stderr.strip().splitlines() or ["no reason given"])[-1]
            raise ConfigError(
                f"the base image {base} is not available locally and could not be pulled "
                f"({reason}). Pull it where a registry is reachable (buildah pull {base}), "
                "or pass --base-image with a local Debian image whose Python matches "
                f"the bundle's; the bundle itself is ready at {bundle}"
            )
    _say(f"building image {image} from {bundle} with buildah (this takes minutes)")
    done = subprocess.run(
        # Docker format: OCI image configs have no HEALTHCHECK.
        [buildah, "bud", "--isolation", "chroot", "--format", "docker", "--layers=false",
         "--build-arg", f"BASE_IMAGE={base}", "-t", image, "-f", str(bundle / CONTAINERFILE),
         str(bundle)],
    )
    if done.returncode != 0:
        raise BerthError(
            f"buildah could not build {image} (exit {done.returncode}); its output above says "
            f"which step failed. The bundle is ready at {bundle}: build it elsewhere with "
            f"docker build -t {image} {bundle}"
        )
    _say(f"built image {image}; run it with: podman run -p 8080:8080 -p 8081:8081 {image}")


# ------------------------------------------------------------------- CLI


def add_parser(commands: Any) -> None:
    """Adds the ``build`` command to the ``berth`` parser's subcommands."""
    build = commands.add_parser(
        "build",
        help="bundle what berth serve PATH serves, with locked requirements and a Containerfile",
        description=(
            "Write a reproducible bundle of PATH (what berth serve PATH serves): the models, "
            "their effective berth.yaml settings, the exact requirements of their runtimes, "
            "a manifest with SHA-256 hashes, and a Containerfile. berth serve BUNDLE serves it. "
            "See docs/deploy.md."
        ),
    )
    build.add_argument("path", metavar="PATH", help="model file, model folder or repository")
    build.add_argument("-o", "--output", metavar="DIR", default=None,
                       help="bundle folder (default dist/NAME-VERSION; replaced if a bundle)")
    build.add_argument("--tag", metavar="NAME:VERSION", default=None,
                       help="bundle and image name and version (default: PATH's name and "
                       "sha-<content hash>)")
    build.add_argument("--berth-dist", metavar="FILE", default=None,
                       help="a Berth wheel or sdist the image installs (default: berth=="
                       f"{__version__} from the package index)")
    build.add_argument("--image", action="store_true",
                       help="also build the image with buildah (--isolation chroot)")
    build.add_argument("--base-image", metavar="IMAGE", default=None,
                       help="Debian base image for --image (default: the Containerfile's)")


def run(ns: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Runs ``berth build``."""
    bundle = build_bundle(ns.path, ns.output, tag=ns.tag, dist=ns.berth_dist, env=env)
    manifest = read_manifest(bundle) or {}
    print(bundle)
    if ns.image:
        build_image(bundle, manifest.get("image", "berth-bundle:latest"),
                    base_image=ns.base_image)
    return 0
