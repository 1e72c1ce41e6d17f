"""Deployment: verified exports (safetensors or ONNX, optional int8), and the HTTP inference server.

    tuneforge export RUN --format onnx --quantize int8     # -> RUN/export/onnx-int8/ with report.json
    tuneforge serve RUN_OR_EXPORT --port 8000

Modules: artifacts (what loads, safetensors only), quantize (int8), onnx (export and ONNX Runtime models),
verify (agreement, metrics, latency), export (the command), batcher (micro-batching), serve (FastAPI app).
Nothing here is imported by `import tuneforge`; torch, onnxruntime and FastAPI load on use.
"""
