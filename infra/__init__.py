"""The shared layer under the R-Zero stages, each concept written once.

devices        visible GPUs and tensor-parallel device groups
processes      child processes that die with their parent; stop by recorded PID; ports; log tails
vllm_engines   offline vLLM engines: settings, stop ids, seeds, sampling
cpu_kvcache    the CPU KV cache size of an engine (VLLM_CPU_KVCACHE_SPACE), fitted to the machine
supervise      runs a server as its process group leader; nothing of it outlives its owner
shards         the data-parallel shard runner (generation, labelling, evaluation)
stage_kit      stage manifests, the skip check, settings fingerprints
logs           one logging format for every stage
"""
