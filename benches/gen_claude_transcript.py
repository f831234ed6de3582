#!/usr/bin/env python3
"""Writes a generated Claude Code transcript of about SIZE MiB (default 100) to stdout,
in the shapes Claude Code writes (user tool results, assistant messages with usage,
progress records), seeded so that every run writes the same bytes. Used for the
`claude import` figures in docs/benchmarks.md."""
import json, random, sys, uuid

random.seed(1)
target = int(sys.argv[1] if len(sys.argv) > 1 else 100) * 1024 * 1024
out = sys.stdout
sid = str(uuid.UUID(int=random.getrandbits(128)))
parent, n, size = None, 0, 0
while size < target:
    u = str(uuid.UUID(int=random.getrandbits(128)))
    t = random.choice(["user", "assistant", "assistant", "progress"])
    rec = {"parentUuid": parent, "isSidechain": False, "userType": "external",
           "cwd": "/home/dev/proj", "sessionId": sid, "version": "2.0.74",
           "gitBranch": "main", "type": t, "uuid": u,
           "timestamp": "2025-12-20T13:%02d:%02d.000Z" % (n // 60 % 60, n % 60)}
    if t == "assistant":
        rec["message"] = {"id": "msg_%d" % (n // 2), "type": "message", "role": "assistant",
                          "model": "claude-opus-4-5",
                          "content": [{"type": "text", "text": "word " * random.randint(20, 600)}],
                          "usage": {"input_tokens": 10, "output_tokens": 200,
                                    "cache_creation_input_tokens": 0,
                                    "cache_read_input_tokens": 5000}}
    elif t == "user":
        rec["message"] = {"role": "user", "content": [{"type": "tool_result",
                          "tool_use_id": "toolu_%d" % n,
                          "content": "line\n" * random.randint(10, 300)}]}
    else:
        rec["data"] = {"type": "bash_progress", "output": "x" * random.randint(10, 200)}
    s = json.dumps(rec, separators=(",", ":")) + "\n"
    out.write(s)
    size += len(s)
    n += 1
    parent = u
