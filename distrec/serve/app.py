"""The HTTP API: a FastAPI app behind Ray Serve's ingress, one ``Recommender`` per replica.

    GET  /                          the page (static/index.html): users, liked items, similar items
    GET  /healthz                   {"status": "ok", model, index, users, items, fold_in, ...}
    GET  /recommend/{user}?k=10&exclude_seen=true
                                    {"user", "rated": [...], "recommended": [...]}
    POST /recommend?k=10            {"items": [ids], "ratings": [numbers] (optional)} → a new
                                    user folded in: {"items": [...], "recommended": [...]}
    GET  /similar/{item}?k=10       {"item", "similar": [...]}

Items carry ``item`` (the raw id), ``title``, ``year``, ``genres`` and ``score`` (or ``rating``,
``similarity``). Errors are JSON ``{"detail": ...}``: an unknown user or item is 404 naming the
id, a bad ``k`` or body 422, a feature the model lacks (fold-in for two-tower) 501.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations as objects in
# the replica, where the string "NewUser" would not resolve and the body would become a query.
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict
from ray import serve

from distrec.errors import UserError
from distrec.recommend import Index, load_recommender
from distrec.serve.artefacts import RunSpec
from distrec.serve.errors import http_status

__all__ = ["api", "RecommendationService", "PAGE"]

PAGE = Path(__file__).with_name("static") / "index.html"

api = FastAPI(title="distrec recommendations", description=__doc__)


class NewUser(BaseModel):
    """A user not seen in training: the items they liked, and optionally their ratings."""

    model_config = ConfigDict(extra="forbid")
    items: list[int | str]
    ratings: list[float] | None = None


async def _user_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, UserError)
    return JSONResponse({"detail": str(error)}, status_code=http_status(error))


api.add_exception_handler(UserError, _user_error)


@serve.deployment
@serve.ingress(api)
class RecommendationService:
    """Loads the run's exports once (``spec`` from ``inspect_run`` on the driver) and answers."""

    def __init__(self, spec: RunSpec, index: Index) -> None:
        self.rec = load_recommender(spec.run, index=index, spec=spec)
        self.page = PAGE.read_text()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page(self) -> str:
        return self.page

    @api.get("/healthz")
    def healthz(self) -> dict[str, Any]:
        return {"status": "ok", **self.rec.info()}

    @api.get("/recommend/{user}")
    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> dict[str, Any]:
        rated, recommended = self.rec.for_user(user, k, exclude_seen=exclude_seen)
        return {"user": user, "rated": rated, "recommended": recommended}

    @api.post("/recommend")
    def recommend_new(self, body: NewUser, k: int = 10) -> dict[str, Any]:
        given, recommended = self.rec.for_items(body.items, body.ratings, k)
        return {"items": given, "recommended": recommended}

    @api.get("/similar/{item}")
    def similar(self, item: str, k: int = 10) -> dict[str, Any]:
        return {"item": item, "similar": self.rec.similar_items(item, k)}
