#!/usr/bin/env python
"""Write or produce a seeded mix of valid and malformed engagement messages.

Each line (or record) carries the reject reason it must get, so a test or an operator
can check that every bad message lands in the dead letters with that reason.

  python scripts/gen_bad_events.py -n 100 --seed 7 --originals 20 > bad.jsonl
  python scripts/gen_bad_events.py -n 100 --bootstrap 127.0.0.1:9092 --topic engagements

JSONL lines: {"kind", "expected_reason" (null for the valid originals), "key", "value"
(base64; value null = tombstone), "timestamp_ms"}. The originals come first, so the
`duplicate` messages repeat events the consumer has already seen.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from streamer.events.schema import to_wire
from streamer.testing.badevents import BAD_KINDS, BadMessage, bad_messages, synthetic_events


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=len(BAD_KINDS),
                   help="bad messages (default: one per kind)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--now", type=float, default=None,
                   help="decoder wall clock, seconds since epoch (default: now)")
    p.add_argument("--originals", type=int, default=16,
                   help="valid events sent first (duplicates copy them; 0 = no duplicate kind)")
    p.add_argument("--bootstrap", help="produce to Kafka instead of writing JSONL to stdout")
    p.add_argument("--topic", default="engagements")
    args = p.parse_args(argv)
    now = time.time() if args.now is None else args.now
    originals = (synthetic_events(args.originals, seed=args.seed, now_s=now)
                 if args.originals else [])
    bad = bad_messages(args.n, seed=args.seed, now_s=now, originals=originals)
    good = [BadMessage("valid", e.key, to_wire(e), int(e.ts * 1000), "") for e in originals]
    if args.bootstrap:
        from streamer.kafka_io import produce_events

        n = produce_events(args.bootstrap, args.topic,
                           ((m.key, m.value, m.timestamp_ms) for m in [*good, *bad]))
        print(f"produced {n} messages ({len(good)} valid, {len(bad)} bad) to {args.topic}",
              file=sys.stderr)
        return 0
    for m in good:
        print(json.dumps({**m.to_dict(), "expected_reason": None}))
    for m in bad:
        print(json.dumps(m.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
