"""The fine-tuning app: labelled task files -> a task head on a pretrained encoder -> scores, predictions, model."""
