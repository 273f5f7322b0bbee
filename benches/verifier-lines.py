#!/usr/bin/env python3
"""Where the BPF verifier spends its instruction budget, from a level-2 log of one program.

Usage: benches/verifier-lines.py LOG [TOP]   (LOG from benches/verifier-log.c)

The verifier follows every path through a program until it can prune it against a state it
has seen, and refuses a program once it has processed 1M instructions. Each instruction line
of the log ("N: (op) ...") is one instruction processed; the global functions are verified
one after the other ("Validating NAME() func#K..."), and the line records ("; source @
file.rs:LINE") say which source line the instructions after them come from. Prints the
instructions processed per function and the TOP (default 30) source lines by function.
"""
import collections
import re
import sys

INSN = re.compile(rb"^\d+: \(")


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    func, loc = "main", "?"
    per_func = collections.Counter()
    per_line = collections.Counter()
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b"Validating "):
                func = line.split()[1].decode()
            elif line.startswith(b"; "):
                at = line.rfind(b" @ ")
                if at > 0:
                    loc = line[at + 3:].strip().decode(errors="replace")
            elif INSN.match(line):
                per_func[func] += 1
                per_line[(func, loc)] += 1
    print(f"{sum(per_func.values())} instructions processed")
    for name, n in per_func.most_common():
        print(f"{n:9d}  {name}")
    print()
    for (name, where), n in per_line.most_common(top):
        print(f"{n:9d}  {name}  {where}")


if __name__ == "__main__":
    main()
