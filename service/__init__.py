"""The embedding service: FastAPI app, dynamic batcher, torch / ONNX Runtime backends, client.

Nothing is imported here, so ``service.client`` needs only httpx, numpy, safetensors and the
torch-free ``jepa.contract`` (pydantic), and Pillow to send PIL images or arrays.
"""
