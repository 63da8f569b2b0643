"""Peak resident memory of processes (Linux), for the stage manifests and the rehearsal's report.

`ru_maxrss` is the high-water mark of a process's RSS; for RUSAGE_CHILDREN it is that of the
largest descendant already waited for (not a sum). VmHWM in /proc/<pid>/status is the same figure
for a process still running, readable from outside it (the Solver servers, before they stop).
"""

from __future__ import annotations

import resource
from pathlib import Path

_KIB_PER_MIB = 1024.0


def peak_rss_mib() -> dict[str, float]:
    """{"self": this process's peak RSS, "children": the largest waited-for descendant's} in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _KIB_PER_MIB  # Linux: KiB
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / _KIB_PER_MIB
    return {"self": round(own, 1), "children": round(children, 1)}


def vm_hwm_mib(pid: int) -> float | None:
    """Peak RSS (VmHWM) of a running process in MiB; None when it is gone or not readable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / _KIB_PER_MIB, 1)  # "VmHWM:   123456 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None
