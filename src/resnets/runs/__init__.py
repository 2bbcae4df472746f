"""Run directories: the record a run writes once, its checkpoints, and ``open_run``, the one way to read a run.

>>> from resnets.runs import open_run
>>> run = open_run("runs/resnet20-fashion-mnist-20261123-101500")
>>> run.evaluate("test").top1_error  # the test error the run recorded for this checkpoint
"""

from resnets.runs.directory import METRIC_COLUMNS, RunDir
from resnets.runs.open import Run, open_run
from resnets.runs.record import DataRecord, RunRecord, read_record

__all__ = ["METRIC_COLUMNS", "DataRecord", "Run", "RunDir", "RunRecord", "open_run", "read_record"]
