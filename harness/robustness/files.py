"""The robustness step's files in a model folder (one place for their names)."""

ROBUSTNESS_FILE = "robustness.json"  # every photo's answer under each corruption and severity, and under masking
FAITHFULNESS_FILE = "faithfulness.json"  # deletion / insertion curves of each method's stored maps and a random map
THUMBS = "robustness"  # the folder of the flip thumbnails (clean | corrupted model input)
EVIDENCE_FILES = (ROBUSTNESS_FILE, FAITHFULNESS_FILE)
