"""``hemacnn serve``: a review page and a JSON API for one trained model.

FastAPI because it gives typed endpoints, multipart uploads and an OpenAPI page (/docs) with
no code of ours; a plain HTML/JS page because the page is one screen of review work and needs
no build step or framework.
"""

from __future__ import annotations

import os
import socket
import sys

import uvicorn

from hemacnn.errors import HemacnnError
from hemacnn.inference.predict import DEFAULT_REVIEW_BELOW
from hemacnn.serve.app import create_app

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
          review_below: float | None = None, precision: str = "fp32") -> None:
    """Load the model once and serve the page and API until Ctrl-C.

    ``review_below``: flag cells whose top probability is below it (default: predict's);
    ``precision``: as predict's (fp32, bf16 or auto).
    """
    if not 0 < port < 65536:
        raise HemacnnError(f"--port must lie in 1..65535 (got {port})")
    if review_below is not None and not 0.0 <= review_below <= 1.0:
        raise HemacnnError(f"--review-below must lie in [0, 1] (got {review_below})")
    try:  # a taken port is a one-line error, not uvicorn's log and exit
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise HemacnnError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                           "another --port") from None
    app = create_app(model_path, review_below=DEFAULT_REVIEW_BELOW if review_below is None
                     else review_below, precision=precision)
    if host not in LOCAL_HOSTS:
        print(f"warning: serving on {host}: the page and API are reachable from other "
              "machines and have no login; bind to 127.0.0.1 unless that is intended",
              file=sys.stderr)
    print(f"hemacnn serving {model_path} ({app.state.models.numerics}) at "
          f"http://{host}:{port}/ (API docs at /docs); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
