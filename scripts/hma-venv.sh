#!/usr/bin/env bash
# A virtual environment for Hasher-Matcher-Actioner serving NeuralHash:
#   scripts/hma-venv.sh HMA_SOURCE [VENV]      (VENV default: .venv-hma in this checkout)
# HMA_SOURCE is HMA's folder (hasher-matcher-actioner in facebook/ThreatExchange; HMA is not
# on PyPI). Installs HMA's dependencies, gunicorn and this project with its threatexchange
# extra, in an environment of their own (HMA's Flask, SQLAlchemy, psycopg2 and APScheduler stay
# apart from the project's environments).
# HMA's pyproject.toml installs no package of its own (its Docker image copies src/ instead),
# so the environment gets a .pth file naming HMA_SOURCE/src. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 1 ] || [ ! -f "$1/src/OpenMediaMatch/app.py" ]; then
    echo "usage: $0 HMA_SOURCE [VENV]   (HMA_SOURCE: the folder holding HMA's pyproject.toml and src/OpenMediaMatch)" >&2
    exit 2
fi
hma=$(cd "$1" && pwd)
venv=${2:-$root/.venv-hma}
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "hma-venv: HMA needs Python 3.11 or later; set PYTHON to one" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q "$hma" gunicorn "$root[threatexchange]"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$hma/src" > "$site/openmediamatch-src.pth"
"$venv/bin/python" -c 'import OpenMediaMatch.app, neuralhash.integrations.threatexchange'
echo "$venv: HMA $(cat "$hma/version.txt" 2>/dev/null || echo '(version unknown)') with neuralhash"
