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


def run_main(main, *args, env: dict | None = None) -> 'subprocess.CompletedProcess':
    """Call a console script's `main(argv)` in this process (no interpreter start-up: much faster than a subprocess),
    capturing stdout and stderr; returns a CompletedProcess like `subprocess.run`. For what a user sees on the command
    line — messages and exit status — it is the same code path as the console script."""
    import contextlib, io, os, subprocess
    out, err, old = io.StringIO(), io.StringIO(), {k: os.environ.get(k) for k in (env or {})}
    os.environ.update({k: str(v) for k, v in (env or {}).items()})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return subprocess.CompletedProcess([getattr(main, '__name__', 'main'), *map(str, args)], rc, out.getvalue(), err.getvalue())


def pytest_configure(config):
    config.addinivalue_line('markers', "slow: a long integration test, run only with CYCLEGAN_EDU_SLOW_TESTS=1 "
                                       "(what it checks is also covered by faster tests)")
    config.addinivalue_line('markers', "cuda: needs an NVIDIA GPU; skipped without one (`make gpu-check` runs them: "
                                       "pytest -m cuda)")


# The longest tests (30-100 s each on 2 cores), started first: with `make test`'s two workers stealing work from each
# other (pytest -n 2 --dist worksteal), both then finish at about the same time instead of one waiting for the other.
LONGEST_FIRST = ('[14_whatif.ipynb]', 'test_preview.py::test_docs_processing', 'test_preview.py::test_pages_render_cleanly',
                 'test_two_processes_train_resume_and_load', '[13_train.ipynb]', '[30_horse2zebra.ipynb]',
                 '[17_distributed.ipynb]', 'test_dry_run_exercises_every_stage', '[32_fast_gpu.ipynb]',
                 '[40_performance.ipynb]')

def _rank(item) -> int:
    return next((i for i, key in enumerate(LONGEST_FIRST) if key in item.nodeid), len(LONGEST_FIRST))

def pytest_collection_modifyitems(config, items):
    import os
    import torch
    items.sort(key=_rank)  # stable: everything else keeps its order
    if not torch.cuda.is_available():
        no_gpu = pytest.mark.skip(reason='needs an NVIDIA GPU (CUDA)')
        for item in items:
            if item.get_closest_marker('cuda'): item.add_marker(no_gpu)
    if os.environ.get('CYCLEGAN_EDU_SLOW_TESTS', '') not in ('', '0'): return
    skip = pytest.mark.skip(reason="slow integration test: set CYCLEGAN_EDU_SLOW_TESTS=1 to run it")
    for item in items:
        if 'slow' in item.keywords: item.add_marker(skip)
