"""The data audit: can the test sets be trusted? Near copies of training images (exact, perceptual hash, frozen
ImageNet features beside the training set's own leave-one-out spread), label suspects (K-fold probe ranked by
cleanlab) and dataset health, computed once per dataset fingerprint (`step`), judged from per-image evidence
(`readers`, `verdicts`) and stated per test set (`statements`). Nothing is imported here: `harness.verdicts.judge`
imports `harness.audit.verdicts`, which imports `harness.verdicts`."""
