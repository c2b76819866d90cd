"""The built layer is for Lambda's arm64; this machine may be another (tests/sam and the
cold-start bench run it here). Every file of the build
runs here as built, except the native extensions: each distribution that ships one for a
foreign machine is swapped for the same version's wheel for this one (from PyPI, cached), in a
copy of the build. What stays unproven here is only that those extensions load on arm64; a
test checks they are arm64 ELF files of the versions the layer pins."""

from __future__ import annotations

import platform
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

# ELF e_machine values (the ELF specification), by what platform.machine() calls them.
ELF_MACHINES = {"x86_64": 62, "aarch64": 183, "arm64": 183}


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    return int.from_bytes(header[18:20], "little")


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    dist_info: Path
    files: tuple[str, ...]  # paths relative to the site directory, from RECORD

    @property
    def native(self) -> list[str]:
        return [f for f in self.files if f.endswith(".so") or ".so." in f]


def distributions(site: Path) -> list[Distribution]:
    found = []
    for dist_info in sorted(site.glob("*.dist-info")):
        fields = dict(
            line.split(": ", 1)
            for line in (dist_info / "METADATA").read_text("utf-8").splitlines()
            if line.startswith(("Name: ", "Version: "))
        )
        record = (dist_info / "RECORD").read_text("utf-8").splitlines()
        files = tuple(line.rsplit(",", 2)[0] for line in record if line)
        found.append(Distribution(fields["Name"], fields["Version"], dist_info, files))
    return found


def foreign_native(site: Path) -> list[Distribution]:
    """The distributions whose native extensions this machine cannot load."""
    here = ELF_MACHINES[platform.machine()]
    return [
        d
        for d in distributions(site)
        if any(elf_machine(site / f) != here for f in d.native if (site / f).is_file())
    ]


def runnable_copy(source: Path, site_path: str, into: Path, python: str, cache: Path) -> Path:
    """A copy of `source` (a build, or a layer) whose site directory (`site_path`, relative
    to it: the layer's `python/`) this machine can run."""
    shutil.copytree(source, into, symlinks=True)
    site = into / site_path
    for dist in foreign_native(site):
        wheel = host_wheel(dist, python, cache)
        for name in dist.files:
            (site / name).unlink(missing_ok=True)
        shutil.rmtree(dist.dist_info, ignore_errors=True)
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    return into


def host_wheel(dist: Distribution, python: str, cache: Path) -> Path:
    """The wheel of the same distribution and version for this machine and `python`."""
    cache.mkdir(parents=True, exist_ok=True)
    requirement = f"{dist.name}=={dist.version}"
    download = ["download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(cache)]
    proc = subprocess.run(  # noqa: S603 - our interpreter, a pinned requirement
        [python, "-m", "pip", *download, requirement],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pip download {requirement} failed:\n{proc.stderr[-3000:]}")
    stem = dist.name.replace("-", "_").lower()
    machine = platform.machine()
    wheels = [
        w
        for w in cache.glob("*.whl")
        if w.name.lower().startswith(f"{stem}-{dist.version}-") and machine in w.name
    ]
    if not wheels:
        raise RuntimeError(f"no {machine} wheel of {requirement} in {cache}")
    return max(wheels)
