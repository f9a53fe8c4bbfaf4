"""Shared test fixtures: one local HTTP server on 127.0.0.1 for every download test (datasets, pretrained models,
Inception weights, Hub files). Nothing in the test suite reaches the internet."""
import http.server
import threading
from pathlib import Path

import pytest


class LocalServer:
    """A threaded HTTP server on 127.0.0.1.

    Serves `files['/path'] = bytes` and, for other paths, files under `root`. `hits` lists the requested paths;
    `truncate` holds paths whose body is cut in half behind a full Content-Length (a dropped connection);
    `lengths['/path'] = n` announces another Content-Length; `status['/path'] = code` answers with that error;
    `content_type['/path']` overrides the Content-Type."""
    def __init__(self, root: Path):
        self.root, self.files, self.hits = Path(root), {}, []
        self.truncate, self.lengths, self.status, self.content_type = set(), {}, {}, {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split('?')[0]
                outer.hits.append(path)
                if path in outer.status: self.send_error(outer.status[path]); return
                body = outer.files.get(path)
                if body is None:
                    f = (outer.root / path.lstrip('/')).resolve()
                    if not (f.is_file() and f.is_relative_to(outer.root.resolve())): self.send_error(404); return
                    body = f.read_bytes()
                self.send_response(200)
                self.send_header('Content-Type', outer.content_type.get(path, 'application/octet-stream'))
                self.send_header('Content-Length', str(outer.lengths.get(path, len(body))))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if path in outer.truncate else body)
                self.wfile.flush()
                self.close_connection = True
            def log_message(self, *args): pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self.thread.start()
        self.base = f'http://127.0.0.1:{self.httpd.server_address[1]}'

    def url(self, path: str = '') -> str:
        "The full URL of `path` ('/x.zip' or 'x.zip'); a '{name}' in it stays for the code under test to fill in."
        return f"{self.base}/{path.lstrip('/')}"

    def close(self):
        self.httpd.shutdown(); self.httpd.server_close()


@pytest.fixture
def local_server(tmp_path_factory):
    "A `LocalServer` serving an empty folder of its own (`.root`) and whatever the test puts in `.files`."
    s = LocalServer(tmp_path_factory.mktemp('served'))
    yield s
    s.close()
