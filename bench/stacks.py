"""Summarise a py-spy raw (collapsed) profile: share of samples per function, inclusive.

    python bench/stacks.py profile.txt [--thread NAME] [--top 40] [--match messaging]
"""

from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--thread", default="", help="only stacks whose thread frame contains this")
    parser.add_argument("--match", default="", help="only count frames whose text contains this")
    args = parser.parse_args()
    inclusive: Counter = Counter()
    leaf: Counter = Counter()
    total = 0
    for line in open(args.path):
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        if args.thread and args.thread not in stack.split(";", 1)[0]:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            if args.match in frame:
                inclusive[frame] += n
        leaf[frames[-1]] += n
    print(f"{total} samples")
    print("-- inclusive")
    for frame, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("-- self")
    for frame, n in leaf.most_common(args.top // 2):
        print(f"{100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
