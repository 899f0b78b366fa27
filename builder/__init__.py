"""builder: compile CUDA extensions of the LLM stack against a pinned torch, CUDA and GPU arch."""

__version__ = "0.1.0"
