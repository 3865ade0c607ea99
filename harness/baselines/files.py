"""The baseline ladder's evidence file, beside run.json (recorded in the run's manifest: harness.verify)."""

BASELINES_FILE = "baselines.json"
