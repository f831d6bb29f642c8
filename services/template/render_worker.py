"""A render worker process: `python -m services.template.render_worker MEMORY_MB TIME_LIMIT`.

It caps its own address space, then renders the requests it reads from stdin and writes each
answer to stdout, one at a time, as frames of a 4-byte big-endian length and a JSON object.
JSON, not pickle: the parent never unpickles bytes a process running tenants' templates wrote.

Request: {"key", "name", "parts": [subject, html, text], "deps": {name: [...]}, "variables",
"mjml"}. Answer: {"parts": [...]} | {"invalid": [[field, description], ...]} | {"internal": class
name}, and "recycle": true when the worker exits after it (it ran out of memory, and a fresh
process is cheaper to trust than a fragmented heap). EOF on stdin means stop.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import sys
from typing import Any, BinaryIO

__all__ = ["read_frame", "write_frame"]

_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> Any | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        return None
    return json.loads(body)


def write_frame(stream: BinaryIO, value: Any) -> None:
    body = json.dumps(value).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _serve(memory_mb: int, time_limit_seconds: float) -> None:
    # A terminal's Ctrl-C reaches the whole process group; the service decides when workers stop
    # (it closes their stdin), so they ignore it rather than die mid-render with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the real stdout; anything a library prints goes to stderr instead.
    requests = sys.stdin.buffer
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    # Imported under the cap, so the limit counts everything the renderer loads.
    from libs.errors import InvalidArgument
    from libs.mail.parts import Parts
    from services.template.render import Renderer, TemplateOutOfMemory

    renderer = Renderer(time_limit_seconds=time_limit_seconds)
    write_frame(answers, {"ready": True})
    while True:
        request = read_frame(requests)
        if request is None:
            return
        recycle = False
        name = request["name"]
        try:
            parts = renderer.render(
                json.dumps(request["key"]),
                Parts(*request["parts"]),
                request["variables"],
                mjml=request["mjml"],
                deps={n: Parts(*p) for n, p in request["deps"].items()},
                name=name,
            )
            answer: dict[str, Any] = {"parts": [parts.subject, parts.html_body, parts.text_body]}
        except TemplateOutOfMemory as exc:
            answer, recycle = {"invalid": exc.violations}, True
        except InvalidArgument as exc:
            answer = {"invalid": exc.violations}
        except MemoryError:
            # Outside the template's code (compiling, MJML, inlining a huge output): still the
            # template's size, not a fault of ours.
            answer = {"invalid": [["template", f"'{name}': rendering needed more memory than allowed"]]}
            recycle = True
        except Exception as exc:
            # Our own post-processing failed: the parent turns this into INTERNAL.
            print(f"render worker: {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            answer = {"internal": type(exc).__name__}
        if recycle:
            answer["recycle"] = True
        write_frame(answers, answer)
        if recycle:
            return


def main() -> None:
    _serve(int(sys.argv[1]), float(sys.argv[2]))


if __name__ == "__main__":
    main()
