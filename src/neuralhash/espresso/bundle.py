"""What a folder holds: one Espresso model, a pipeline of them, or an ML Program.

Compiled Core ML bundles (``.mlmodelc``) are recognised by their contents,
whatever the folder is called:

- ``*.espresso.net`` (with ``.shape`` / ``.weights``, and ``coremldata.bin``
  in a bundle): one Espresso model;
- ``model0/``, ``model1/``... and no graph of its own: a pipeline, each stage
  a bundle of its own (often Espresso, sometimes a non-neural stage that has
  only ``coremldata.bin``, whose first word names its Core ML model type:
  a linear classifier, a vectorizer, Apple's built-in feature extractor...);
  a stage is addressed as ``BUNDLE/model1``;
- ``model.mil`` (and ``weights/weight.bin``): an ML Program, the newer
  compiled format, which is not Espresso at all.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import EspressoError, MLProgramError, PipelineError
from .coremldata import FILENAME as COREMLDATA
from .coremldata import read_coremldata

NET_SUFFIX = ".espresso.net"
MIL_FILENAME = "model.mil"
_STAGE = re.compile(r"model(\d+)")
_MAX_ENTRIES = 10_000  # a folder listing is read once; a huge unrelated folder is not scanned further


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline bundle."""

    index: int
    path: Path
    kind: str  # "espresso", "ml program", "pipeline" (nested), or "no Espresso model"
    model_type: str | None = None  # Core ML's name for it, from its coremldata.bin (None: unreadable)

    def describe(self) -> str:
        """``model1 (glmClassifier)``, ``model0 (pipeline: dictVectorizer, featureVectorizer)``, ``model2 (espresso)``."""
        if self.kind == "espresso":
            return f"{self.path.name} (espresso)"
        if self.kind == "pipeline":
            inner = ", ".join(s.model_type or s.kind for s in pipeline_stages(self.path))
            return f"{self.path.name} (pipeline: {inner})"
        if self.model_type in BUILT_IN:
            return f"{self.path.name} ({self.model_type}: Apple's built-in model, not in the bundle)"
        return f"{self.path.name} ({self.model_type or self.kind})"


#: Core ML model types that Apple provides with the OS: a bundle names them but does not hold them.
BUILT_IN = {"visionFeaturePrint", "textClassifier", "wordTagger", "soundAnalysisPreprocessing", "gazetteer",
            "wordEmbedding"}


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            out = []
            for entry in it:
                out.append(entry)
                if len(out) >= _MAX_ENTRIES:
                    break
            return out
    except OSError as exc:
        raise EspressoError(f"{folder}: cannot list this folder ({exc.strerror or exc})") from None


def kind_of(folder: Path) -> str:
    """``espresso``, ``ml program``, ``pipeline`` or ``no Espresso model`` for a folder."""
    names = {e.name for e in _entries(folder)}
    if any(n.endswith(NET_SUFFIX) for n in names):
        return "espresso"
    if MIL_FILENAME in names:
        return "ml program"
    if any(_STAGE.fullmatch(n) and (folder / n).is_dir() for n in names):
        return "pipeline"
    return "no Espresso model"


def pipeline_stages(folder: str | os.PathLike) -> tuple[Stage, ...]:
    """The stages of a pipeline bundle in order (empty when ``folder`` is not a pipeline)."""
    folder = Path(folder)
    if not folder.is_dir():
        return ()
    entries = _entries(folder)
    if any(e.name.endswith(NET_SUFFIX) or e.name == MIL_FILENAME for e in entries):
        return ()
    found = []
    for e in entries:
        m = _STAGE.fullmatch(e.name)
        if m and e.is_dir():
            found.append((int(m.group(1)), Path(e.path)))
    found.sort()
    return tuple(Stage(i, p, kind_of(p), _model_type(p)) for i, p in found)


def _model_type(folder: Path) -> str | None:
    path = folder / COREMLDATA
    if not path.is_file():
        return None
    info = read_coremldata(path)
    return info.model_type_name if info.readable else None


def check_folder(folder: Path) -> None:
    """Raise the precise error for a folder that holds no Espresso graph of its own."""
    names = {e.name for e in _entries(folder)}
    if MIL_FILENAME in names:
        raise MLProgramError(
            f"{folder}: an ML Program (model.mil), not an Espresso model: newer Core ML bundles keep their "
            "program in MIL text and weights/weight.bin, which this converter does not read"
        )
    stages = pipeline_stages(folder)
    if stages:
        listed = ", ".join(s.describe() for s in stages)
        raise PipelineError(f"{folder}: a pipeline of {len(stages)} stages, not one model: {listed}; "
                            f"{pipeline_advice(folder, stages)}", folder, stages)
    raise EspressoError(f"{folder}: no *{NET_SUFFIX} file in this folder")


def pipeline_advice(folder: Path, stages: tuple[Stage, ...]) -> str:
    """What can be done with a pipeline: never "convert the whole pipeline" unless every stage is Espresso."""
    espresso = [s for s in stages if s.kind == "espresso"]
    if espresso and len(espresso) == len(stages):
        return f"address one stage as {folder / stages[0].path.name}, or convert the whole pipeline"
    others = ", ".join(s.describe() for s in stages if s.kind != "espresso")
    if espresso:
        return (f"address an Espresso stage as {folder / espresso[0].path.name}; the pipeline as a whole cannot "
                f"be converted: {others} is not an Espresso network")
    return ("no stage is an Espresso network, so none can be converted: Core ML's non-neural stages "
            "(linear models, SVMs, vectorizers) are specifications, which this converter does not read")
