"""The embedding service: FastAPI app, dynamic batcher, torch / ONNX Runtime backends, client.

Nothing is imported here, so ``service.client`` needs only httpx, numpy and safetensors (and
Pillow to send PIL images or arrays).
"""
