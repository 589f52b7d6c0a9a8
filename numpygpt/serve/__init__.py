"""Serving a model over HTTP in OpenAI's shapes (`python -m numpygpt serve`).

    slots.py        a KV cache of independent sequences, stepped together
    text.py         a completion's text as tokens arrive, cut at stop sequences
    scheduler.py    continuous batching: requests join and leave the batch between steps
    protocol.py     the request and response bodies of OpenAI's completions API
    app.py          the FastAPI application: routes, authentication, errors in OpenAI's shape
    cli.py          the command line: load a checkpoint, bind the port, run uvicorn
    playground.html a page to try the model in a browser

Only app.py and cli.py need FastAPI and uvicorn (`pip install .[serve]`); the scheduler and
everything it uses are plain NumPy, testable without them.
"""
