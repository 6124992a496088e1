"""Text-embedding engines: encoder backends (torch, onnxruntime), pooling, and the cross-request batcher."""
