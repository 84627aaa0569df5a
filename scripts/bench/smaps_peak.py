#!/usr/bin/env python3
"""Where a process's peak resident memory is: its resident pages by mapping at the sample with
the largest total.

    smaps_peak.py PID [--every 0.02] [--top 15]
    smaps_peak.py --match 'sluice serve' ...     (waits for the first process whose command line
                                                  holds the text)

Reads /proc/PID/smaps every `--every` seconds until the process exits (or Ctrl-C), keeps the
sample whose `Rss:` lines sum highest, and prints that total and its largest parts grouped by
file name and permissions (`sluice r-xp` is the binary's code, `[heap] rw-p` glibc's main
arena, `*.cwasm r-xp` a plugin's compiled code). VmHWM is a peak too, but of one number; this
says what it was made of. Sampling misses peaks shorter than the interval.
Session 15 used it on `sluice serve` under scripts/bench-hubspot.sh: code 17 MiB + read-only
data 5 MiB of the binary, heap 7-12 MiB, the plugin's artifact 1.2 MiB.
"""

import argparse
import collections
import os
import re
import sys
import time

MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$")


def find(text):
    """The pid of the first process (not this one) whose command line contains `text`."""
    while True:
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid():
                continue
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and "smaps_peak" not in cmd:
                return int(p)
        time.sleep(0.05)


def sample(pid):
    """KiB resident by (file, permissions), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    parts = collections.Counter()
    name = "?"
    for line in lines:
        m = MAPPING.match(line)
        if m:
            name = f"{os.path.basename(m.group(2)) or '[anon]'} {m.group(1)}"
        elif line.startswith("Rss:"):
            parts[name] += int(line.split()[1])
    return parts


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pid", nargs="?", type=int)
    ap.add_argument("--match", help="wait for a process whose command line holds this text")
    ap.add_argument("--every", type=float, default=0.02, help="seconds between samples")
    ap.add_argument("--top", type=int, default=15, help="parts to print")
    args = ap.parse_args()
    if args.pid is None and args.match is None:
        ap.error("give a PID or --match TEXT")
    pid = args.pid if args.pid is not None else find(args.match)
    best = collections.Counter()
    try:
        while (parts := sample(pid)) is not None:
            if sum(parts.values()) > sum(best.values()):
                best = parts
            time.sleep(args.every)
    except KeyboardInterrupt:
        pass
    print(f"pid {pid}: peak sampled RSS {sum(best.values())} KiB")
    for name, kib in best.most_common(args.top):
        print(f"{kib:9d} KiB  {name}")


if __name__ == "__main__":
    sys.exit(main())
