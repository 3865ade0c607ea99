"""The baseline ladder: a linear probe and k-nearest-neighbours on frozen ImageNet features, fitted on the run's
training split and evaluated on every test set (baselines.json), and the `beats_probe` criterion; docs/evidence.md."""
