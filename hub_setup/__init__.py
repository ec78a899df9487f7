"""``python -m thinkdiff setup``: fetch the model files the doctor reports missing, on explicit request only.

This is the pack's only code that talks to the network (through ``huggingface_hub``). It lives beside ``thinkdiff/``
rather than in it because the shipped code (``__init__.py``, ``nodes/``, ``thinkdiff/``) must stay free of network calls
for the Comfy Registry's scanner, and because nothing ComfyUI loads may download. The dependency runs one way:
``hub_setup`` imports ``thinkdiff`` (catalogue, doctor, converters); inside ``thinkdiff`` only the command-line entry
(``thinkdiff/__main__.py``) refers to ``hub_setup``, by a deferred import, and the Registry archive leaves it out
(``.comfyignore``), as it does ``training/`` and ``evaluation/``.
"""
