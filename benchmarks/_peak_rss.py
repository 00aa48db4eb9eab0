"""Run a command and report its peak RSS: `python benchmarks/_peak_rss.py RESULT.json -- CMD...`.

Why a wrapper: a child's ru_maxrss (wait4 / RUSAGE_CHILDREN) starts from the resident size of
the process it was forked from (Linux carries the pre-exec high-water mark over), so a stage
started directly from the benchmark process -- hundreds of MiB of torch -- would report at
least that. Started from this small interpreter (stdlib only), the floor is a few MiB.
The command inherits stdin/stdout/stderr; RESULT.json gets {"returncode", "peak_rss_kib"}.
"""

import json
import resource
import subprocess
import sys

if __name__ == "__main__":
    out, sep, *cmd = sys.argv[1:]
    if sep != "--" or not cmd:
        sys.exit(__doc__)
    rc = subprocess.call(cmd)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB; this wrapper has one child
    with open(out, "w") as f:
        json.dump({"returncode": rc, "peak_rss_kib": peak}, f)
    sys.exit(rc)
