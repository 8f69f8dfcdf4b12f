"""One module per library: langchain, llama_index, chroma, sentence_transformers, transformers, vllm, openai.

Each is importable without the others' dependencies and imports its library only in ``instrument()``.
"""
