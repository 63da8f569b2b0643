"""The two GRPO training stages of an R-Zero iteration (Challenger, Solver), each a resumable,
skippable unit that ends with its manifest. Launched as `python -m training --config FILE`."""
