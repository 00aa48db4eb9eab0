"""`python -m finesyn.report`: print the tables of the current metrics (what `make repro` ends with)."""

import logging
from pathlib import Path

from finesyn.config import load_params
from finesyn.report.build import log_drift
from finesyn.report.rows import collect
from finesyn.report.text import print_table

params = load_params()
rows = collect(params, Path("metrics"))
print_table(params, rows)
logging.basicConfig(level=logging.INFO, format="%(message)s")
log_drift(params, rows, logging.getLogger("finesyn.report"))
