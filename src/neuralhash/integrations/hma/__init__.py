"""NeuralHash in Hasher-Matcher-Actioner (HMA, Meta's "OpenMediaMatch" service).

- ``omm_config.py`` (beside this file, :data:`OMM_CONFIG`): an HMA configuration serving
  the ``neuralhash`` signal type beside PDQ, for HMA's ``OMM_CONFIG`` variable;
- :mod:`neuralhash.integrations.hma.local`: run HMA as it is deployed (its Flask app
  under gunicorn, on PostgreSQL) on this machine, for the tests, the benchmark and
  trying it out.

Setting it up from an empty machine is docs/hma.md. Importing this package imports
neither HMA nor threatexchange.
"""

from __future__ import annotations

from pathlib import Path

#: The HMA configuration file (``OMM_CONFIG``) that serves NeuralHash beside PDQ.
OMM_CONFIG = Path(__file__).resolve().parent / "omm_config.py"
