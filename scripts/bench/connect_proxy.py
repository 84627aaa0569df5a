#!/usr/bin/env python3
"""Loopback HTTPS proxy for the bench scripts: nothing leaves this machine.

    connect_proxy.py CERT KEY UPSTREAM PORTFILE [HOST]

Listens on 127.0.0.1 (a free port, written to PORTFILE once listening). Accepts only
`CONNECT HOST:443` (HOST defaults to api.github.com; bench-hubspot.sh passes api.hubapi.com),
answers it 200, terminates TLS with CERT/KEY (a certificate for HOST signed by the bench's
throwaway CA) and relays the decrypted bytes to UPSTREAM (`host:port` of the fake's plain-HTTP
listener, on loopback). Any other CONNECT target, and any plain (non-CONNECT) proxy request, is
answered 403 and closed without a connection out.
"""

import asyncio
import ssl
import sys

ALLOWED = (sys.argv[5] if len(sys.argv) > 5 else "api.github.com") + ":443"


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


async def handle(reader, writer, tls, upstream):
    head = await reader.readuntil(b"\r\n\r\n")
    method, target = head.split(b" ", 2)[:2]
    if method != b"CONNECT" or target.decode(errors="replace").lower() != ALLOWED:
        print(f"connect_proxy: refused {method.decode(errors='replace')} {target.decode(errors='replace')}",
              file=sys.stderr, flush=True)
        writer.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        await writer.drain()
        writer.close()
        return
    print(f"connect_proxy: tunnelled CONNECT {ALLOWED} to the fake", file=sys.stderr, flush=True)
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await writer.drain()
    await writer.start_tls(tls)  # from here on `reader`/`writer` carry the decrypted stream
    host, port = upstream.rsplit(":", 1)
    up_reader, up_writer = await asyncio.open_connection(host, int(port))
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def main(cert, key, upstream, portfile):
    host = upstream.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        sys.exit(f"connect_proxy: upstream {upstream} is not on loopback")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    async def on_client(r, w):
        try:
            await handle(r, w, tls, upstream)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, ValueError):
            w.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    with open(portfile, "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
