"""Analyses of finished runs: they read a run's files (run.json, manifests, outputs) and write beside
them under `<run>/analysis/`, never changing the run. `python -m analysis RUN_DIR` (analysis.analyze)."""
