"""A local HTTP server for the download tests (127.0.0.1 only; nothing leaves the machine)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
  def log_message(self, format, *args):  # noqa: A002 - signature of the base class
    pass


@contextlib.contextmanager
def serve(directory):
  """Serves ``directory`` on 127.0.0.1; yields the base URL (ending in '/')."""
  handler = functools.partial(_QuietHandler, directory=str(directory))
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}/"
  finally:
    server.shutdown()
    server.server_close()
    thread.join()


def closed_port_url():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return f"http://127.0.0.1:{port}/"
