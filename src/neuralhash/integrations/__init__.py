"""NeuralHash inside the tools trust-and-safety teams and researchers already run.

- :mod:`neuralhash.integrations.threatexchange`: a ``threatexchange`` extension
  (``TX_MANIFEST``): the ``neuralhash`` signal type for photos, for the
  ``threatexchange`` CLI and Hasher-Matcher-Actioner
  (``pip install '.[threatexchange]'``);
- :mod:`neuralhash.integrations.perception`: ``NeuralHashHasher``, an image hasher
  in Thorn's ``perception`` interface, so its benchmarking runs NeuralHash beside
  pHash and PDQ (``pip install '.[perception]'``).

Importing this package imports neither tool; each module needs its extra.
"""

from __future__ import annotations


def missing_extra(tool: str, extra: str) -> ImportError:
    """The error raised when an integration's tool is not installed (one line, with the fix)."""
    from ..errors import install_hint

    return ImportError(f"neuralhash.integrations.{extra} needs the {tool} package: {install_hint(extra)}")
