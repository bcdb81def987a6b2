"""The parse floor: read a workload file and decode every line, doing nothing else.

    python -m bench.floor FILE

It reads the file exactly as ``liqmon replay`` does (the same chunked reader and gzip decoder,
:func:`feeds.files.read_lines`) and decodes each line with the same JSON library (orjson). No
Python replay of the file can be faster than this, so ``time(liqmon replay) / time(floor)`` says
how much the engine, validation and event output cost on top of merely reading the input.
"""

from __future__ import annotations

import sys

import orjson

from feeds.files import read_lines


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.floor FILE", file=sys.stderr)
        return 2
    loads = orjson.loads
    count = 0
    for _, line in read_lines(args[0]):
        loads(line)
        count += 1
    print(f"{count} lines decoded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
