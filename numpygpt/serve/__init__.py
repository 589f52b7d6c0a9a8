"""Serving a model over HTTP in OpenAI's shapes (`numpygpt serve`).

    text.py         a completion's text as tokens arrive, cut at stop sequences
    scheduler.py    continuous batching: requests join and leave the batch between steps
    protocol.py     the request and response bodies of OpenAI's completions API
    app.py          the FastAPI application: routes, authentication, errors in OpenAI's shape
    playground.html a page to try the model in a browser

The command line is numpygpt.commands.serve. Only app.py needs FastAPI and uvicorn (`pip
install .[serve]`); the scheduler and everything it uses (numpygpt.inference) are plain
NumPy, testable without them.
"""
