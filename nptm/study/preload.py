"""Imported once by the server that forks ``--jobs`` workers (``nptm.study.jobs``): what each worker's first unit
would otherwise import lazily. ``NPTM_JOBS_DATASET`` names the study's dataset (default: the study's default), whose
builder's own imports (``Dataset.imports``, e.g. scikit-learn for the digits: about 1 s) are made too."""
from __future__ import annotations

import importlib
import os

import torch._dynamo  # noqa: F401  # torch.optim's first optimizer imports it: 1-2 s

import nptm.sparse  # noqa: F401  # each run's latency, of its deployed form
from nptm.data import DATASETS
from nptm.study.config import DataOptions
from nptm.study.jobs import DATASET_ENV

_dataset = os.environ.get(DATASET_ENV) or DataOptions().dataset
for _module in DATASETS[_dataset].imports if _dataset in DATASETS else ():
    try:
        importlib.import_module(_module)
    except ImportError:  # the dataset says so itself when it is built
        pass
