"""Getting Apple's files out of firmware: IPSW zips, UDIF .dmg images, GPT disks, APFS containers, folders.

Layers (each lazy, reading only the bytes asked of it): :mod:`.ipsw` (the zip
and its BuildManifest.plist), :mod:`.udif` (the disk a .dmg holds),
:mod:`.gpt` (the APFS partition), :mod:`.apfs` (volumes and snapshots, through
dissect.apfs: the optional ``extract`` extra), :mod:`.trees` (path resolution
confined to the image). :mod:`.source` recognises them; :mod:`.extract` finds
NeuralHash and writes files with a manifest.
"""

from .extract import (ExtractResult, FoundFile, extract, find_neuralhash, find_paths, firmware_model_dir,
                      list_espresso, write_files)
from .source import Firmware, open_firmware, sniff

__all__ = ["ExtractResult", "Firmware", "FoundFile", "extract", "find_neuralhash", "find_paths",
           "firmware_model_dir", "list_espresso", "open_firmware", "sniff", "write_files"]
