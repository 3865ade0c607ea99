"""Will it work on the photos of the field: common corruptions (`corruptions`), object masking (`masking`) and the
faithfulness of the saliency maps (`faithfulness`), all measured through onnxruntime on the exported model (`step`),
judged from the per-image evidence (`readers`, `judging`), reported (`report`) and compared (`compare`)."""
