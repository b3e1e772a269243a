"""Integrations: profile the training loop a user already runs.

``hf`` — ``LoraProfilerCallback`` for Hugging Face's ``transformers.Trainer`` (TRL's trainers are
Trainers). It times the loop's own steps, profiles a few with the same scopes and hooks as
``python -m lora_profiler.trace``, replays the same batches as the frozen floor (and, on request,
as full fine-tuning on a copy), restores everything it touched, and writes the same run folder
(docs/FORMAT.md) with the Trainer's own costs in ``facts["trainer"]``.

Modules: ``state`` (snapshot and exact restore of what a replay could change), ``loop`` (the
loop's steps timed by phase from the Trainer's callbacks and thin wrappers), ``replay`` (the
floor and full fine-tuning replays of the loop's batches), ``facts`` (facts.json of a callback
run), ``hf`` (the callback).
"""
