"""How hashes move under everyday edits: NeuralHash side by side with pHash, dHash and PDQ.

    from neuralhash.hashing import NeuralHash
    from neuralhash.robustness import measure, write_report

    result = measure(["a.jpg", "b.png"], NeuralHash.from_source("~/nh"), seed=0)
    result.threshold("NeuralHash")          # largest distance with no false match among distinct images
    result.match_rates("NeuralHash")        # per edit, the fraction of copies still matched at it
    write_report(result, "report/")         # index.html, summary.md, CSV files, PNG plots

Modules: ``edits`` (the seeded edit catalogue), ``hashers`` (pHash, dHash,
PDQ), ``measuring`` (worker processes, distances), ``results`` (the measured
data and its statistics), ``report`` (HTML, Markdown, CSV and plots).
"""

from .edits import Edit, apply_edit, default_edits
from .results import MISSING, Failure, HasherInfo, RobustnessResult


def __getattr__(name: str):
    # Lazy: the measuring and report modules pull in Pillow filters, matplotlib and the hash packages.
    if name == "measure":
        from .measuring import measure

        return measure
    if name in ("write_report", "terminal_summary"):
        from . import report

        return getattr(report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MISSING", "Edit", "Failure", "HasherInfo", "RobustnessResult", "apply_edit", "default_edits",
           "measure", "terminal_summary", "write_report"]
