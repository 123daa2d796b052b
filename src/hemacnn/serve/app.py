"""The FastAPI application: the review page, the JSON API and its limits.

The model is loaded once when the app is made and shared by every request. Uploads are written
to a private temporary folder and classified by :func:`hemacnn.inference.predict.classify_files`,
so the page, the API and ``hemacnn predict`` give the same rows (class, probabilities, review,
status); a heat map's probability comes from the same classifier. The model answer and every
batch say how the probabilities were computed (``inference``: precision, backend, device).
Every input error is a 4xx JSON answer naming the file; a mixed batch classifies the good files
and returns each bad one with its error.

The endpoints that classify are plain ``def`` functions: FastAPI runs those in its thread pool,
so a long batch or heat map never blocks the event loop, and ``/healthz`` (and every other
client) is answered while the model works.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from hemacnn import __version__
from hemacnn.data.images import DECODE_ERRORS, EMPTY_FILE, FORMATS_BY_EXTENSION, ImageDecodeError
from hemacnn.errors import HemacnnError, UnreadableImage
from hemacnn.inference.classifier import load_classifier, numerics
from hemacnn.inference.differential import from_predictions, run_confusion
from hemacnn.inference.explain import heat_map, png_bytes
from hemacnn.inference.loading import load_checkpoint
from hemacnn.inference.predict import (
    DEFAULT_REVIEW_BELOW,
    Prediction,
    Status,
    classify_files,
    colour_check,
    with_colour_warning,
)

STATIC = Path(__file__).with_name("static")
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 200
MAX_PIXELS = 50_000_000
"""Largest picture decoded (width x height). A cell image is well under a megapixel; decoding
costs about 4 bytes per pixel, so this keeps one upload under ~200 MB however small its file."""
HEAT_MAP_METHOD = "gradcam"


class UploadError(Exception):
    """A request the server refuses: HTTP status and a message naming the file."""

    def __init__(self, status: int, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors or []


@dataclass
class Upload:
    """One file of a request: where it was saved, or the 4xx answer it gets instead."""

    name: str
    path: Path | None = None
    status: int = 200
    error: str = ""
    prediction: Prediction | None = None  # once it is classified

    def refuse(self, status: int, error: str) -> None:
        self.path, self.status, self.error = None, status, error

    def as_error(self) -> dict[str, Any]:
        return {"file": self.name, "error": self.error, "status": self.status}


def _safe_name(i: int, name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name or "upload").name)[:100] or "upload"
    return f"{i:04d}_{stem}"


def check_pixels(path: Path, name: str, max_pixels: int) -> None:
    """Raise :class:`UnreadableImage` for a picture too large to decode, from its header alone.

    Pillow reads only the header here, so a small file that declares a huge picture (a
    decompression bomb) is refused before any pixel is decoded.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError:
        raise UnreadableImage(name, "too large to decode safely") from None
    except DECODE_ERRORS:
        # Pillow's message names our temporary file, not the user's: say it in our words.
        raise UnreadableImage(name, "not a readable image (unknown format or damaged "
                              "header)") from None
    if width * height > max_pixels:
        raise UnreadableImage(name, f"{width} x {height} px is more than the "
                              f"{max_pixels / 1e6:g}-megapixel limit of this server; send "
                              "one cell per image")


def _save_uploads(files: list[UploadFile], folder: Path, max_bytes: int, max_pixels: int
                  ) -> list[Upload]:
    """Write each upload into ``folder`` (or refuse it): one :class:`Upload` per file, in order."""
    uploads = []
    for i, f in enumerate(files):
        up = Upload(f.filename or f"file {i + 1}")
        uploads.append(up)
        ext = Path(up.name).suffix.lower()
        if ext not in FORMATS_BY_EXTENSION:
            up.refuse(415, f"{up.name}: unsupported file type {ext or '(none)'}; send "
                      f"{', '.join(FORMATS_BY_EXTENSION)}")
            continue
        data = f.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            up.refuse(413, f"{up.name} is larger than the {max_bytes // (1024 * 1024)} MB "
                      "limit per file")
            continue
        if not data:
            up.refuse(400, f"{up.name}: {EMPTY_FILE}")
            continue
        up.path = folder / _safe_name(i, up.name)
        up.path.write_bytes(data)
        try:
            check_pixels(up.path, up.name, max_pixels)
        except UnreadableImage as exc:
            up.refuse(422, f"{up.name}: {exc.reason}")
    return uploads


def _refuse_all(uploads: list[Upload]) -> UploadError:
    """The answer to a request none of whose files could be used: the most common 4xx."""
    bad = [u.as_error() for u in uploads]
    status = Counter(u.status for u in uploads).most_common(1)[0][0]
    names = ", ".join(u.name for u in uploads)
    return UploadError(status, f"no usable image in the request ({names})", bad)


class Models:
    """The classifier loaded once, and (lazily) the plain PyTorch model for heat maps."""

    def __init__(self, model_path: str | os.PathLike, precision: str = "fp32"):
        self.path = str(model_path)
        self.classifier = load_classifier(model_path, precision=precision)
        self.card = self.classifier.card
        self.numerics = numerics(self.classifier)
        # The run's test confusion, read once: the page's differential is adjusted for the
        # model's errors as predict's is (None where the model has no test split beside it).
        self.confusion = run_confusion(model_path, self.card)
        self._plain = None
        self.lock = threading.Lock()  # CPU inference is already parallel inside a batch

    @property
    def heat_maps(self) -> bool:
        """Whether this server can draw heat maps (they need gradients: not from ONNX)."""
        return Path(self.path).suffix.lower() != ".onnx"

    def plain(self):
        """The unfolded fp32 model Grad-CAM hooks into (checkpoints only, not ONNX)."""
        if not self.heat_maps:
            raise UploadError(409, "heat maps need the PyTorch model; this server runs an "
                              "ONNX export (start it with the run folder or .ckpt)")
        if self._plain is None:
            self._plain, _ = load_checkpoint(self.path, device="cpu", prepare=False)
        return self._plain


def create_app(model_path: str | os.PathLike, max_file_bytes: int = MAX_FILE_BYTES,
               max_files: int = MAX_FILES, review_below: float = DEFAULT_REVIEW_BELOW,
               precision: str = "fp32", max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The app serving one model (loaded now, once) with the given upload limits."""
    if not 0.0 <= review_below <= 1.0:
        raise HemacnnError(f"--review-below must lie in [0, 1] (got {review_below})")
    if max_pixels <= Image.MAX_IMAGE_PIXELS:
        # Pillow warns on opening any picture above its own limit; this server refuses those
        # itself (check_pixels), so the warning would only be noise on the server's stderr.
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
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
    async def healthz() -> dict[str, Any]:
        """Liveness: 200 with the model's source once it is loaded."""
        # async on purpose: answered on the event loop, never queued behind busy workers
        return {"status": "ok", "model": models.classifier.source}

    @app.get("/api/model")
    def model_card() -> dict[str, Any]:
        """The model card, the review threshold, the limits, whether heat maps are on and how
        probabilities are computed."""
        return {**models.card, "source": models.classifier.source,
                "inference": models.numerics.as_dict(),
                "review_below": review_below, "heat_maps": models.heat_maps,
                "heat_map_method": HEAT_MAP_METHOD,
                "limits": {"max_file_bytes": max_file_bytes, "max_files": max_files,
                           "max_pixels": max_pixels}}

    def _result(name: str, pred: Prediction) -> dict[str, Any]:
        return {"file": name, "class": pred.code, "name": pred.name,
                "probability": pred.probability,
                "probabilities": {c: pred.probabilities[c] for c in classes},
                "review": pred.review,
                "warning": None if pred.status is Status.OK else pred.status_text}

    @app.post("/api/predict")
    def predict(files: Annotated[list[UploadFile] | None,
                                 File(description="one or many images")] = None
                ) -> dict[str, Any]:
        """Classify uploaded images: one result per file and the batch's differential."""
        if not files:
            raise UploadError(400, "no files in the request; send one or more images in the "
                              "multipart field 'files'")
        if len(files) > max_files:
            raise UploadError(413, f"{len(files)} files in one request; the limit is "
                              f"{max_files}")
        with tempfile.TemporaryDirectory(prefix="hemacnn-serve-") as tmp:
            uploads = _save_uploads(files, Path(tmp), max_file_bytes, max_pixels)
            good = [u for u in uploads if u.path is not None]
            preds = []
            if good:
                with models.lock:
                    preds = classify_files(models.path, [u.path for u in good],
                                           review_below=review_below,
                                           classifier=models.classifier)
            for up, pred in zip(good, preds, strict=True):
                if pred.status is Status.ERROR:
                    up.refuse(422, f"{up.name}: {pred.reason}")
                else:
                    up.prediction = pred
        if not any(u.prediction for u in uploads):
            raise _refuse_all(uploads)
        classified = [u for u in uploads if u.prediction]
        colour = colour_check([u.prediction for u in classified], models.card)
        # another stain or scanner: a colour warning on every row, as predict writes it
        used = with_colour_warning([u.prediction for u in classified], colour)
        for up, pred in zip(classified, used, strict=True):
            up.prediction = pred
        results = [_result(u.name, u.prediction) if u.prediction else u.as_error()
                   for u in uploads]
        return {"results": results,
                "differential": from_predictions(used, classes, models.confusion),
                "inference": models.numerics.as_dict(),
                "colour": {"far": colour.far, "distance": colour.distance,
                           "mean_rgb": colour.mean, "message": colour.summary()}}

    @app.post("/api/explain", response_class=Response,
              responses={200: {"content": {"image/png": {}}}})
    def explain(file: Annotated[UploadFile | None, File()] = None,
                target: Annotated[str | None, Form()] = None) -> Response:
        """A Grad-CAM heat map of one image (PNG overlay), for its predicted class or target.

        The class, its probability (from the classifier /api/predict uses) and the method
        come back in the X-Class, X-Probability and X-Method headers, how the probability was
        computed in X-Precision, X-Backend and X-Device; X-Map-Note says when the map is
        coarse (a target layer of at most 4x4 cells), else is empty.
        """
        if file is None:
            raise UploadError(400, "no file in the request; send one image in the multipart "
                              "field 'file'")
        if target and target not in classes:
            raise UploadError(422, f"target {target!r} is not a class of this model; use one "
                              f"of {', '.join(classes)} (or leave it out for the predicted "
                              "class)")
        plain = models.plain()
        with tempfile.TemporaryDirectory(prefix="hemacnn-serve-") as tmp:
            up = _save_uploads([file], Path(tmp), max_file_bytes, max_pixels)[0]
            if up.path is None:
                raise UploadError(up.status, up.error, [up.as_error()])
            try:
                with models.lock:
                    hm = heat_map(plain, models.card, up.path, method=HEAT_MAP_METHOD,
                                  target=target or None, classifier=models.classifier)
            except (UnreadableImage, ImageDecodeError) as exc:
                reason = exc.reason if isinstance(exc, UnreadableImage) else str(exc)
                up.refuse(422, f"{up.name}: {reason}")
                raise UploadError(422, up.error, [up.as_error()]) from None
        # The overlay alone: the page writes its own caption (class, probability, method,
        # scale), where the PNG's caption, halved with the pair, was cut mid-word.
        return Response(png_bytes(hm.overlay()), media_type="image/png",
                        headers={"X-Class": hm.code, "X-Probability": f"{hm.probability:.4f}",
                                 "X-Map-Note": hm.note,
                                 "X-Method": HEAT_MAP_METHOD,
                                 "X-Precision": models.numerics.precision,
                                 "X-Backend": models.numerics.backend,
                                 "X-Device": models.numerics.device})

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # Browsers ask for /favicon.ico on every load whatever the page links.
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
