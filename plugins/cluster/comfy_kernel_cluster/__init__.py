"""The ``cluster`` plugin: front-ends and workers in separate processes, joined by NATS JetStream.

``serve --role api --nats URL`` runs the HTTP/WebSocket front-end with no
workers (:mod:`.frontend`); ``comfy-kernel worker --nats URL`` runs the
workers of one machine with no HTTP (:mod:`.worker`). Prompts travel on a
JetStream work-queue stream, events and previews on plain NATS subjects
(:mod:`.subjects`); queue rows and history stay in the kernel's SQLite file,
which every process of the cluster opens (:mod:`.claims` adds the lease
that lets a second worker take over a prompt whose worker died).
"""
