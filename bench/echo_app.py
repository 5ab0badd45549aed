"""The bare baseline for throughput: a Flask app that only parses the JSON body and echoes it.

Served by the same gunicorn settings as the API (`gunicorn -c service/gunicorn.conf.py
bench.echo_app:app`), so requests per second compare the service's work with none at all.
orjson on both sides, like the service, so JSON speed is not what differs."""
import orjson
from flask import Flask, Response, request

app = Flask(__name__)


@app.post("/v1/gradients")
def echo():
    return Response(orjson.dumps(orjson.loads(request.get_data())), mimetype="application/json")


@app.get("/healthz")
def healthz():
    return {"status": "ok"}
