"""The FastAPI application: the review page, the JSON API and its limits.

The model is loaded once when the app is made and shared by every request. Uploads are written
to a private temporary folder and classified by :func:`hemacnn.predict.predict_files`, so the page,
the API and ``hemacnn predict`` give the same rows (class, probabilities, review, status).
Every input error is a 4xx JSON answer naming the file; a mixed batch classifies the good files
and returns each bad one with its error.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from hemacnn import __version__
from hemacnn.data.images import FORMATS_BY_EXTENSION
from hemacnn.errors import HemacnnError

STATIC = Path(__file__).with_name("static")
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 200


class UploadError(Exception):
    """A request the server refuses: HTTP status and a message naming the file."""

    def __init__(self, status: int, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or []


def _safe_name(i: int, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "upload").name)[:100] or "upload"
    return f"{i:04d}_{stem}"


class Models:
    """The classifier loaded once, and (lazily) the plain PyTorch model for heat maps."""

    def __init__(self, model_path: str | os.PathLike, precision: str = "auto"):
        from hemacnn.loading import load_classifier

        self.path = str(model_path)
        self.classifier = load_classifier(model_path, precision=precision)
        self.card = self.classifier.card
        self._plain = None
        self.lock = threading.Lock()  # CPU inference is already parallel inside a batch

    def plain(self):
        """The unfolded fp32 model Grad-CAM hooks into (checkpoints only, not ONNX)."""
        if Path(self.path).suffix.lower() == ".onnx":
            raise UploadError(409, "heat maps need the PyTorch model; this server runs an "
                              "ONNX export (start it with the run folder or .ckpt)")
        if self._plain is None:
            from hemacnn.loading import load_checkpoint

            self._plain, _ = load_checkpoint(self.path, device="cpu", prepare=False)
        return self._plain


async def _save_uploads(files: list[UploadFile], folder: Path, max_bytes: int
                        ) -> tuple[list[tuple[str, Path]], list[dict]]:
    """Write acceptable uploads into ``folder``; (name, path) pairs and per-file errors."""
    saved, errors = [], []
    for i, f in enumerate(files):
        name = f.filename or f"file {i + 1}"
        ext = Path(name).suffix.lower()
        if ext not in FORMATS_BY_EXTENSION:
            errors.append({"file": name, "status": 415, "error": f"{name}: unsupported file "
                           f"type {ext or '(none)'}; send {', '.join(FORMATS_BY_EXTENSION)}"})
            continue
        data = await f.read(max_bytes + 1)
        if len(data) > max_bytes:
            errors.append({"file": name, "status": 413, "error": f"{name} is larger than the "
                           f"{max_bytes // (1024 * 1024)} MB limit per file"})
        elif not data:
            errors.append({"file": name, "status": 400, "error": f"{name} is empty"})
        else:
            path = folder / _safe_name(i, name)
            path.write_bytes(data)
            saved.append((name, path))
    return saved, errors


def _result(name: str, row: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    if row["status"].startswith("error"):
        message = row["status"][len("error: "):].split("; check the file")[0]
        message = message.replace(str(row["path"]), name).replace(Path(row["path"]).name, name)
        return {"file": name, "error": message, "status": 422}
    return {"file": name, "class": row["class"], "name": row["name"],
            "probability": row["probability"],
            "probabilities": {c: row[f"p_{c}"] for c in classes}, "review": row["review"],
            "warning": None if row["status"] == "ok" else row["status"]}


def create_app(model_path: str | os.PathLike, max_file_bytes: int = MAX_FILE_BYTES,
               max_files: int = MAX_FILES, review_below: float = 0.7,
               precision: str = "auto") -> FastAPI:
    """The app serving one model (loaded now, once) with the given upload limits."""
    from hemacnn.differential import from_predictions
    from hemacnn.predict import predict_files

    models = Models(model_path, precision=precision)
    classes = list(models.card["classes"])
    app = FastAPI(title="hemacnn", version=__version__,
                  description="Classify bone-marrow cell images, review them and count the "
                  "differential. Research use only: not a diagnosis.")
    app.state.models = models

    @app.exception_handler(UploadError)
    async def _upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": exc.message, "errors": exc.errors},
                            status_code=exc.status)

    @app.middleware("http")
    async def _body_limit(request: Request, call_next):
        # Refuse an over-size body before reading it (10 MB per file, max_files files).
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_file_bytes * max_files + 65536:
            return JSONResponse({"detail": "request body too large", "errors": []},
                                status_code=413)
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        """Liveness: 200 with the model's source once it is loaded."""
        return {"status": "ok", "model": models.classifier.source}

    @app.get("/api/model")
    def model_card() -> dict[str, Any]:
        """The model card: classes, names, input size, preprocessing, architecture."""
        return {**models.card, "review_below": review_below,
                "limits": {"max_file_bytes": max_file_bytes, "max_files": max_files}}

    @app.post("/api/predict")
    async def predict(files: Annotated[list[UploadFile], File(description="one or many images")]
                      ) -> dict[str, Any]:
        """Classify uploaded images: one result per file and the batch's differential."""
        if len(files) > max_files:
            raise UploadError(413, f"{len(files)} files in one request; the limit is "
                              f"{max_files}")
        with tempfile.TemporaryDirectory(prefix="hemacnn-serve-") as tmp:
            saved, errors = await _save_uploads(files, Path(tmp), max_file_bytes)
            rows = []
            if saved:
                with models.lock:
                    rows = predict_files(models.path, [p for _, p in saved],
                                         review_below=review_below,
                                         classifier=models.classifier)
        by_name = {p: n for n, p in saved}
        results = [_result(by_name[Path(r["path"])], r, classes) for r in rows]
        results += errors
        order = {f.filename or f"file {i + 1}": i for i, f in enumerate(files)}
        results.sort(key=lambda r: order.get(r["file"], 0))
        bad = [r for r in results if "error" in r]
        if len(bad) == len(results):
            status = max(set(r["status"] for r in bad), key=[r["status"] for r in bad].count)
            names = ", ".join(r["file"] for r in bad)
            raise UploadError(status, f"no usable image in the request ({names})", bad)
        return {"results": results, "differential": from_predictions(rows, classes)}

    @app.post("/api/explain", response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    async def explain(file: Annotated[UploadFile, File()],
                      target: Annotated[str | None, Form()] = None) -> Response:
        """A Grad-CAM heat map of one image (PNG overlay), for its predicted class or target."""
        from hemacnn.explain import explain_image, png_bytes

        with tempfile.TemporaryDirectory(prefix="hemacnn-serve-") as tmp:
            saved, errors = await _save_uploads([file], Path(tmp), max_file_bytes)
            if errors:
                raise UploadError(errors[0]["status"], errors[0]["error"], errors)
            try:
                with models.lock:
                    pair, code, prob = explain_image(models.plain(), models.card, saved[0][1],
                                                     target=target or None)
            except HemacnnError as exc:
                msg = str(exc).replace(str(saved[0][1]), saved[0][0])
                raise UploadError(422, msg, [{"file": saved[0][0], "error": msg}]) from None
        half = pair.crop((pair.width // 2, 0, pair.width, pair.height))
        return Response(png_bytes(half), media_type="image/png",
                        headers={"X-Class": code, "X-Probability": f"{prob:.4f}"})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
