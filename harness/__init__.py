"""harness: a benchmark and acceptance-test harness for image classifiers trained on very small datasets."""

__version__ = "0.1.0"
