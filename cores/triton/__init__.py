"""The triton_grpc core: Triton Inference Server over gRPC, the TensorRT-LLM backend's
tensor interface (``core``), one stream per client (``stream``)."""
