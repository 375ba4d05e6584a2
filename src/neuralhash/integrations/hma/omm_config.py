"""Hasher-Matcher-Actioner (HMA 1.1.x) configuration serving NeuralHash beside PDQ.

Give HMA this file as its ``OMM_CONFIG`` (see docs/hma.md). HMA executes it with
Flask's ``from_pyfile`` and keeps its upper-case names; any of them can be overridden
from the environment with the ``OMM_`` prefix (HMA's ``from_prefixed_env``, values
read as JSON): ``OMM_DATABASE_URI``, ``OMM_ROLE_HASHER=false``,
``OMM_TASK_INDEXER_INTERVAL_SECONDS=5`` and so on.

The NeuralHash model is chosen as the ``neuralhash`` signal type chooses it:
``$NEURALHASH_MODEL`` (a converted ``.onnx`` file, a folder of Apple's Espresso
files, or ``demo``), else Apple's model under ``$NEURALHASH_MODEL_PATH``; the match
threshold is 8 bits of 96, or ``$NEURALHASH_TX_THRESHOLD``. Only the hasher role
(hashing, and the curator's adding of content by URL or upload) needs a model.
"""

from OpenMediaMatch.storage.postgres.impl import DefaultOMMStore
from threatexchange.content_type.photo import PhotoContent
from threatexchange.content_type.video import VideoContent
from threatexchange.exchanges.impl.fb_threatexchange_api import FBThreatExchangeSignalExchangeAPI
from threatexchange.exchanges.impl.file_api import LocalFileSignalExchangeAPI
from threatexchange.exchanges.impl.ncmec_api import NCMECSignalExchangeAPI
from threatexchange.exchanges.impl.static_sample import StaticSampleSignalExchangeAPI
from threatexchange.exchanges.impl.stop_ncii_api import StopNCIISignalExchangeAPI
from threatexchange.signal_type.md5 import VideoMD5Signal
from threatexchange.signal_type.pdq.signal import PdqSignal

from neuralhash.integrations.threatexchange import NeuralHashSignal

# The role, password and database that scripts/hma-postgres.sh creates.
DATABASE_URI = "postgresql+psycopg2://hma:hma@127.0.0.1:5432/hma"

# One instance in every role. A scaled deployment runs one curator (with the tasks) and
# as many hashers and matchers as it needs: set OMM_ROLE_* and OMM_TASK_* per instance.
PRODUCTION = True  # no /dev routes (they can reset tables)
UI_ENABLED = True
ROLE_HASHER = True
ROLE_MATCHER = True
ROLE_CURATOR = True

# Background tasks (APScheduler, started by HMA under gunicorn): fetch exchanges, build
# the indexes from the banks, and reload a newer index into each matcher's memory.
TASK_FETCHER = True
TASK_INDEXER = True
TASK_INDEX_CACHE = True
TASK_FETCHER_INTERVAL_SECONDS = 240
TASK_INDEXER_INTERVAL_SECONDS = 60
# HMA's default is 30 s; a check is one small query per signal type.
TASK_INDEX_CACHE_INTERVAL_SECONDS = 5
INDEX_CACHE_MAX_STALE_SEC = 65
MAX_REMOTE_FILE_SIZE = 100 * 1024 * 1024

STORAGE_IFACE_INSTANCE = DefaultOMMStore(
    signal_types=[PdqSignal, VideoMD5Signal, NeuralHashSignal],
    content_types=[PhotoContent, VideoContent],
    exchange_types=[
        StaticSampleSignalExchangeAPI,
        LocalFileSignalExchangeAPI,
        FBThreatExchangeSignalExchangeAPI,  # type: ignore[list-item]
        NCMECSignalExchangeAPI,  # type: ignore[list-item]
        StopNCIISignalExchangeAPI,  # type: ignore[list-item]
    ],
)

# HMA logs through Flask's logger; without a handler gunicorn shows none of it.
FLASK_LOGGING_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,  # HMA's loggers exist by the time this is applied
    "formatters": {"default": {"format": "[%(asctime)s] %(levelname)s in %(module)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "default"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {"apscheduler": {"level": "WARNING"}},  # a line for each run of every task otherwise
}
