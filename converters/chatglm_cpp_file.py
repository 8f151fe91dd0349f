"""How chatglm.cpp's model files (ChatGLM-6B v1) are named and marked: the one place that says it.

Dependency-free, so tui's library finds these files without loading the converter (numpy, gguf).
"""

CHATGLM_CPP_SUFFIX = ".ggml"
"""What zootui names chatglm.cpp's model files (the converter's command line and the library alike)."""
CHATGLM_CPP_MAGIC = b"ggml"
"""The first bytes of the file, as chatglm.cpp's own convert.py (0.4.2) writes them."""
