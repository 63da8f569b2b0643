"""The frozen Solver as a service: vLLM OpenAI-compatible servers (`server`) and their client (`client`).

Used by the Challenger stage and its reward: the reward asks the Solver m answers per question.
"""
