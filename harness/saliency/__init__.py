"""Saliency: every method that maps where a classifier looks (Grad-CAM, occlusion, RISE), the localization metrics,
the scoring they share and the steps that run them on a model (the method table is ``registry``)."""
