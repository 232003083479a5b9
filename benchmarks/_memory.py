"""Memory readings shared by the benchmark scripts (Linux ``/proc`` and ``getrusage``)."""

from __future__ import annotations

import resource


def rss_mb() -> float:
    """Resident set size of this process now, in MiB (NaN where ``/proc`` has no VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
