"""The stdlib HTTP client against aiohttp's server: lengths, chunking, closes, stale keep-alive."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from pi_agent.httpd import HttpClient


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, int(port)


def test_client_reads_every_framing_and_survives_a_closed_keep_alive() -> None:
    payload = {"a_voltage": 121.5, "text": "x" * 5000}
    connections: list[int] = []

    async def plain(request: web.Request) -> web.Response:
        connections.append(id(request.transport))
        return web.json_response(payload)

    async def chunked(request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse(headers={"Content-Type": "application/json"})
        r.enable_chunked_encoding()
        await r.prepare(request)
        body = json.dumps(payload).encode()
        for i in range(0, len(body), 700):
            await r.write(body[i : i + 700])
        await r.write_eof()
        return r

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="no such method")

    async def closing(request: web.Request) -> web.Response:
        return web.json_response(payload, headers={"Connection": "close"})

    async def go() -> None:
        app = web.Application()
        app.router.add_get("/plain", plain)
        app.router.add_get("/chunked", chunked)
        app.router.add_get("/close", closing)
        app.router.add_get("/missing", missing)
        runner, port = await _serve(app)
        client = HttpClient("127.0.0.1", port)
        try:
            for path in ("/plain", "/plain", "/chunked", "/close", "/plain", "/chunked"):
                status, body = await client.get(path + "?id=0")
                assert status == 200 and json.loads(body) == payload
            assert len(set(connections[:2])) == 1  # kept alive
            assert (await client.get("/missing"))[0] == 404
            # The server goes away and comes back (the Shelly rebooted): the stale
            # kept-alive connection is retried once on a new one.
            await runner.cleanup()
            runner, _ = await _serve_on(app, port)
            status, body = await client.get("/plain")
            assert status == 200 and json.loads(body) == payload
        finally:
            await client.close()
            await runner.cleanup()

    async def _serve_on(app: web.Application, port: int) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
        return runner, port

    asyncio.run(go())
