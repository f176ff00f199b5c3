"""Serving a finished run (jobs/serve.py): Ray Serve + FastAPI over the run's exports.

artefacts (what a run exported, refusals, the models that score), catalogue (ids, titles,
users' rated items), topk (exact blocked search, the faiss HNSW index, the rule for k), app
(the HTTP API and the page in static/), launch (start, serve until stopped). The top-k and
fold-in logic is distrec/recommend.py's, shared with the one-shot jobs/recommend.py.
"""
