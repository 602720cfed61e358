"""Turns checkpoints into deployable models (ONNX, DALI, TensorRT) with their facts beside them."""
