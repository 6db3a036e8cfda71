"""The trainer service: model specs, prepared data as tensors, the training loop,
and the portable artifacts and model card of each trained model."""
