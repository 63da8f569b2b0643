"""What defines the R-Zero method, written once: its prompts (`prompts`) and its two profiles
(`profiles`: the paper's numbers and the authors' code's)."""
