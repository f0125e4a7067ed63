#!/usr/bin/env python3
"""A TCP relay that delays traffic, for fault tests on hosts without netem.

  delay_relay.py LISTEN_HOST:PORT TARGET_HOST:PORT [--delay-ms 50]
                 [--stall-prob 0.01] [--stall-ms 200] [--seed 1]

Every chunk read from either side is forwarded after --delay-ms (one way),
in order. With --stall-prob, each chunk is held back a further --stall-ms
with that probability: the effect of a lost TCP segment on the stream (a
retransmission wait), since a relay cannot drop bytes of a TCP stream
without breaking it. Port 0 picks a free port. Prints "delay-relay
listening on HOST:PORT" when ready. Used by tests/fault/netns_federation.sh
and bench/load.py.
"""
import argparse
import asyncio
import random
import sys


async def pump(reader, writer, delay_s, stall_p, stall_s, rng):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.create_task(sender())
    last_due = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            due = loop.time() + delay_s
            if stall_p > 0 and rng.random() < stall_p:
                due += stall_s
            last_due = max(last_due, due)  # keep the stream in order
            await queue.put((last_due, data))
    except (ConnectionError, OSError):
        pass
    await queue.put((0.0, None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("listen")
    p.add_argument("target")
    p.add_argument("--delay-ms", type=float, default=50)
    p.add_argument("--stall-prob", type=float, default=0.0)
    p.add_argument("--stall-ms", type=float, default=200)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    lhost, lport = a.listen.rsplit(":", 1)
    thost, tport = a.target.rsplit(":", 1)
    rng = random.Random(a.seed)

    async def handle(creader, cwriter):
        try:
            sreader, swriter = await asyncio.open_connection(thost, int(tport))
        except OSError:
            cwriter.close()
            return
        args = (a.delay_ms / 1000, a.stall_prob, a.stall_ms / 1000, rng)
        await asyncio.gather(pump(creader, swriter, *args),
                             pump(sreader, cwriter, *args))

    server = await asyncio.start_server(handle, lhost, int(lport))
    port = server.sockets[0].getsockname()[1]
    print(f"delay-relay listening on {lhost}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
