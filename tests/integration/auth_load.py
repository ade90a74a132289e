# Load generator for test_remote_submission.py: N sessions to a submission
# port (STARTTLS, EHLO), then AUTH PLAIN on all of them at once; prints
# "ready", "sent T" and a JSON line of the 235 arrival times (CLOCK_MONOTONIC
# seconds, comparable with the test's time.monotonic()). Its own process, so
# the test's latency measurement does not share a GIL with 200 sessions.
import argparse
import asyncio
import base64
import json
import ssl
import sys
import time


async def reply(reader):
    """One (possibly multi-line) SMTP reply: (code, last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise EOFError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3]), line.decode(errors="replace").strip()


async def prepare(host, port, src, ctx, name):
    reader, writer = await asyncio.open_connection(host, port, local_addr=(src, 0))
    assert (await reply(reader))[0] == 220
    writer.write(b"EHLO load.test\r\n")
    assert (await reply(reader))[0] == 250
    writer.write(b"STARTTLS\r\n")
    assert (await reply(reader))[0] == 220
    await writer.start_tls(ctx, server_hostname=name)
    writer.write(b"EHLO load.test\r\n")
    code, last = await reply(reader)
    assert code == 250, last
    return reader, writer


async def authenticate(reader, writer, token):
    writer.write(b"AUTH PLAIN " + token + b"\r\n")
    await writer.drain()
    code, line = await reply(reader)
    done = time.monotonic()
    writer.write(b"QUIT\r\n")
    await writer.drain()
    writer.close()
    return code, line, done


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--sources", required=True, help="comma-separated source addresses")
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.ca)
    sources = a.sources.split(",")
    conns = await asyncio.wait_for(asyncio.gather(*[
        prepare(a.host, a.port, sources[i % len(sources)], ctx, a.name)
        for i in range(a.sessions)]), 120)
    print("ready", flush=True)
    token = base64.b64encode(b"\0" + a.user.encode() + b"\0" + a.password.encode())
    tasks = [asyncio.ensure_future(authenticate(r, w, token)) for r, w in conns]
    await asyncio.sleep(0)  # every AUTH line is written before the first reply
    print("sent %.6f" % time.monotonic(), flush=True)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 120)
    print(json.dumps({"codes": [r[0] for r in results], "lines": sorted({r[1] for r in results}),
                      "times": [r[2] for r in results]}), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # the test reads stdout: say what went wrong there
        print("error %r" % (e,), flush=True)
        sys.exit(1)
