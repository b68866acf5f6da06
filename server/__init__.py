"""The local model behind OpenAI's REST API: chat, files and fine-tuning jobs (``pgpt serve``).

The subset of ``/v1`` that the ``openai`` Python SDK needs to fine-tune and then use a chat
model, with OpenAI's JSON shapes, status codes and error objects, so the ``openai`` backend
(or any OpenAI client) can run against this machine instead of api.openai.com:

- ``GET /v1/models[/{id}]``: the base model (``finetune.base_model``, under its short id,
  e.g. ``smollm2-135m-instruct``), this server's succeeded fine-tunes
  (``ft:<base id>:personal:<suffix>:<8 hex>``) and the fine-tunes ``pgpt finetune`` left in
  ``DATA/models/<id>/`` (under that id).
- ``POST /v1/chat/completions``: greedy at temperature 0 (or absent), sampling above it
  (``top_p``, ``seed``), ``max_tokens`` / ``max_completion_tokens`` (capped by
  ``serve.max_tokens``; absent: the local backend's own budget, 1.5 x the last message's
  tokens + 32, so answers equal ``LocalBackend.complete``'s), ``stop``, ``n`` = 1, ``stream``
  (server-sent events, token by token, ``stream_options.include_usage``), and one extension:
  ``"faithful": true`` decodes under ``backends.local.faithful`` (the answer keeps the last
  user message's words and only adds markup; callers still run ``core.faithful.repair``).
- ``/v1/files`` (upload, list, retrieve, content, delete): bytes under
  ``DATA/server/files/``; a ``fine-tune`` file is checked at upload (``processed``, or
  ``error`` with the line and the reason in ``status_details``).
- ``/v1/fine_tuning/jobs`` (create, list, retrieve, events, checkpoints, cancel): one worker
  thread trains one job at a time, each in a subprocess ``python -m backends.local.train
  DATA/models/<job id>/`` whose JSON event lines become the job's events and checkpoints.
- ``GET /``: the playground, a static page (``server/playground/``) that streams a chat
  completion of pasted plain text and shows the Markdown, its rendering and a diff against
  the input; public (its API calls carry the key).

State (files, jobs, events, checkpoints) is SQLite (WAL) in ``DATA/server/state.sqlite3``: a
restarted server lists everything again and resumes a job that was queued or running (the
trainer continues from its last checkpoint), saying so in the job's events. Models are
loaded through ``LocalBackend.load``; at most ``MAX_LOADED`` stay in memory, and one lock
serialises their use (generation is CPU-bound; it runs off the event loop).

Worked example (``pgpt serve`` runs :func:`serve`; ``--api-key`` or ``PGPT_SERVER_API_KEY``
makes every request need ``Authorization: Bearer <key>``)::

    $ python -m server --data-dir data --port 8000 &
    $ curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' -d '{
        "model": "smollm2-135m-instruct", "max_tokens": 40, "faithful": true,
        "messages": [{"role": "system", "content": "You render plain text into markdown format."},
                     {"role": "user", "content": "Title\\nSome text"}]}'
    {"id": "chatcmpl-...", "object": "chat.completion", "choices": [{"index": 0,
     "message": {"role": "assistant", "content": "# Title\\n\\nSome text"}, ...}], ...}

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
    f = client.files.create(file=open("train.jsonl", "rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=f.id)
    client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model  # once it has succeeded:
    # 'ft:smollm2-135m-instruct:personal:personal:1a2b3c4d' (served by /v1/chat/completions)

"""
