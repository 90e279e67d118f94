"""The embedding service: FastAPI app, dynamic batcher, torch / ONNX Runtime backends, client.

Nothing is imported here, so ``service.client`` works with only httpx and numpy installed.
"""
